"""model.wrap --onnx: PyTorch-style ONNX models through the same pipeline, without PyTorch.

Three small models are built with onnx.helper (tests/onnx_models.py): NCHW
with ImageNet normalisation and a softmax at stride 4, NHWC logits at full
size, and one fixed at 1x3x256x256 as torch.onnx.export writes it without
dynamic axes. Each is wrapped by the command, run by the pipeline whole and
tiled, and its masks compared on every pixel with the user's model run
directly by onnxruntime: normalisation, padding and tiling are redone here
in numpy, and coarse logits upsampled by model.wrap.onnx_probe.bilinear.
"""

import json
import os
import time

import numpy as np
import onnx
import onnx_models
import onnxruntime
import pytest
from onnx import TensorProto, helper
from PIL import Image
from pipeline_helpers import read_mask, read_outputs, run_pipeline, scene

from model import engines
from model.engines import EngineError, choice
from model.engines.cpu import CpuFeatures
from model.tiling import owned_crop, plan_tiles
from model.wrap import cli as wrap_module
from model.wrap.onnx_probe import bilinear
from pipeline.errors import OptionsError
from pipeline.model_check import check_model, load_card

IMAGENET = (np.float32([0.485, 0.456, 0.406]), np.float32([0.229, 0.224, 0.225]))
# name: (builder, classes, wrap flags, layout, fixed size, size multiple, output stride, output kind)
CASES = {
  "nchw_softmax_stride4": (
    onnx_models.nchw_stride4_softmax,
    3,
    ["--normalization", "imagenet"],
    "NCHW",
    None,
    4,
    4,
    "softmax",
  ),
  "nhwc_logits": (onnx_models.nhwc_logits, 4, ["--input_scale", str(1 / 255)], "NHWC", None, 2, 1, "logits"),
  "fixed_256": (onnx_models.fixed_256, 3, ["--input_scale", str(1 / 255)], "NCHW", (256, 256), 1, 1, "logits"),
}
WRAP_SECONDS = 10.0


def _classes(path, count):
  path.write_text(json.dumps([{"id": i, "name": f"class{i}"} for i in range(count)]))
  return str(path)


@pytest.fixture(scope="module")
def wrapped(tmp_path_factory):
  """{case: (source .onnx, model directory, wrap seconds)}, each wrapped by the command."""
  root = tmp_path_factory.mktemp("onnx")
  result = {}
  for name, (build, count, flags, *_rest) in CASES.items():
    source = str(root / f"{name}.onnx")
    onnx.save(build(), source)
    out = str(root / f"{name}_model")
    started = time.monotonic()
    wrap_module.main(["--onnx", source, "--classes", _classes(root / f"{name}.json", count), "--out", out, *flags])
    result[name] = (source, out, time.monotonic() - started)
  return result


class Direct:
  """The user's .onnx run directly by onnxruntime, with torchvision-style preprocessing done here in numpy."""

  def __init__(self, name, source):
    _, _, flags, self.layout, self.fixed, self.multiple, self.stride, self.kind = CASES[name]
    self.imagenet = "imagenet" in flags
    self.session = onnxruntime.InferenceSession(source, providers=["CPUExecutionProvider"])

  def scores(self, pixels):
    """HWC scores of the model at the padded size, for one uint8 image."""
    x = pixels.astype(np.float32) / np.float32(255)
    if self.imagenet:
      x = (x - IMAGENET[0]) / IMAGENET[1]
    height, width = pixels.shape[:2]
    target = self.fixed or (-(-height // self.multiple) * self.multiple, -(-width // self.multiple) * self.multiple)
    x = np.pad(x, [(0, target[0] - height), (0, target[1] - width), (0, 0)], mode="symmetric")
    x = x.transpose(2, 0, 1) if self.layout == "NCHW" else x
    out = self.session.run(None, {"input": np.ascontiguousarray(x[None])})[0][0]
    return out.transpose(1, 2, 0) if self.layout == "NCHW" else out

  def mask(self, pixels):
    """argmax over classes of the model's output, its coarse logits upsampled bilinearly, cropped to the image."""
    scores = self.scores(pixels).astype(np.float64)
    if self.stride > 1:
      logits = np.log(np.maximum(scores, 1e-12)) if self.kind == "softmax" else scores
      scores = bilinear(logits[None], self.stride)[0]
    return scores[: pixels.shape[0], : pixels.shape[1]].argmax(-1)

  def tiled_mask(self, pixels, tile_size, overlap, whole_pixels):
    """The same, tile by tile as the pipeline plans them, each pixel from the tile that owns it."""
    height, width = pixels.shape[:2]
    stitched = np.full((height, width), 255, np.uint8)
    for spec in plan_tiles(height, width, tile_size, overlap, whole_pixels):
      tile = pixels[spec.top : spec.top + spec.height, spec.left : spec.left + spec.width]
      stitched[spec.own_top : spec.own_bottom, spec.own_left : spec.own_right] = owned_crop(spec, self.mask(tile))
    return stitched


def test_wrapping_reads_the_graph_and_takes_under_ten_seconds(wrapped):
  for name, (source, out, seconds) in wrapped.items():
    print(f"{name}: wrapped in {seconds:.2f} s")
    assert seconds < WRAP_SECONDS, (name, seconds)
    _, count, _, layout, fixed, multiple, stride, kind = CASES[name]
    card = load_card(out)
    assert card["wrapped_from"]["format"] == "onnx" and card["wrapped_from"]["opset"] == onnx_models.OPSET
    assert card["wrapped_from"]["sha256"] == wrap_module.sha256_of(source)
    assert card["wrapped_from"]["producer"] == "pytorch 2.5.1"
    assert (card["architecture"]["layout"], card["stride"], card["architecture"]["output_stride"]) == (
      layout,
      multiple,
      stride,
    )
    assert card["architecture"]["output"] == kind and len(card["classes"]) == count
    assert card.get("input_size") == (list(fixed) if fixed else None)
    assert not os.path.exists(os.path.join(out, "saved_model"))
    for path in ("onnx/source.onnx", "onnx/model.onnx", "openvino/model.xml", "openvino/model.bin"):
      assert os.path.isfile(os.path.join(out, path)), path
    assert card["openvino"]["source_onnx_sha256"] == wrap_module.sha256_of(os.path.join(out, "onnx", "model.onnx"))
  normalization = load_card(wrapped["nchw_softmax_stride4"][1])["input"]["normalization"]
  assert normalization == {"mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]}


def _images(folder, sizes, seed):
  os.makedirs(folder, exist_ok=True)
  pixels = {}
  for index, (height, width) in enumerate(sizes):
    pixels[f"img{index}.png"] = scene(height, width, seed=seed + index)
    Image.fromarray(pixels[f"img{index}.png"]).save(os.path.join(folder, f"img{index}.png"))
  return pixels


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_masks_equal_the_model_run_directly_whole_and_tiled(wrapped, tmp_path, name):
  source, model_dir, _ = wrapped[name]
  direct = Direct(name, source)
  fixed = CASES[name][4]
  sizes = [(200, 230), (300, 420)] if fixed else [(75, 90), (131, 166)]
  pixels = _images(str(tmp_path / "in"), sizes, seed=20)
  pattern = str(tmp_path / "in" / "*.png")
  # Whole: each image in one engine call (a fixed-size model's are tiled at its size by the pipeline itself).
  run_pipeline(pattern, tmp_path / "whole", model_dir, "--runner=FnApiRunner")
  summary, records, failures = read_outputs(str(tmp_path / "whole"))
  assert not failures and summary["counts"]["segmented"] == len(sizes)
  assert summary["engine"]["engine"] == "openvino"
  for key, image in pixels.items():
    expected = direct.tiled_mask(image, 256, 64, 0) if fixed else direct.mask(image)
    mask = read_mask(str(tmp_path / "whole"), key)
    agreement = float((mask == expected).mean())
    print(f"{name} whole {key}: agreement {agreement:.6f} over {mask.size} pixels")
    np.testing.assert_array_equal(mask, expected)
    assert len({int(v) for v in np.unique(mask)}) > 1
    assert records[key]["pixels"] == mask.size
  # Tiled: tiles smaller than the image, on the model's size grid.
  tile_size, overlap = (128, 32) if fixed else (64, 16)
  tiling = [f"--tile_size={tile_size}", f"--tile_overlap={overlap}", "--whole_image_pixels=0"]
  run_pipeline(pattern, tmp_path / "tiled", model_dir, "--runner=FnApiRunner", *tiling)
  summary, _, failures = read_outputs(str(tmp_path / "tiled"))
  assert not failures and summary["counts"]["segmented"] == len(sizes)
  for key, image in pixels.items():
    assert len(plan_tiles(*image.shape[:2], tile_size, overlap, 0)) > 1
    mask = read_mask(str(tmp_path / "tiled"), key)
    expected = direct.tiled_mask(image, tile_size, overlap, 0)
    print(f"{name} tiled {key}: agreement {float((mask == expected).mean()):.6f}")
    np.testing.assert_array_equal(mask, expected)


def test_onnxruntime_engine_gives_the_same_masks(wrapped, tmp_path):
  """The GPU engine's code path (onnxruntime-gpu) on onnxruntime's CPU provider: same masks as OpenVINO."""
  source, model_dir, _ = wrapped["nchw_softmax_stride4"]
  pixels = _images(str(tmp_path / "in"), [(75, 90), (131, 166)], seed=40)
  run_pipeline(tmp_path / "in" / "*.png", tmp_path / "out", model_dir, "--runner=FnApiRunner", "--engine=onnxruntime")
  summary, _, failures = read_outputs(str(tmp_path / "out"))
  assert not failures and summary["engine"]["engine"] == "onnxruntime"
  assert summary["engine"]["providers"] == ["CPUExecutionProvider"]
  direct = Direct("nchw_softmax_stride4", source)
  for key, image in pixels.items():
    np.testing.assert_array_equal(read_mask(str(tmp_path / "out"), key), direct.mask(image))


def test_truth_metrics_and_report(wrapped, tmp_path):
  """--truth scores the masks like any model's; truth made from the direct run scores 1.0, the OOD check abstains."""
  source, model_dir, _ = wrapped["nhwc_logits"]
  direct = Direct("nhwc_logits", source)
  pixels = _images(str(tmp_path / "in"), [(64, 80), (90, 70)], seed=60)
  os.makedirs(tmp_path / "truth")
  for key, image in pixels.items():
    Image.fromarray(direct.mask(image).astype(np.uint8)).save(tmp_path / "truth" / key)
  run_pipeline(
    tmp_path / "in" / "*.png",
    tmp_path / "out",
    model_dir,
    "--runner=FnApiRunner",
    "--truth",
    str(tmp_path / "truth" / "*.png"),
  )
  summary, records, failures = read_outputs(str(tmp_path / "out"))
  assert not failures and summary["truth"]["images_with_truth"] == 2
  assert summary["truth"]["pixel_accuracy"] == 1.0 and summary["truth"]["mean_iou"] == 1.0
  assert all(record["truth"]["pixel_accuracy"] == 1.0 for record in records.values())
  assert summary["model"]["card"]["wrapped_from"]["format"] == "onnx"
  assert summary["ood"]["unavailable"]
  assert os.path.getsize(tmp_path / "out" / "report.html") > 1000


def test_geotiff_masks_keep_the_georeference(wrapped, tmp_path):
  import rasterio
  from pipeline_helpers import REPO

  _, model_dir, _ = wrapped["nchw_softmax_stride4"]
  geo = os.path.join(REPO, "samples", "geo", "utm33n_field.tif")
  run_pipeline(geo, tmp_path / "out", model_dir, "--runner=FnApiRunner", "--polygons")
  summary, records, failures = read_outputs(str(tmp_path / "out"))
  assert not failures and summary["counts"]["segmented"] == 1
  record = records["utm33n_field.tif"]
  assert record["area_method"] == "projected" and record["crs"] == "EPSG:32633"
  with rasterio.open(tmp_path / "out" / "masks" / "utm33n_field.tif.tif") as mask, rasterio.open(geo) as image:
    assert (mask.crs, mask.transform, mask.shape) == (image.crs, image.transform, image.shape)
  assert record["polygon_count"] > 0


def test_engine_rules_for_onnx_models(wrapped):
  avx2 = CpuFeatures("test CPU", frozenset({"avx2"}))

  def pick(engine="auto", precision="auto", gpu=False, providers=("CPUExecutionProvider",), **kwargs):
    return choice.choose(
      engine,
      precision,
      features=avx2,
      gpu=gpu,
      has_openvino=True,
      has_int8=False,
      model_format="onnx",
      model_dir="models/unet",
      onnx_providers=providers,
      **kwargs,
    )

  assert pick().engine == "openvino"
  assert pick(gpu=True, providers=("CUDAExecutionProvider", "CPUExecutionProvider")).engine == "onnxruntime"
  assert pick(engine="onnxruntime").engine == "onnxruntime"
  for kwargs, words in (
    ({"gpu": True}, ["GPU", "onnxruntime-gpu", "deconvseg[onnx-gpu]"]),
    ({"engine": "tensorflow"}, ["--engine tensorflow", "no SavedModel"]),
    ({"mixed_precision": True}, ["--mixed_precision", "no SavedModel"]),
    ({"engine": "onnxruntime", "precision": "int8"}, ["onnxruntime runs fp32"]),
    ({"engine": "onnxruntime", "providers": ()}, ["pip install"]),
  ):
    with pytest.raises(EngineError) as error:
      pick(**kwargs)
    assert "\n" not in str(error.value) and all(word in str(error.value) for word in words), str(error.value)
  with pytest.raises(EngineError, match="runs models wrapped from ONNX"):
    choice.choose(
      "onnxruntime", "auto", features=avx2, gpu=False, has_openvino=True, has_int8=False, model_format="saved_model"
    )
  # The start-up check refuses --engine tensorflow before any work, in one line.
  _, model_dir, _ = wrapped["nhwc_logits"]
  with pytest.raises(OptionsError, match="wrapped from ONNX and has no SavedModel"):
    check_model(model_dir, load_card(model_dir), engine="tensorflow")


def test_a_changed_served_graph_is_converted_into_the_cache(wrapped, tmp_path, monkeypatch):
  """The model directory's IR is used only while it was made from the directory's model.onnx."""
  import shutil

  from model.engines import openvino_ir

  monkeypatch.setenv("DECONVSEG_CACHE", str(tmp_path / "cache"))
  _, model_dir, _ = wrapped["nhwc_logits"]
  assert openvino_ir.locate_ir(model_dir) == (os.path.join(model_dir, "openvino", "model.xml"), "model directory")
  copy = str(tmp_path / "copy")
  shutil.copytree(model_dir, copy)
  shutil.rmtree(os.path.join(copy, "openvino"))
  path, where = openvino_ir.locate_ir(copy)
  assert where == "converted" and path.startswith(str(tmp_path / "cache"))
  assert openvino_ir.locate_ir(copy) == (path, "cache")
  check_model(copy, load_card(copy))


def _bad_model(tmp_path, name, op_type, domain=""):
  node = helper.make_node(op_type, ["input"], ["output"], domain=domain)
  graph = helper.make_graph(
    [node],
    "bad",
    [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, "H", "W"])],
    [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 3, "H", "W"])],
  )
  opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
  model = helper.make_model(graph, opset_imports=opsets)
  path = str(tmp_path / f"{name}.onnx")
  onnx.save(model, path)
  return path


def test_bad_inputs_give_one_line_and_exit_2(wrapped, tmp_path, capsys):
  classes3 = _classes(tmp_path / "c3.json", 3)
  source = wrapped["nchw_softmax_stride4"][0]
  garbage = tmp_path / "garbage.onnx"
  garbage.write_bytes(os.urandom(3000))
  grey = tmp_path / "grey.onnx"
  model = onnx_models.nchw_stride4_softmax()
  model.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 1
  model.graph.initializer[0].CopyFrom(
    onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(model.graph.initializer[0])[:, :1], "conv.weight.1")
  )
  onnx.save(model, str(grey))
  cases = {
    "malformed": (["--onnx", str(garbage), "--classes", classes3], "is not a readable ONNX model"),
    "unknown op": (["--onnx", _bad_model(tmp_path, "unknown", "NotARealOp"), "--classes", classes3], "NotARealOp"),
    "unsupported op": (
      ["--onnx", _bad_model(tmp_path, "custom", "MyCustomOp", "com.example"), "--classes", classes3],
      "OpenVINO cannot run this model",
    ),
    "output channels": (
      ["--onnx", source, "--classes", _classes(tmp_path / "c4.json", 4)],
      "the model has 3 output channels but the classes file lists 4 classes",
    ),
    "input bands": (
      ["--onnx", str(grey), "--classes", classes3, "--normalization", "imagenet"],
      "3 mean and 3 std values but the model takes 1 bands",
    ),
    "no classes": (["--onnx", source], "the following arguments are required: --classes"),
    "keras flag": (["--onnx", source, "--classes", classes3, "--unsafe_deserialization"], "--keras models only"),
  }
  for case, (argv, words) in cases.items():
    out = tmp_path / case.replace(" ", "_")
    with pytest.raises(SystemExit) as exit_info:
      wrap_module.main(argv + ["--out", str(out)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, case
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("model.wrap: error: ") and words in lines[0], (case, err)
    assert not os.path.exists(out), case


@pytest.mark.parametrize("name", sorted(CASES))
def test_flips_find_the_class_probabilities_of_every_wrapped_graph(wrapped, name):
  """--tta flips reads the tensor the served graph's confidence is the maximum of, softmax or logits alike."""
  _, model_dir, _ = wrapped[name]
  chosen = engines.choose_here(model_dir, "auto", "fp32", tta="flips")
  segmenter = engines.load(model_dir, chosen, engines.card_input(load_card(model_dir)), tta="flips")
  fixed = CASES[name][4]
  images = np.random.default_rng(5).integers(0, 255, (2,) + (fixed or (64, 96)) + (3,), dtype=np.uint8)
  plain_ids, plain_confidence = segmenter.segmenter.predict(images)
  probabilities = segmenter.segmenter.predict_probabilities(images)
  assert probabilities.shape == images.shape[:3] + (CASES[name][1],)
  np.testing.assert_allclose(probabilities.max(-1), plain_confidence, atol=1e-6)
  np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)
  class_ids, confidence = segmenter.predict(images)
  assert class_ids.shape == images.shape[:3] and (confidence >= 1.0 / CASES[name][1] - 1e-6).all()
