"""bench.tta_flips: every flipped view is flipped back before the softmax average, so the average is aligned."""

import numpy as np
import tensorflow as tf

from bench.tta_flips import _flips, _unflip


def test_each_view_flips_back_onto_the_original_pixels():
  images = tf.constant(np.random.default_rng(0).random((2, 5, 7, 3)), tf.float32)
  views = _flips(images)
  assert len(views) == 4
  assert len({views[index].numpy().tobytes() for index in range(4)}) == 4  # four different views
  for index, view in enumerate(views):
    np.testing.assert_array_equal(_unflip(index, view).numpy(), images.numpy())
  np.testing.assert_array_equal(views[1].numpy(), images.numpy()[:, :, ::-1])
  np.testing.assert_array_equal(views[3].numpy(), images.numpy()[:, ::-1, ::-1])
