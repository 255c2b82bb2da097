"""Build docs/img/example.png (input | mask | overlay) from a finished run.

./run_pipeline.sh --input 'samples/images/*' --output output --overlays && .venv/bin/python scripts/make_readme_figure.py output farm_0001.png
"""

import sys

from PIL import Image


def main(output_dir, key, destination="docs/img/example.png", height=320):
  source = Image.open(f"samples/images/{key}").convert("RGB")
  mask = Image.open(f"{output_dir}/masks/{key}.png").convert("RGB")
  overlay = Image.open(f"{output_dir}/overlays/{key}.png").convert("RGB")
  panels = [
    panel.resize((height * panel.width // panel.height, height), Image.Resampling.LANCZOS)
    for panel in (source, mask, overlay)
  ]
  gap = 8
  figure = Image.new("RGB", (sum(p.width for p in panels) + gap * 2, height), "white")
  x = 0
  for panel in panels:
    figure.paste(panel, (x, 0))
    x += panel.width + gap
  figure.save(destination, optimize=True)


if __name__ == "__main__":
  main(*sys.argv[1:])
