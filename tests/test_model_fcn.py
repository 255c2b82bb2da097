"""FCN variants and the full deconvolution decoder: any input size, learning on generated data, .keras round trip."""

import keras
import numpy as np
import pytest

from model.data.make_dataset import generate_example
from model.network.cost import macs_per_pixel
from model.network.fcn import UPSAMPLING, VARIANTS, build_fcn
from model.network.layers import BilinearDeconv2D

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
@pytest.mark.parametrize("variant", ["fcn8s", "fcn2s", "deconvnet"])
def test_keras_applications_encoders_build_without_downloads(encoder, variant):
  model = build_fcn(4, variant=variant, encoder=encoder)
  assert model(ODD_IMAGES[:1]).shape == (1, 37, 53, 4)


@pytest.mark.parametrize(
  "variant, fused, last",
  [("fcn8s", [16, 8], 8), ("fcn4s", [16, 8, 4], 4), ("fcn2s", [16, 8, 4, 2], 2)],
)
def test_finer_fcns_fuse_one_more_stride_each_and_keep_fcn8s_layer_names(variant, fused, last):
  """The finer variants extend the same chain, so FCN-8s models trained before them still load."""
  model = build_fcn(4, variant=variant, width=8)
  names = {layer.name for layer in model.layers}
  assert {f"fuse{stride}" for stride in fused} <= names and f"fuse{last // 2}" not in names
  assert f"upsample{last}" in names and model.get_layer(f"upsample{last}").factor == last
  # zero-initialised skip scores: the finer stages start as an exact 2x bilinear step of the coarser score
  for stride in fused:
    assert not np.any(model.get_layer(f"score{stride}").get_weights()[0])


def test_the_deconvolution_decoder_upsamples_by_bilinear_deconvolutions_to_full_resolution():
  model = build_fcn(4, variant="deconvnet", width=8)
  steps = [model.get_layer(f"decoder{stride}_upsample") for stride in (16, 8, 4, 2, 1)]
  assert all(isinstance(layer, BilinearDeconv2D) and layer.factor == 2 for layer in steps)
  assert all(layer.initialization == "bilinear" and layer.trainable for layer in steps)
  # the stride-1 step fuses the (normalised) image itself: edges at full resolution
  assert model.get_layer("decoder1_skip").input.shape[-1] == 3
  kernel = steps[0].get_weights()[0]
  assert kernel.shape == (4, 4, 8, 8) and np.allclose(kernel[:, :, 0, 1], 0) and kernel[:, :, 0, 0].max() > 0


def test_multiply_accumulates_per_pixel_rank_the_decoders():
  cost = {variant: macs_per_pixel(build_fcn(4, variant=variant), size=256) for variant in VARIANTS}
  assert cost["fcn8s"] < cost["fcn4s"] < cost["fcn2s"] < cost["deconvnet"] < 1.35 * cost["fcn8s"]


def test_multiply_accumulates_per_pixel_count_convolutions_and_deconvolutions():
  images = keras.Input((None, None, 3))
  features = keras.layers.Conv2D(4, 3, padding="same")(images)  # 3*3*3*4 = 108 per pixel
  outputs = BilinearDeconv2D(2)(keras.layers.Conv2D(4, 1, strides=2)(features))  # 4*4 / 4 = 4; 4*4*4*4 / 4 = 64
  assert macs_per_pixel(keras.Model(images, outputs), size=64) == 108 + 4 + 64


def test_invalid_choices_raise_value_error():
  with pytest.raises(ValueError):
    build_fcn(5, variant="fcn1s")
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


@pytest.mark.slow
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
