"""The real nuclei scene from the stardist wheel converts, splits by region and passes check_data."""

import hashlib
import importlib.metadata
import json

import numpy as np
import pytest
import tifffile

from model.data import nuclei_data
from model.data.check_data import check_dataset
from model.data.image_io import read_image, read_mask
from model.data.make_splits import main as make_splits_main


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
  out = tmp_path_factory.mktemp("nuclei_scene")
  nuclei_data.main(["--out", str(out)])
  return out


def test_conversion_keeps_the_image_and_merges_the_instances(scene):
  _, image_path, labels_path = nuclei_data.source_files()
  original, labels = tifffile.imread(image_path), tifffile.imread(labels_path)

  image = read_image(str(scene / "images" / "nuclei.tif"))
  assert image.dtype == np.uint16 and image.shape == (512, 512, 1)
  np.testing.assert_array_equal(image[:, :, 0], original)
  assert 200 <= image.max() <= 255  # 16-bit storage, 8-bit-like range: nothing rescaled it
  mask = read_mask(str(scene / "masks" / "nuclei.png"))
  np.testing.assert_array_equal(mask, (labels > 0).astype(np.uint8))
  assert 0.1 < mask.mean() < 0.4

  classes = json.loads((scene / "classes.json").read_text())
  assert [c["name"] for c in classes] == ["background", "nucleus"] and all("color" in c for c in classes)
  source = json.loads((scene / "SOURCE.json").read_text())
  assert (source["package"], source["version"], source["license"]) == ("stardist", "0.9.2", "BSD-3-Clause")
  for key, path in (("image", image_path), ("labels", labels_path)):
    with open(path, "rb") as handle:
      assert source["files"][key]["sha256"] == hashlib.sha256(handle.read()).hexdigest()
  assert source["files"]["image"]["path_in_wheel"] == "stardist/data/images/img2d.tif"
  assert "instances merged into one class" in source["conversion"]


def test_documented_split_command_gives_a_dataset_check_data_accepts(scene, tmp_path):
  out = tmp_path / "nuclei"
  argv = [
    "--scenes",
    str(scene),
    "--regions",
    "4x4",
    "--val",
    "0.125",
    "--test",
    "0.25",
    "--seed",
    "0",
    "--out",
    str(out),
  ]
  assert make_splits_main(argv) == 0

  report = check_dataset(str(out), None)

  assert (report["channels"], report["dtype"]) == (1, "uint16")
  assert {split: s["images"] for split, s in report["splits"].items()} == {"train": 10, "val": 2, "test": 4}
  assert all(s["height"] == [128, 128] and s["width"] == [128, 128] for s in report["splits"].values())
  source = json.loads((scene / "SOURCE.json").read_text())
  assert sum(s["class_pixels"][1] for s in report["splits"].values()) == source["pixels"]["nucleus"]
  assert report["band_stats"]["p99"][0] <= 235


def test_missing_package_says_how_to_install(monkeypatch):
  def not_installed(name):
    raise importlib.metadata.PackageNotFoundError(name)

  monkeypatch.setattr(nuclei_data.importlib.metadata, "distribution", not_installed)
  with pytest.raises(nuclei_data.NucleiDataError, match=r"pip install --no-deps stardist==0\.9\.2"):
    nuclei_data.source_files()
