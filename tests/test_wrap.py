"""model.wrap: users' own trained Keras models served through the project's contract.

Each model is built and trained a few steps here on synthetic colour-rule
data, saved as .keras, wrapped, and checked against predictions computed
independently in the test (padding and normalisation in numpy, bilinear
upsampling by model.wrap.onnx_probe's numpy twin of the served graph). The U-Net also goes through the pipeline, one image of it tiled.
"""

import hashlib
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from pipeline_helpers import read_mask, read_outputs, run_pipeline, scene

from model.data import classes as classes_module
from model.tiling import owned_crop, plan_tiles
from model.wrap import cli as wrap_module
from model.wrap.cli import WrapError, WrapSettings
from model.wrap.onnx_probe import bilinear
from pipeline.errors import OptionsError
from pipeline.model_check import check_model, load_card

SCALE = 1 / 255
SCALED = {"scale": SCALE, "offset": 0.0}  # the normalisation the test models expect: x/255
CLASSES = [{"id": 0, "name": "red"}, {"id": 1, "name": "green"}, {"id": 2, "name": "blue"}]


def _colour_data(count=12, size=32, seed=0):
  """Scenes with the colour-rule label (which of R, G, B is largest), normalised x/255."""
  images = np.stack([scene(size, size, seed=seed + i) for i in range(count)])
  return images.astype(np.float32) * np.float32(SCALE), images.argmax(-1)


def _train(model, labels_fn, steps=8, loss="sparse_categorical_crossentropy", size=32):
  """A few optimiser steps, so weights are not the initialisation (test models, not good ones)."""
  images, labels = _colour_data(size=size)
  model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss)
  model.fit(images, labels_fn(labels), batch_size=4, epochs=steps // 3 + 1, verbose=0)
  return model


def _write_classes(path, entries):
  path.write_text(json.dumps(entries))
  return str(path)


def _block(inputs, filters):
  return keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(inputs)


def _unet():
  """Three 2x poolings (input sizes must be multiples of 8), Conv2DTranspose up, skip connections, logits."""
  images = keras.Input((None, None, 3))
  c1 = _block(images, 8)
  c2 = _block(keras.layers.MaxPooling2D()(c1), 12)
  c3 = _block(keras.layers.MaxPooling2D()(c2), 16)
  bottom = _block(keras.layers.MaxPooling2D()(c3), 16)
  up = keras.layers.Concatenate()([keras.layers.Conv2DTranspose(16, 2, strides=2)(bottom), c3])
  up = keras.layers.Concatenate()([keras.layers.Conv2DTranspose(12, 2, strides=2)(_block(up, 16)), c2])
  up = keras.layers.Concatenate()([keras.layers.Conv2DTranspose(8, 2, strides=2)(_block(up, 12)), c1])
  logits = keras.layers.Conv2D(3, 1)(_block(up, 8))
  model = keras.Model(images, logits, name="tiny_unet")
  return _train(model, lambda y: y, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))


def _stride4():
  """Two stride-2 convolutions and a softmax head: the output is 1/4 of the input size."""
  images = keras.Input((None, None, 3))
  features = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(images)
  features = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(features)
  model = keras.Model(images, keras.layers.Conv2D(3, 1, activation="softmax")(features), name="stride4")
  return _train(model, lambda y: y[:, 1::4, 1::4])


def _sigmoid():
  """One sigmoid channel: 'is red the largest colour'."""
  images = keras.Input((None, None, 3))
  features = _block(images, 8)
  model = keras.Model(
    images, keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(features), name="red_or_not"
  )
  return _train(model, lambda y: (y == 0).astype(np.float32)[..., None], loss="binary_crossentropy")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  """{name: .keras path} for the trained test models, plus the classes files."""
  root = tmp_path_factory.mktemp("keras_models")
  paths = {}
  for name, build in (("unet", _unet), ("stride4", _stride4), ("sigmoid", _sigmoid)):
    paths[name] = str(root / f"{name}.keras")
    build().save(paths[name])
  paths["classes3"] = _write_classes(root / "classes3.json", CLASSES)
  paths["classes2"] = _write_classes(root / "classes2.json", [{"id": 0, "name": "other"}, {"id": 1, "name": "red"}])
  return paths


@pytest.fixture(scope="module")
def wrapped_unet(saved, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("wrapped") / "unet")
  wrap_module.main(
    [
      "--keras",
      saved["unet"],
      "--classes",
      saved["classes3"],
      "--out",
      out,
      "--input_scale",
      str(SCALE),
      "--name",
      "their-unet",
      "--version",
      "2.1.0",
    ]
  )
  return out


def _softmax(logits):
  exp = np.exp(logits - logits.max(-1, keepdims=True))
  return exp / exp.sum(-1, keepdims=True)


def _predict_whole(model, image, multiple):
  """The user's model on the whole image, padded (mirrored, bottom/right) to the multiple and cropped back."""
  height, width = image.shape[:2]
  padded = np.pad(image, [(0, -height % multiple), (0, -width % multiple), (0, 0)], mode="symmetric")
  scores = model.predict(padded[None].astype(np.float32) * np.float32(SCALE), verbose=0)[0]
  return scores[:height, :width]


@pytest.mark.slow
def test_card_describes_the_wrapped_model(saved, wrapped_unet):
  card = load_card(wrapped_unet)
  assert card["format"] == "deconvseg-model/1" and card["name"] == "their-unet" and card["version"] == "2.1.0"
  assert card["stride"] == 8 and "input_size" not in card
  assert card["input"] == {
    "dtype": "uint8",
    "channels": 3,
    "color": "RGB",
    "normalization": {"scale": SCALE, "offset": 0.0},
  }
  assert [c["name"] for c in card["classes"]] == ["red", "green", "blue"]
  architecture = card["architecture"]
  assert architecture["variant"] == "tiny_unet" and architecture["encoder"] == "wrapped Keras model"
  assert architecture["parameters"] == keras.models.load_model(saved["unet"]).count_params()
  assert (architecture["output"], architecture["output_stride"], architecture["size_multiple"]) == ("logits", 1, 8)
  with open(saved["unet"], "rb") as handle:
    assert card["wrapped_from"]["sha256"] == hashlib.sha256(handle.read()).hexdigest()
  assert card["wrapped_from"]["file"] == "unet.keras"
  assert card["command"].startswith("python -m model.wrap --keras ")
  assert set(card["signatures"]) == {"serving_default", "serving_mixed_float16"}
  check_model(wrapped_unet, card, mixed_precision=False)  # the pipeline's own start-up check
  check_model(wrapped_unet, card, mixed_precision=True)


@pytest.mark.slow
def test_pipeline_segments_with_the_wrapped_unet(saved, wrapped_unet, tmp_path):

  images = {
    "multiple.png": scene(40, 56, seed=1),
    "odd_size.png": scene(37, 51, seed=2),
    "tiled.png": scene(112, 160, seed=3),
  }
  (tmp_path / "in").mkdir()
  for name, pixels in images.items():
    Image.fromarray(pixels).save(tmp_path / "in" / name)
  output = tmp_path / "out"
  run_pipeline(
    tmp_path / "in" / "*.png",
    output,
    wrapped_unet,
    "--runner=FnApiRunner",
    "--tile_size=64",
    "--tile_overlap=16",
    "--whole_image_pixels=4096",
    "--batch_size=4",
  )
  summary, records, failures = read_outputs(str(output))
  assert failures == [] and summary["counts"]["segmented"] == 3
  assert summary["model"]["name"] == "their-unet"
  model = keras.models.load_model(saved["unet"])
  for name, pixels in images.items():
    expected = _predict_whole(model, pixels, 8).argmax(-1)
    mask = read_mask(str(output), name)
    assert mask.shape == pixels.shape[:2]
    if name == "tiled.png":
      # 2x3 tiles on the model's 8-pixel grid: each owned region is exactly the model on its tile...
      specs = plan_tiles(112, 160, 64, 16, 4096)
      assert len(specs) == 6
      stitched = np.full(mask.shape, 255, np.uint8)
      for spec in specs:
        tile = pixels[spec.top : spec.top + spec.height, spec.left : spec.left + spec.width]
        stitched[spec.own_top : spec.own_bottom, spec.own_left : spec.own_right] = owned_crop(
          spec, _predict_whole(model, tile, 8).argmax(-1)
        )
      np.testing.assert_array_equal(mask, stitched)
      # ...and, with 8 px of context past each seam, close to the whole image computed at once.
      print(f"tiled vs whole-image agreement: {(mask == expected).mean():.4f}")
      assert (mask == expected).mean() >= 0.99
    else:
      np.testing.assert_array_equal(mask, expected)


@pytest.mark.slow
def test_coarse_output_is_upsampled_as_logits(saved, tmp_path):
  out = str(tmp_path / "stride4")
  card = wrap_module.wrap(saved["stride4"], saved["classes3"], out, WrapSettings(SCALED, output="softmax"))
  assert (card["stride"], card["architecture"]["output_stride"], card["architecture"]["output"]) == (4, 4, "softmax")
  model = keras.models.load_model(saved["stride4"])
  images = np.stack([scene(44, 52, seed=7), scene(44, 52, seed=8)])
  loaded = tf.saved_model.load(os.path.join(out, "saved_model"))  # kept: its variables die with it
  served = loaded.segment(images)
  probabilities = model.predict(images.astype(np.float32) * np.float32(SCALE), verbose=0)
  logits = bilinear(np.log(np.maximum(probabilities.astype(np.float64), 1e-12)), 4)
  expected = _softmax(logits)
  ordered = np.sort(expected, axis=-1)
  decided = ordered[..., -1] - ordered[..., -2] > 1e-4
  assert decided.mean() > 0.98
  class_ids = served["class_ids"].numpy()
  np.testing.assert_array_equal(class_ids[decided], expected.argmax(-1)[decided])
  np.testing.assert_allclose(served["confidence"].numpy(), expected.max(-1), atol=1e-4)
  # Upsampling the probabilities instead would give another mask: the test tells the two apart.
  nearest = np.repeat(np.repeat(probabilities, 4, axis=1), 4, axis=2).argmax(-1)
  assert (nearest != class_ids).any()
  check_model(out, load_card(out), mixed_precision=False)


@pytest.mark.slow
def test_sigmoid_channel_becomes_two_classes(saved, tmp_path):
  out = str(tmp_path / "sigmoid")
  card = wrap_module.wrap(saved["sigmoid"], saved["classes2"], out, WrapSettings(SCALED))
  assert card["architecture"]["output"] == "sigmoid" and len(card["classes"]) == 2  # detected from the last layer
  model = keras.models.load_model(saved["sigmoid"])
  images = np.stack([scene(30, 45, seed=9)])
  loaded = tf.saved_model.load(os.path.join(out, "saved_model"))  # kept: its variables die with it
  served = loaded.segment(images)
  probability = model.predict(images.astype(np.float32) * np.float32(SCALE), verbose=0)[..., 0]
  decided = np.abs(probability - 0.5) > 1e-5
  class_ids = served["class_ids"].numpy()
  assert 0 < class_ids.mean() < 1, "the trained model should find some red and some not"
  np.testing.assert_array_equal(class_ids[decided], (probability > 0.5)[decided])
  np.testing.assert_allclose(served["confidence"].numpy(), np.maximum(probability, 1 - probability), atol=1e-4)
  check_model(out, load_card(out), mixed_precision=False)


@pytest.mark.slow
def test_fixed_input_size_is_padded_and_larger_images_refused(tmp_path):
  images = keras.Input((48, 48, 3))
  model = keras.Model(images, keras.layers.Conv2D(3, 3, padding="same")(_block(images, 4)), name="fixed48")
  _train(model, lambda y: y, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), size=48)
  path = str(tmp_path / "fixed.keras")
  model.save(path)
  out = str(tmp_path / "fixed")
  card = wrap_module.wrap(path, _write_classes(tmp_path / "c.json", CLASSES), out, WrapSettings(SCALED))
  assert card["input_size"] == [48, 48] and card["stride"] == 1
  loaded = tf.saved_model.load(os.path.join(out, "saved_model"))
  image = scene(40, 45, seed=4)
  padded = np.pad(image, [(0, 8), (0, 3), (0, 0)], mode="symmetric")
  expected = model.predict(padded[None].astype(np.float32) * np.float32(SCALE), verbose=0)[0, :40, :45]
  np.testing.assert_array_equal(loaded.segment(image[None])["class_ids"].numpy()[0], expected.argmax(-1))
  with pytest.raises(tf.errors.InvalidArgumentError, match="--tile_size 48 --whole_image_pixels 0"):
    loaded.segment(scene(50, 40, seed=5)[None])

  # The pipeline reads input_size from the card and tiles every image at 48 by itself.
  os.makedirs(tmp_path / "in")
  Image.fromarray(image).save(tmp_path / "in" / "small.png")
  Image.fromarray(scene(100, 70, seed=6)).save(tmp_path / "in" / "large.png")
  output = str(tmp_path / "out")
  run_pipeline(tmp_path / "in" / "*.png", output, out, "--runner=FnApiRunner")
  summary, records, failures = read_outputs(output)
  assert not failures and summary["counts"]["segmented"] == 2
  assert read_mask(output, "large.png").shape == (100, 70)
  np.testing.assert_array_equal(read_mask(output, "small.png"), expected.argmax(-1))
  with pytest.raises(OptionsError, match="larger than the model's fixed input size 48x48"):
    run_pipeline(tmp_path / "in" / "*.png", output, out, "--tile_size=128")


@pytest.mark.slow
def test_one_logit_channel_and_per_band_normalization_file(saved, tmp_path):
  images = keras.Input((None, None, 3))
  model = keras.Model(images, keras.layers.Conv2D(1, 3, padding="same")(_block(images, 4)), name="one_logit")
  _train(
    model, lambda y: (y == 0).astype(np.float32)[..., None], loss=keras.losses.BinaryCrossentropy(from_logits=True)
  )
  path = str(tmp_path / "one_logit.keras")
  model.save(path)
  mean, std = [120.0, 110.0, 100.0], [60.0, 55.0, 70.0]
  (tmp_path / "card-style.json").write_text(json.dumps({"input": {"normalization": {"mean": mean, "std": std}}}))
  out = str(tmp_path / "one_logit")
  wrap_module.main(
    [
      "--keras",
      path,
      "--classes",
      saved["classes2"],
      "--out",
      out,
      "--normalization",
      str(tmp_path / "card-style.json"),
    ]
  )
  card = load_card(out)
  assert card["architecture"]["output"] == "binary_logit"
  assert card["input"]["normalization"] == {"mean": mean, "std": std}
  image = scene(33, 47, seed=12)
  logit = model.predict(((image - np.array(mean)) / np.array(std))[None].astype(np.float32), verbose=0)[0, ..., 0]
  loaded = tf.saved_model.load(os.path.join(out, "saved_model"))
  class_ids = loaded.segment(image[None])["class_ids"].numpy()[0]
  decided = np.abs(logit) > 1e-4
  np.testing.assert_array_equal(class_ids[decided], (logit > 0)[decided])


CUSTOM_MODULE = '''
import keras


@keras.saving.register_keras_serializable(package="{package}")
class ChannelGain(keras.layers.Layer):
    """A learned per-channel gain: a layer keras cannot load without this module."""

    def build(self, input_shape):
        self.gain = self.add_weight(name="gain", shape=(input_shape[-1],), initializer="ones")

    def call(self, inputs):
        return inputs * self.gain
'''

SERVE = r"""
import sys
import numpy as np
import tensorflow as tf
images = np.load(sys.argv[1])
for directory, expected in zip(sys.argv[2::2], sys.argv[3::2]):
    loaded = tf.saved_model.load(directory + "/saved_model")
    served = loaded.segment(images)["class_ids"].numpy()
    assert (served == np.load(expected)).all(), directory
user = [name for name in sys.modules if name.startswith("wrap_test_layers") or name == "model" or name.startswith("model.")]
assert not user, user
"""


@pytest.mark.slow
def test_custom_layers_and_lambda_layers(tmp_path):
  package = f"wrap_test_layers_{os.getpid()}"
  layers_dir = tmp_path / "user_code"
  layers_dir.mkdir()
  (layers_dir / f"{package}.py").write_text(CUSTOM_MODULE.format(package=package))
  sys.path.insert(0, str(layers_dir))
  try:
    custom = __import__(package)
    images = keras.Input((None, None, 3))
    gained = custom.ChannelGain()(_block(images, 4))
    model = keras.Model(images, keras.layers.Conv2D(3, 1)(gained), name="with_custom_layer")
    _train(model, lambda y: y, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    custom_path = str(tmp_path / "custom.keras")
    model.save(custom_path)
    # As in a fresh process: keras no longer knows the class until the module is imported.
    del keras.saving.get_custom_objects()[f"{package}>ChannelGain"]
    del sys.modules[package]
    classes = _write_classes(tmp_path / "c.json", CLASSES)
    with pytest.raises(WrapError, match="--custom_objects_module"):
      wrap_module.wrap(custom_path, classes, str(tmp_path / "no"), WrapSettings(SCALED))
    wrap_module.wrap(
      custom_path, classes, str(tmp_path / "custom"), WrapSettings(SCALED), custom_objects_module=package
    )
  finally:
    sys.path.remove(str(layers_dir))

  images = keras.Input((None, None, 3))
  doubled = keras.layers.Lambda(lambda t: t * 2.0 - 1.0)(images)
  lambda_model = keras.Model(images, keras.layers.Conv2D(3, 3, padding="same")(doubled), name="with_lambda")
  lambda_path = str(tmp_path / "lambda.keras")
  lambda_model.save(lambda_path)
  with pytest.raises(WrapError, match="--unsafe_deserialization"):
    wrap_module.wrap(lambda_path, classes, str(tmp_path / "refused"), WrapSettings(SCALED))
  assert not os.path.exists(tmp_path / "refused")
  wrap_module.wrap(lambda_path, classes, str(tmp_path / "lambda"), WrapSettings(SCALED), unsafe=True)

  probe = np.stack([scene(24, 40, seed=6)])
  np.save(tmp_path / "probe.npy", probe)
  argv = [str(tmp_path / "probe.npy")]
  for name, keras_model in (("custom", model), ("lambda", lambda_model)):
    expected = keras_model.predict(probe.astype(np.float32) * np.float32(SCALE), verbose=0).argmax(-1)
    np.save(tmp_path / f"{name}.npy", expected.astype(np.uint8))
    argv += [str(tmp_path / name), str(tmp_path / f"{name}.npy")]
  # A process with TensorFlow only: no user module on the path, no project code, no Lambda bytecode.
  subprocess.run(
    [sys.executable, "-c", SERVE, *argv],
    check=True,
    cwd=str(tmp_path),
    timeout=120,
    env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=""),
  )


@pytest.mark.slow
def test_mismatches_are_refused_with_the_reason(saved, tmp_path, capsys):
  images = keras.Input((None, None, 3))
  two = keras.Model(images, keras.layers.Conv2D(2, 1)(images), name="two_channels")
  path = str(tmp_path / "two.keras")
  two.save(path)
  with pytest.raises(SystemExit) as exit_info:
    wrap_module.main(["--keras", path, "--classes", saved["classes3"], "--out", str(tmp_path / "a")])
  assert exit_info.value.code == 2
  message = capsys.readouterr().err.strip()
  assert (
    message
    == "model.wrap: error: the model has 2 output channels but the classes file lists 3 classes; they must match"
  )
  with pytest.raises(WrapError, match="--output sigmoid needs one output channel but the model has 2"):
    wrap_module.wrap(path, saved["classes2"], str(tmp_path / "b"), WrapSettings(output="sigmoid"))
  with pytest.raises(WrapError, match="lists 3; list exactly 2"):
    wrap_module.wrap(saved["sigmoid"], saved["classes3"], str(tmp_path / "c"), WrapSettings())
  with pytest.raises(WrapError, match="declares probabilities .* use --output logits"):
    wrap_module.wrap(saved["unet"], saved["classes3"], str(tmp_path / "d"), WrapSettings(output="softmax"))
  with pytest.raises(WrapError, match="does not run at multiples of --size_multiple 4"):
    wrap_module.wrap(saved["unet"], saved["classes3"], str(tmp_path / "e"), WrapSettings(size_multiple=4))
  assert not any(os.path.exists(tmp_path / name) for name in "abcde")


def test_help_says_what_unsafe_deserialization_means(capsys):
  with pytest.raises(SystemExit):
    wrap_module.parse_args(["--help"])
  text = " ".join(capsys.readouterr().out.split())
  assert "arbitrary Python bytecode that runs when the file is loaded" in text
  assert "only for files you trust" in text


def test_zero_and_fixed_size_padding_layers():
  from model.network.layers import PadToMultiple, PadToSize

  image = np.arange(1, 31, dtype=np.float32).reshape(1, 5, 6, 1)
  zero = keras.ops.convert_to_numpy(PadToMultiple(4, mode="zero")(image))
  assert zero.shape == (1, 8, 8, 1) and (zero[:, :5, :6] == image).all()
  assert not zero[:, 5:].any() and not zero[:, :, 6:].any()
  mirrored = keras.ops.convert_to_numpy(PadToSize(7, 9)(image))
  np.testing.assert_array_equal(mirrored[0, :, :, 0], np.pad(image[0, :, :, 0], [(0, 2), (0, 3)], mode="symmetric"))
  with pytest.raises(ValueError, match="padding mode must be one of"):
    PadToMultiple(4, mode="reflect101")


@pytest.mark.parametrize(
  "flags, message",
  [
    ({"input_dtype": "float32"}, "--input_dtype float32 is not one of ('uint8', 'uint16')"),
    ({"padding": "reflect"}, "--padding reflect is not one of ('symmetric', 'zero')"),
    ({"size_multiple": 0}, "--size_multiple 0 must be a positive integer"),
  ],
)
def test_both_wraps_refuse_the_same_flags_before_reading_anything(tmp_path, flags, message):
  """Either wrap takes its settings as one WrapSettings, which cannot be built with a value neither wrap takes."""
  with pytest.raises(WrapError) as refused:
    WrapSettings(**flags)
  assert str(refused.value) == message


@pytest.mark.parametrize("source", ["--keras", "--onnx"])
def test_the_command_refuses_a_bad_size_multiple_before_reading_anything(tmp_path, capsys, source):
  missing = str(tmp_path / "missing")
  argv = [source, missing, "--classes", missing, "--out", str(tmp_path / "out"), "--size_multiple", "0"]
  with pytest.raises(SystemExit) as stopped:
    wrap_module.main(argv)
  assert stopped.value.code == 2
  assert capsys.readouterr().err == "model.wrap: error: --size_multiple 0 must be a positive integer\n"
  assert not (tmp_path / "out").exists()


def test_a_missing_classes_file_is_one_line_not_a_traceback(saved, tmp_path, capsys):
  missing = str(tmp_path / "classes.json")
  with pytest.raises(SystemExit) as stopped:
    wrap_module.main(["--keras", saved["unet"], "--classes", missing, "--out", str(tmp_path / "out")])
  assert stopped.value.code == 2
  assert capsys.readouterr().err == (
    f"model.wrap: error: cannot read the class list {missing}: No such file or directory; give a classes.json "
    f"like {classes_module.EXAMPLE_CLASSES_JSON}\n"
  )
  assert not (tmp_path / "out").exists()


def test_the_wrap_flags_match_what_each_framework_implements():
  from model.artifact import export
  from model.network import layers
  from model.wrap import common as wrap_common
  from model.wrap.onnx_graph import PIXEL_TYPES

  assert wrap_common.INPUT_DTYPES == export.INPUT_DTYPES == tuple(PIXEL_TYPES)
  assert wrap_common.PAD_MODES == layers.PAD_MODES
