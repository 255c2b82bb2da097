"""Build docs/model_examples.png: what a model predicts on scenes it never saw.

    .venv/bin/python scripts/make_model_examples.py [MODEL_DIR] [OUT.png]

Five 160x160 test images of the mosaic generator's seed 3 (never used to
train or report), one column each; rows: input, ground truth, prediction
through the exported ``segment`` function, winning-class confidence
(white = 1, dark = low).
"""

import sys

import numpy as np
from PIL import Image

from model.data.make_dataset import example_rng, generate_example
from model.training.evaluate import load_segmenter

SEED, SIZE, COUNT, GAP = 3, 160, 5, 5


def main(model_dir="model/default", destination="docs/model_examples.png"):
  segment, classes, _, _ = load_segmenter(model_dir)
  palette = np.array([cls.color for cls in classes], np.uint8)
  pairs = [generate_example(example_rng(SEED, "test", index), SIZE) for index in range(COUNT)]
  images = np.stack([image for image, _ in pairs])
  predicted = np.asarray(segment(images))
  figure = Image.new("RGB", (COUNT * SIZE + (COUNT - 1) * GAP, 4 * SIZE), "white")
  for column, ((image, truth), output) in enumerate(zip(pairs, predicted)):
    confidence = np.clip(output[..., 1] * 255, 0, 255).astype(np.uint8)
    rows = (image, palette[truth], palette[output[..., 0].astype(np.int64)], np.repeat(confidence[..., None], 3, -1))
    for row, panel in enumerate(rows):
      figure.paste(Image.fromarray(panel), (column * (SIZE + GAP), row * SIZE))
  figure.save(destination, optimize=True)
  print(f"wrote {destination}")


if __name__ == "__main__":
  main(*sys.argv[1:])
