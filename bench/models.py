"""The models benchmarked: the bundled default and an untrained FCN-8s on VGG16.

Both are exported by the project's own ``model.export.export`` (SavedModel +
card), and both also exist as ``.keras`` files for the modes that need Keras
(the per-image loop and Beam's stock ``TFModelHandlerNumpy``). The default's
``.keras`` is rebuilt from the SavedModel's variables (matched by layer
path) because the training checkpoint is not part of the repository; its
masks are checked against the SavedModel's. Weights do not matter for speed.
"""

import json
import os

import numpy as np

DEFAULT_MODEL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "model", "default")


def read_card(model_dir):
  with open(os.path.join(model_dir, "card.json")) as handle:
    return json.load(handle)


def card_network(card):
  """The card's architecture as an untrained Keras network (needs Keras only, any backend)."""
  from model.network.fcn import build_fcn

  arch, spec = card["architecture"], card["input"]
  return build_fcn(
    len(card["classes"]),
    variant=arch["variant"],
    encoder=arch["encoder"],
    channels=spec["channels"],
    normalization=spec["normalization"],
  )


def network_from_saved_model(model_dir):
  """(Keras network carrying an exported model's weights, matched by layer path; the loaded SavedModel)."""
  import tensorflow as tf

  loaded = tf.saved_model.load(os.path.join(model_dir, "saved_model"))
  saved = {v.name.split(":")[0]: v for v in loaded.signatures["serving_default"].variables}
  network = card_network(read_card(model_dir))
  missing = [weight.path for weight in network.weights if weight.path not in saved]
  if missing:
    raise RuntimeError(
      f"the SavedModel in {model_dir} lacks {len(missing)} of the network's weights, e.g. {missing[0]}"
    )
  for weight in network.weights:
    weight.assign(saved[weight.path].numpy())
  return network, loaded


def _fingerprint(model_dir):
  """Changes whenever the exported model is re-exported (its weights file and card)."""
  parts = []
  for name in ("saved_model/variables/variables.data-00000-of-00001", "saved_model/saved_model.pb", "card.json"):
    stat = os.stat(os.path.join(model_dir, name))
    parts.append(f"{name}:{stat.st_size}:{stat.st_mtime_ns}")
  return "|".join(parts)


def default_keras(out_path: str, model_dir: str = DEFAULT_MODEL) -> str:
  """``.keras`` copy of an exported compact FCN, weights taken from its SavedModel (cached per export)."""
  stamp = out_path + ".source"
  if os.path.exists(out_path) and os.path.exists(stamp):
    with open(stamp) as handle:
      if handle.read() == _fingerprint(model_dir):
        return out_path
  model, loaded = network_from_saved_model(model_dir)
  probe = np.random.default_rng(0).integers(0, 256, (1, 96, 128, 3), dtype=np.uint8)
  expected = loaded.segment(probe)["class_ids"].numpy()
  got = np.argmax(model(probe.astype(np.float32), training=False).numpy(), axis=-1)
  agreement = float(np.mean(expected == got))
  if agreement < 0.999:
    raise RuntimeError(f"rebuilt .keras model agrees with the SavedModel on only {agreement:.4f} of pixels")
  os.makedirs(os.path.dirname(out_path), exist_ok=True)
  model.save(out_path)
  with open(stamp, "w") as handle:
    handle.write(_fingerprint(model_dir))
  return out_path


def vgg16_models(folder: str, num_classes: int = 5):
  """(exported model dir, .keras path) of an untrained FCN-8s/VGG16, through ``model.export``."""
  keras_path = os.path.join(folder, "fcn8s_vgg16.keras")
  model_dir = os.path.join(folder, "fcn8s_vgg16")
  if os.path.exists(os.path.join(model_dir, "card.json")) and os.path.exists(keras_path):
    return model_dir, keras_path
  from model.artifact.export import export
  from model.network.fcn import build_fcn

  os.makedirs(folder, exist_ok=True)
  model = build_fcn(num_classes, variant="fcn8s", encoder="vgg16")
  model.save(keras_path)
  run_json = os.path.join(folder, "vgg16_run.json")
  with open(run_json, "w") as handle:
    json.dump(
      {
        "settings": {"variant": "fcn8s", "encoder": "vgg16"},
        "dataset": {"name": "untrained"},
        "classes": [{"id": i, "name": f"class_{i}"} for i in range(num_classes)],
      },
      handle,
    )
  export(keras_path, model_dir, name="bench-fcn8s-vgg16", version="0.0.0", run_json=run_json)
  return model_dir, keras_path
