"""FCN variants: any input size, learning on generated data, .keras round trip."""

import keras
import numpy as np
import pytest

from model.fcn import UPSAMPLING, VARIANTS, build_fcn
from model.make_dataset import generate_example

ODD_IMAGES = np.random.default_rng(0).uniform(0, 255, size=(2, 37, 53, 3)).astype(np.float32)


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_returns_full_resolution_for_odd_sizes(variant):
  model = build_fcn(5, variant=variant, width=8)
  assert model(ODD_IMAGES).shape == (2, 37, 53, 5)


@pytest.mark.parametrize("upsampling", UPSAMPLING)
def test_every_upsampling_choice_builds(upsampling):
  model = build_fcn(3, variant="fcn8s", upsampling=upsampling, width=8)
  assert model(ODD_IMAGES[:1]).shape == (1, 37, 53, 3)
  deconvolutions = [layer for layer in model.layers if layer.name.startswith("upsample")]
  assert len(deconvolutions) == 3
  frozen = all(not layer.trainable_weights for layer in deconvolutions)
  assert frozen == (upsampling in ("bilinear_frozen", "resize"))


@pytest.mark.parametrize("encoder", ["mobilenetv2", "vgg16"])
def test_keras_applications_encoders_build_without_downloads(encoder):
  model = build_fcn(4, variant="fcn8s", encoder=encoder)
  assert model(ODD_IMAGES[:1]).shape == (1, 37, 53, 4)


def test_invalid_choices_raise_value_error():
  with pytest.raises(ValueError):
    build_fcn(5, variant="fcn4s")
  with pytest.raises(ValueError):
    build_fcn(5, upsampling="nearest")
  with pytest.raises(ValueError):
    build_fcn(5, encoder="resnet")


def _generated_batch(count=8, size=64):
  rng = np.random.default_rng(3)
  pairs = [generate_example(rng, size) for _ in range(count)]
  return np.stack([image for image, _ in pairs]).astype(np.float32), np.stack([mask for _, mask in pairs]).astype(
    np.int32
  )


def test_a_few_training_steps_lower_the_loss():
  keras.utils.set_random_seed(0)
  images, masks = _generated_batch()
  model = build_fcn(5, variant="fcn8s", width=8)
  model.compile(
    optimizer=keras.optimizers.Adam(3e-3),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255),
  )
  losses = [float(model.train_on_batch(images, masks)) for _ in range(12)]
  assert min(losses[-3:]) < losses[0] * 0.8


def test_saved_and_reloaded_model_predicts_identically(tmp_path):
  model = build_fcn(5, variant="fcn16s", upsampling="bilinear_frozen", width=8)
  path = str(tmp_path / "model.keras")
  model.save(path)
  reloaded = keras.models.load_model(path)
  np.testing.assert_array_equal(model.predict(ODD_IMAGES, verbose=0), reloaded.predict(ODD_IMAGES, verbose=0))
  assert [layer.trainable for layer in reloaded.layers] == [layer.trainable for layer in model.layers]
