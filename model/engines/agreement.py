"""How closely an engine and precision reproduce TensorFlow fp32's masks on real images.

Export (``model.export``, ``model.wrap``) and quantisation (``model.quantize``)
record this in the card, so a user sees what bf16 or int8 changes before a
run uses it. The reference is the SavedModel's own ``serving_default`` on
TensorFlow fp32; each image runs whole, at its native size.
"""

from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple

import numpy as np

from model.engines.choice import EngineChoice
from model.engines.engine import Engine, InputShape
from model.metrics import confusion_matrix, segmentation_metrics

REFERENCE = "tensorflow fp32"


def class_id_agreement(
  model_dir: str, images: Iterable[np.ndarray], spec: InputShape, candidates: Sequence[EngineChoice]
) -> Dict[str, Any]:
  """{"reference", "images", "pixels", "agreement": {"openvino bf16": fraction, ...}} over ``images`` ([H, W, C])."""
  from model import engines

  reference = engines.load(model_dir, EngineChoice("tensorflow", "fp32"), spec)
  runs = {choice.describe(): engines.load(model_dir, choice, spec) for choice in candidates}
  result = compare_segmenters(reference, runs, ((image, None) for image in images))
  del result["mean_iou"]
  return result


def compare_segmenters(
  reference: Engine,
  runs: Mapping[str, Engine],
  examples: Iterable[Tuple[np.ndarray, Optional[np.ndarray]]],
  num_classes: Optional[int] = None,
) -> Dict[str, Any]:
  """Each run's class-id agreement with ``reference`` and, where truth masks come along, everyone's mean IoU.

  ``examples`` are (image [H, W, C], truth mask [H, W] or None) pairs; the
  mean IoU (``model.metrics``, accumulated over all images, 255 ignored)
  needs a mask with every image and ``num_classes``, else it is None.
  """
  same = {name: 0 for name in runs}
  confusions: Dict[str, np.ndarray] = {}  # filled in prediction order (the reference, then the runs)
  scored = num_classes is not None
  count, pixels = 0, 0
  for image, mask in examples:
    batch = image[None]
    expected = reference.predict(batch)[0]
    predictions = {REFERENCE: expected}
    for name, segmenter in runs.items():
      predictions[name] = segmenter.predict(batch)[0]
      same[name] += int(np.count_nonzero(predictions[name] == expected))
    scored = scored and mask is not None
    if scored:
      assert mask is not None and num_classes is not None  # scored: both came with every image so far
      for name, ids in predictions.items():
        confusion = confusion_matrix(mask, ids, num_classes)
        previous = confusions.get(name)
        confusions[name] = confusion if previous is None else previous + confusion
    count += 1
    pixels += expected.size
  if not count:
    raise ValueError("no images to measure the agreement on")
  mean_iou: Optional[Dict[str, float]] = None
  if scored:
    mean_iou = {name: round(segmentation_metrics(confusion)["mean_iou"], 6) for name, confusion in confusions.items()}
  return {
    "reference": REFERENCE,
    "images": count,
    "pixels": pixels,
    "agreement": {name: round(value / pixels, 6) for name, value in same.items()},
    "mean_iou": mean_iou,
  }
