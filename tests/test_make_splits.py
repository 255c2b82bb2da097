"""model.make_splits: region blocks are disjoint, cover the scene, are deterministic, and keep bit depth and bands."""

import json
import os

import numpy as np
import pytest
import tifffile
from PIL import Image

from model.data.check_data import check_dataset
from model.data.classes import classes_from_names, write_classes_file
from model.data.image_io import read_image, read_mask
from model.data.make_splits import assign_blocks, block_edges, main


def write_scene(folder, name, image, mask, classes="background,cell"):
  os.makedirs(folder / "images", exist_ok=True)
  os.makedirs(folder / "masks", exist_ok=True)
  if image.dtype == np.uint16 or image.shape[2] not in (1, 3):
    data, planar = (image[:, :, 0], None) if image.shape[2] == 1 else (image, "contig")
    tifffile.imwrite(folder / "images" / f"{name}.tif", data, photometric="minisblack", planarconfig=planar)
  else:
    Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image).save(folder / "images" / f"{name}.png")
  Image.fromarray(mask).save(folder / "masks" / f"{name}.png")
  write_classes_file(str(folder), classes_from_names(classes))


def scene_arrays(height, width, channels, dtype, seed=0):
  rng = np.random.default_rng(seed)
  image = rng.integers(0, np.iinfo(dtype).max, (height, width, channels)).astype(dtype)
  mask = (rng.random((height, width)) > 0.5).astype(np.uint8)
  return image, mask


def run(*argv):
  assert main([str(arg) for arg in argv]) == 0


def reassemble(out, record, scene_index=0):
  """Put every written block back at its recorded box; returns (image, mask, coverage count)."""
  scene = record["scenes"][scene_index]
  image = np.zeros((scene["height"], scene["width"], scene["channels"]), scene["dtype"])
  mask = np.zeros((scene["height"], scene["width"]), np.uint8)
  coverage = np.zeros((scene["height"], scene["width"]), np.int32)
  for block in scene["blocks"]:
    y0, x0, y1, x1 = block["box"]
    image[y0:y1, x0:x1] = read_image(str(out / block["image"]))
    mask[y0:y1, x0:x1] = read_mask(str(out / block["mask"]))
    coverage[y0:y1, x0:x1] += 1
    assert block["image"].startswith(f"{block['split']}/images/{scene['name']}_r{block['row']}_c{block['col']}.")
  return image, mask, coverage


@pytest.mark.parametrize(
  "channels, dtype, extension",
  [(4, np.uint16, ".tif"), (1, np.uint16, ".tif"), (3, np.uint8, ".png"), (1, np.uint8, ".png")],
  ids=["4band-uint16", "grey-uint16", "rgb-uint8", "grey-uint8"],
)
def test_blocks_cover_the_scene_once_and_keep_depth_and_bands(tmp_path, channels, dtype, extension):
  image, mask = scene_arrays(50, 37, channels, dtype)
  write_scene(tmp_path / "scenes", "field", image, mask)
  out = tmp_path / "out"

  run(
    "--scenes", tmp_path / "scenes", "--regions", "3x4", "--val", "0.2", "--test", "0.25", "--seed", "3", "--out", out
  )

  record = json.loads((out / "splits.json").read_text())
  rebuilt_image, rebuilt_mask, coverage = reassemble(out, record)
  assert (coverage == 1).all()
  np.testing.assert_array_equal(rebuilt_image, image)
  np.testing.assert_array_equal(rebuilt_mask, mask)
  blocks = record["scenes"][0]["blocks"]
  assert {os.path.splitext(b["image"])[1] for b in blocks} == {extension}
  assert record["blocks"] == {"train": 7, "val": 2, "test": 3}  # of 12 blocks: round(12 * 0.2), 12 * 0.25
  assert sorted((b["row"], b["col"]) for b in blocks) == [(r, c) for r in range(3) for c in range(4)]
  report = check_dataset(str(out), None)
  assert (report["channels"], report["dtype"]) == (channels, np.dtype(dtype).name)
  assert sum(sum(s["class_pixels"]) for s in report["splits"].values()) == 50 * 37
  assert json.loads((out / "classes.json").read_text())[1]["name"] == "cell"


def test_assignment_is_deterministic_per_seed_and_scene():
  first = assign_blocks(4, 4, 0.125, 0.25, seed=0, scene_name="nuclei")
  assert first == assign_blocks(4, 4, 0.125, 0.25, seed=0, scene_name="nuclei")
  assert first != assign_blocks(4, 4, 0.125, 0.25, seed=1, scene_name="nuclei")
  assert sorted(first.values()).count("test") == 4 and sorted(first.values()).count("val") == 2
  # Tiny fractions still give every requested split a block; a zero fraction gives none.
  tiny = list(assign_blocks(2, 2, 0.01, 0.01, seed=0, scene_name="s").values())
  assert sorted(tiny) == ["test", "train", "train", "val"]
  assert "val" not in assign_blocks(2, 2, 0.0, 0.3, seed=0, scene_name="s").values()


def test_block_edges_are_disjoint_and_cover():
  for size, count in [(512, 4), (50, 3), (7, 7), (10, 3)]:
    edges = block_edges(size, count)
    assert edges[0] == 0 and edges[-1] == size and all(b > a for a, b in zip(edges, edges[1:]))
    assert max(np.diff(edges)) - min(np.diff(edges)) <= 1


def test_image_mask_pairs_with_classes_flag_and_reruns(tmp_path, capsys):
  image_a, mask_a = scene_arrays(20, 24, 1, np.uint8, seed=1)
  image_b, mask_b = scene_arrays(16, 16, 1, np.uint8, seed=2)
  Image.fromarray(image_a[:, :, 0]).save(tmp_path / "a.png")
  Image.fromarray(mask_a).save(tmp_path / "a_mask.png")
  Image.fromarray(image_b[:, :, 0]).save(tmp_path / "b.jpg", quality=100)
  Image.fromarray(mask_b).save(tmp_path / "b_mask.png")
  out = tmp_path / "out"
  argv = [
    "--image",
    tmp_path / "a.png",
    "--mask",
    tmp_path / "a_mask.png",
    "--image",
    tmp_path / "b.jpg",
    "--mask",
    tmp_path / "b_mask.png",
    "--classes",
    "background,cell",
    "--regions",
    "2x2",
    "--val",
    "0.25",
    "--test",
    "0.25",
    "--seed",
    "0",
    "--out",
    out,
  ]

  run(*argv)
  first = (out / "splits.json").read_text()
  record = json.loads(first)
  assert [scene["name"] for scene in record["scenes"]] == ["a", "b"]
  assert record["blocks"] == {"train": 4, "val": 2, "test": 2}
  assert {os.path.splitext(b["image"])[1] for s in record["scenes"] for b in s["blocks"]} == {".png"}

  assert main([str(arg) for arg in argv]) == 1
  assert "already holds" in capsys.readouterr().err
  run(*argv, "--overwrite")
  assert (out / "splits.json").read_text() == first


def test_clear_errors(tmp_path, capsys):
  image, mask = scene_arrays(20, 24, 1, np.uint8)
  write_scene(tmp_path / "scenes", "s", image, mask[:, :20])
  assert main(["--scenes", str(tmp_path / "scenes"), "--regions", "2x2", "--out", str(tmp_path / "o")]) == 1
  assert "s.png is 20x20 but" in capsys.readouterr().err and not (tmp_path / "o").exists()

  write_scene(tmp_path / "scenes", "s", image, mask)
  assert (
    main(
      [
        "--scenes",
        str(tmp_path / "scenes"),
        "--regions",
        "2x1",
        "--val",
        "0.5",
        "--test",
        "0.5",
        "--out",
        str(tmp_path / "o"),
      ]
    )
    == 1
  )
  assert "cannot hold 1 val + 1 test blocks" in capsys.readouterr().err

  bad = mask.copy()
  bad[0, 0] = 5
  write_scene(tmp_path / "scenes", "s", image, bad)
  assert main(["--scenes", str(tmp_path / "scenes"), "--regions", "2x2", "--out", str(tmp_path / "o")]) == 1
  assert "masks/s.png has class ids [5], but the class list has 0..1" in capsys.readouterr().err
