"""How well the out-of-distribution flag separates the model's kind of data from real photographs.

    python -m bench.ood [--work DIR] [--mosaics 100] [--size 512] [--json]

Builds three input sets under DIR and segments them in one pipeline run with
the bundled model:

* ``mosaics``: fresh texture mosaics from ``model.make_dataset --seed 3``
  (a seed neither training, seed 1, nor the test split, seed 2, used);
* ``samples``: the bundled ``samples/images`` (mosaics in 13 file formats and
  pixel modes, greyscale and 16-bit among them);
* ``photos``: the real photographs that ship inside scikit-image's wheel
  (``PHOTOS``; greyscale ones replicated to RGB as the pipeline does).
  scikit-learn's sample photographs are added when it is installed.

It prints, per set, how many images were flagged and the reasons, plus
precision and recall of "flagged" as a detector of photographs. Nothing is
downloaded; scikit-image's mosaic source textures (brick, grass, gravel) are
left out of ``photos`` because the model was trained on them.
"""

import argparse
import collections
import json
import os
import shutil
import sys
import tempfile

import numpy as np
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(REPO, "samples", "images")
DEFAULT_MODEL = os.path.join(REPO, "model", "default")
# Photographs bundled in scikit-image 0.26's wheel (no pooch download).
PHOTOS = (
  "astronaut",
  "coffee",
  "chelsea",
  "rocket",
  "camera",
  "coins",
  "moon",
  "page",
  "text",
  "hubble_deep_field",
  "retina",
  "cell",
  "clock",
  "logo",
)
SETS = ("mosaics", "samples", "photos")


def photographs():
  """(name, RGB uint8 array) of every bundled photograph; scikit-learn's two when it is installed."""
  import skimage.data

  for name in PHOTOS:
    image = np.asarray(getattr(skimage.data, name)())
    if image.ndim == 2:
      image = np.stack([image] * 3, axis=-1)
    yield name, image[..., :3].astype(np.uint8)
  try:
    from sklearn.datasets import load_sample_images
  except ImportError:
    return
  bunch = load_sample_images()
  for filename, image in zip(bunch.filenames, bunch.images):
    yield os.path.splitext(os.path.basename(filename))[0], np.asarray(image, dtype=np.uint8)


def build_sets(work, mosaics=100, size=512):
  """Writes WORK/inputs/{mosaics,samples,photos}/ and returns the inputs root."""
  from model.data.make_dataset import make_dataset

  root = os.path.join(work, "inputs")
  shutil.rmtree(root, ignore_errors=True)
  generated = os.path.join(work, "mosaic_seed3")
  shutil.rmtree(generated, ignore_errors=True)
  make_dataset(generated, 3, {"train": 0, "val": 0, "test": mosaics}, size)
  shutil.copytree(os.path.join(generated, "test", "images"), os.path.join(root, "mosaics"))
  shutil.copytree(SAMPLES, os.path.join(root, "samples"))
  os.makedirs(os.path.join(root, "photos"))
  for name, image in photographs():
    Image.fromarray(image).save(os.path.join(root, "photos", f"{name}.png"))
  return root


def confusion(records):
  """{set: {"images", "flagged", "reasons": {check: images}}} from stats records keyed <set>/<file>."""
  table = {name: {"images": 0, "flagged": 0, "reasons": collections.Counter(), "flagged_keys": []} for name in SETS}
  for record in records:
    entry = table[record["key"].split("/", 1)[0]]
    entry["images"] += 1
    if record["ood"]["flagged"]:
      entry["flagged"] += 1
      entry["flagged_keys"].append(record["key"])
      entry["reasons"].update({reason.split(":", 1)[0] for reason in record["ood"]["reasons"]})
  photos, in_dist = table["photos"], (table["mosaics"], table["samples"])
  false_positives = sum(entry["flagged"] for entry in in_dist)
  flagged = photos["flagged"] + false_positives
  return {
    "sets": {
      name: dict(entry, reasons=dict(entry["reasons"]), flagged_keys=sorted(entry["flagged_keys"]))
      for name, entry in table.items()
    },
    "precision": photos["flagged"] / flagged if flagged else None,
    "recall": photos["flagged"] / photos["images"] if photos["images"] else None,
  }


def run_pipeline(root, out, model=DEFAULT_MODEL):
  from pipeline.run import run

  run([f"--input={root}/*/*", f"--output={out}", f"--model={model}"]).wait_until_finish()
  with open(os.path.join(out, "summary.json")) as handle:
    summary = json.load(handle)
  records = []
  for path in summary["outputs"]["stats"]:  # the run's own record files
    with open(path) as handle:
      records += [json.loads(line) for line in handle if line.strip()]
  return records, summary


def format_table(result, summary):
  lines = [f"{'set':<10}{'images':>8}{'flagged':>9}  reasons (images per check)"]
  for name, entry in result["sets"].items():
    reasons = ", ".join(f"{check} {count}" for check, count in sorted(entry["reasons"].items())) or "-"
    lines.append(f"{name:<10}{entry['images']:>8}{entry['flagged']:>9}  {reasons}")
  not_flagged = [
    key for key in (f"photos/{n}.png" for n in PHOTOS) if key not in result["sets"]["photos"]["flagged_keys"]
  ]
  lines.append(f"precision {result['precision']:.3f}, recall {result['recall']:.3f} (flagged as a detector of photos)")
  lines.append(f"photos not flagged: {', '.join(not_flagged) or 'none'}")
  wrongly = result["sets"]["mosaics"]["flagged_keys"] + result["sets"]["samples"]["flagged_keys"]
  lines.append(f"in-distribution images flagged: {', '.join(wrongly) or 'none'}")
  rule = summary["ood"]
  lines.append(
    f"rule: min_confidence {rule['min_confidence']}, outside_limit {rule['outside_limit']}, "
    f"band range {rule['band_p01']}..{rule['band_p99']}"
  )
  return "\n".join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--work", default=None, help="working directory (default: a temporary one, removed after)")
  parser.add_argument("--mosaics", type=int, default=100, help="fresh mosaic images (seed 3)")
  parser.add_argument("--size", type=int, default=512, help="mosaic height and width")
  parser.add_argument("--model", default=DEFAULT_MODEL)
  parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
  args = parser.parse_args(argv)
  work = args.work or tempfile.mkdtemp(prefix="deconvseg-ood-")
  try:
    root = build_sets(work, args.mosaics, args.size)
    records, summary = run_pipeline(root, os.path.join(work, "out"), args.model)
    result = confusion(records)
    print(json.dumps(dict(result, rule=summary["ood"])) if args.json else format_table(result, summary))
  finally:
    if args.work is None:
      shutil.rmtree(work, ignore_errors=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
