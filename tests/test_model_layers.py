"""The bilinear deconvolution layer against bilinear resize and the closed-form kernel."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from model.network.layers import (
  BilinearDeconv2D,
  PadToMultiple,
  ResizeUpsample,
  bilinear_kernel,
  deconvolution_kernel_size,
)

FACTORS = (2, 3, 4, 8, 16, 32)


@pytest.mark.parametrize("factor", FACTORS)
@pytest.mark.parametrize("height,width", [(5, 7), (6, 8)])
def test_deconvolution_equals_bilinear_resize_on_interior(factor, height, width):
  inputs = np.random.default_rng(factor).random((2, height, width, 3)).astype(np.float32)
  outputs = BilinearDeconv2D(factor)(inputs).numpy()
  resized = tf.image.resize(inputs, [height * factor, width * factor], method="bilinear").numpy()
  assert outputs.shape == (2, height * factor, width * factor, 3)
  # Zero padding attenuates the outermost `factor` pixels; everything inside must match.
  interior = np.s_[:, factor:-factor, factor:-factor, :]
  np.testing.assert_allclose(outputs[interior], resized[interior], atol=1e-5)


@pytest.mark.parametrize("factor", FACTORS)
def test_kernel_matches_closed_form(factor):
  size = deconvolution_kernel_size(factor)
  assert size == 2 * factor - factor % 2
  half = (size + 1) // 2
  centre = half - 1 if size % 2 == 1 else half - 0.5
  kernel = bilinear_kernel(factor, 2)
  assert kernel.shape == (size, size, 2, 2)
  for row in range(size):
    for column in range(size):
      expected = (1 - abs(row - centre) / half) * (1 - abs(column - centre) / half)
      assert kernel[row, column, 0, 0] == pytest.approx(expected, abs=1e-7)


def test_small_kernels_by_hand():
  np.testing.assert_allclose(bilinear_kernel(2, 1)[0, :, 0, 0], [0.0625, 0.1875, 0.1875, 0.0625], atol=1e-7)
  np.testing.assert_allclose(bilinear_kernel(3, 1)[2, :, 0, 0], [1 / 3, 2 / 3, 1, 2 / 3, 1 / 3], atol=1e-7)


def test_off_diagonal_channels_are_zero():
  kernel = bilinear_kernel(4, 5)
  for out_channel in range(5):
    for in_channel in range(5):
      if out_channel != in_channel:
        assert not kernel[:, :, out_channel, in_channel].any()
      else:
        assert kernel[:, :, out_channel, in_channel].sum() > 0
  layer = BilinearDeconv2D(4)
  layer.build((None, None, None, 5))
  np.testing.assert_array_equal(layer.kernel.numpy(), kernel)


def test_channels_do_not_mix():
  inputs = np.zeros((1, 4, 4, 3), np.float32)
  inputs[..., 1] = 1.0
  outputs = BilinearDeconv2D(2)(inputs).numpy()
  assert not outputs[..., 0].any() and not outputs[..., 2].any()
  assert outputs[..., 1].max() == pytest.approx(1.0)


@pytest.mark.parametrize("factor", (2, 3, 32))
def test_output_is_input_times_factor(factor):
  layer = BilinearDeconv2D(factor)
  assert layer(np.zeros((1, 3, 5, 2), np.float32)).shape == (1, 3 * factor, 5 * factor, 2)
  assert layer.compute_output_shape((None, None, 5, 2)) == (None, None, 5 * factor, 2)
  assert ResizeUpsample(factor)(np.zeros((1, 3, 5, 2), np.float32)).shape == (1, 3 * factor, 5 * factor, 2)


def test_trainable_flag_freezes_and_config_round_trips():
  frozen = BilinearDeconv2D(8, trainable=False, name="up")
  frozen.build((None, None, None, 3))
  assert frozen.trainable_weights == [] and len(frozen.non_trainable_weights) == 1
  restored = BilinearDeconv2D.from_config(frozen.get_config())
  assert not restored.trainable
  assert (restored.factor, restored.initialization, restored.use_bias, restored.name) == (8, "bilinear", False, "up")


def test_random_initialization_is_not_bilinear():
  layer = BilinearDeconv2D(2, initialization="random")
  layer.build((None, None, None, 3))
  assert np.abs(layer.kernel.numpy()[:, :, 0, 1]).sum() > 0


@pytest.mark.parametrize("kwargs", [{"factor": 0}, {"factor": 2, "initialization": "zeros"}])
def test_invalid_arguments_raise_value_error(kwargs):
  with pytest.raises(ValueError):
    BilinearDeconv2D(**kwargs)


def test_pad_to_multiple_mirrors_even_tiny_inputs():
  tiny = np.arange(3, dtype=np.float32).reshape(1, 1, 3, 1)
  padded = PadToMultiple(4)(tiny).numpy()
  assert padded.shape == (1, 4, 4, 1)
  np.testing.assert_array_equal(padded[0, 0, :, 0], [0, 1, 2, 2])
  np.testing.assert_array_equal(padded[0, :, 0, 0], [0, 0, 0, 0])
  wide = np.arange(10, dtype=np.float32).reshape(1, 1, 10, 1)
  np.testing.assert_array_equal(PadToMultiple(32)(wide).numpy()[0, 0, 10:14, 0], [9, 8, 7, 6])
  assert keras.ops.shape(PadToMultiple(32)(np.zeros((1, 32, 33, 1), np.float32))) == (1, 32, 64, 1)
