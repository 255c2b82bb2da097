"""Agreement between two folders of masks (same file names): pixel agreement and mean IoU."""

import os
import tempfile

import numpy as np
from PIL import Image


def compare(reference_dir: str, candidate_dir: str, num_classes: int = 5) -> dict:
  confusion = np.zeros((num_classes, num_classes), np.int64)
  compared = 0
  for name in sorted(os.listdir(reference_dir)):
    if not name.endswith(".png") or not os.path.exists(os.path.join(candidate_dir, name)):
      continue
    reference = np.asarray(Image.open(os.path.join(reference_dir, name)), dtype=np.int64)
    candidate = np.asarray(Image.open(os.path.join(candidate_dir, name)), dtype=np.int64)
    if reference.shape != candidate.shape:
      raise ValueError(f"{name}: shapes {reference.shape} and {candidate.shape} differ")
    confusion += np.bincount(
      reference.ravel() * num_classes + candidate.ravel(), minlength=num_classes * num_classes
    ).reshape(num_classes, num_classes)
    compared += 1
  if not compared:
    return {"images": 0, "pixel_agreement": None, "mean_iou": None}
  intersection = np.diag(confusion).astype(np.float64)
  union = confusion.sum(0) + confusion.sum(1) - intersection
  present = union > 0
  return {
    "images": compared,
    "pixel_agreement": float(intersection.sum() / confusion.sum()),
    "mean_iou": float(np.mean(intersection[present] / union[present])),
  }


def count_masks(folder: str) -> int:
  total = 0
  for _, _, files in os.walk(folder):
    total += sum(1 for name in files if name.endswith(".png"))
  return total


def compare_to_labels(labels_dir: str, masks_dir: str) -> dict:
  """Masks vs the generator's ground truth (labels are saved as <name>, masks as <name>.png)."""
  with tempfile.TemporaryDirectory() as renamed:
    for name in os.listdir(labels_dir):
      os.symlink(os.path.join(labels_dir, name), os.path.join(renamed, name + ".png"))
    return compare(renamed, masks_dir)
