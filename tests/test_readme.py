"""Every command in the README is exercised, so the README cannot go stale.

Each shell command in a ```bash block is recognised and checked: pipeline
invocations must parse with the pipeline's own strict flag checks (after
{date} templating), model commands with their modules' parsers, and the
"Train a model on your own data" block is run for real end to end with its
sizes shrunk. An unrecognised command fails the test: a new README command
needs a check here.
"""

import json
import os
import re
import shlex

import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from model_commands import command_module
from pipeline_helpers import REPO

from pipeline.checks import reject_unknown_flags
from pipeline.schedule import fill_date_templates
from transforms.imaging.records import MASKS_DIR, POLYGONS_DIR, SUMMARY_FILE

README = os.path.join(REPO, "README.md")
# Values for the shell variables the Dataflow example uses.
ENVIRONMENT = {
  "PROJECT": "my-project",
  "REGION": "us-central1",
  "BUCKET": "my-bucket",
  "WORKER_IMAGE": "us-central1-docker.pkg.dev/my-project/deconvseg/deconvseg-worker:0.1.0",
}
MODEL_COMMANDS = ("model.make_dataset", "model.train", "model.export", "model.evaluate")
ENGINE_COMMANDS = ("model.quantize", "model.export_openvino")  # checked by their parsers
WRAP_COMMANDS = ("model.wrap",)  # checked by their parsers too; not part of the training block run below
QUICK_START = ("./run_pipeline.sh", "./run_tests.sh")  # run by test_run_pipeline_sh.py and by CI itself
WALKTHROUGH = "Walkthrough: a real labelled image, from the package to the report"  # run by test_walkthrough_nuclei.py
GEO = "Segment GeoTIFFs (GIS outputs)"  # run for real below
PYTORCH = "You trained a U-Net in PyTorch"  # run for real below, on an ONNX U-Net built with onnx.helper


def _setup_extras():
  """The extras setup.py declares (DECONVSEG_EXTRAS must name one)."""
  text = open(os.path.join(REPO, "setup.py"), encoding="utf-8").read()
  block = text[text.index("EXTRAS = {") : text.index("\n}\n", text.index("EXTRAS = {"))]
  return set(re.findall(r'^  "([a-z]+)":', block, re.M))


def readme_commands():
  """(section, argv) for every command in the README's bash blocks."""
  text = open(README, encoding="utf-8").read()
  commands = []
  for match in re.finditer(r"```bash\n(.*?)```", text, re.S):
    section = re.findall(r"^## (.+)$", text[: match.start()], re.M)[-1]
    block = match.group(1).replace("\\\n", " ")
    for line in block.splitlines():
      line = line.strip()
      if not line or line.startswith("#"):
        continue
      line = re.sub(r"\$(\w+)", lambda m: ENVIRONMENT[m.group(1)], line)
      tokens = shlex.split(line, comments=True)
      if re.fullmatch(r"[\d*/,-]+", tokens[0]):  # a crontab entry: drop the five schedule fields
        tokens = tokens[5:]
      while re.match(r"[A-Z_][A-Z0-9_]*=", tokens[0]):  # an environment assignment before the command
        name, _, value = tokens.pop(0).partition("=")
        assert name == "DECONVSEG_EXTRAS" and value in _setup_extras(), f"README sets {name}={value}"
      for redirect in (">>", ">", "2>&1"):
        if redirect in tokens:
          tokens = tokens[: tokens.index(redirect)]
      command = []
      for token in tokens + ["&&"]:
        if token == "&&":
          if command and command[0] != "cd":
            commands.append((section, command))
          command = []
        else:
          command.append(token)
  return commands


def _module(argv):
  """'python -m X args' -> (X, args); None for anything else."""
  if len(argv) >= 3 and argv[0] in ("python", ".venv/bin/python") and argv[1] == "-m":
    return argv[2], argv[3:]
  return None


def test_readme_has_the_commands_users_need():
  sections = {section for section, _ in readme_commands()}
  assert {
    "Quick start",
    "Segment your own images",
    "Your own bucket",
    "Run on Dataflow",
    "Run nightly",
    "Train a model on your own data",
    "Use your own trained model",
    "Check a run's quality",
    "Engines: OpenVINO on CPUs, TensorFlow on GPUs",
    GEO,
    WALKTHROUGH,
    PYTORCH,
  } <= sections


@pytest.mark.parametrize(
  "section, argv", readme_commands(), ids=lambda value: " ".join(value)[:60] if isinstance(value, list) else value
)
def test_readme_command_is_valid(section, argv):
  if tuple(argv) in [(command,) for command in QUICK_START]:
    return
  if argv[0] == ".venv/bin/pip":
    locked = [line for line in open(os.path.join(REPO, "requirements.lock")) if line.startswith("stardist==")]
    assert argv[1:] == ["install", "--no-deps", locked[0].strip()], argv
    return
  if section == WALKTHROUGH:
    return  # every command of the walkthrough runs for real in tests/test_walkthrough_nuclei.py
  if section == PYTORCH:
    return  # run for real by test_pytorch_walkthrough_runs
  if argv[0] == "./run_pipeline.sh":
    args = fill_date_templates(argv[1:])
    reject_unknown_flags(args)  # unknown flags and bad values raise OptionsError with the reason
    PipelineOptions(args).get_all_options(retain_unknown_options=False)
    assert not any("{" in arg for arg in args), args
    return
  module = _module(argv)
  assert module is not None, f"README command not covered by tests/test_readme.py: {' '.join(argv)}"
  name, args = module
  if name in MODEL_COMMANDS + WRAP_COMMANDS + ENGINE_COMMANDS:
    command_module(name).parse_args(args)
  elif name == "pipeline.report":
    assert len(args) == 1 and args[0].startswith("gs://"), args
  elif name == "pipeline.evaluate":
    __import__(name, fromlist=["parse_args"]).parse_args(args)
  elif name == "bench.plan":
    assert __import__(name, fromlist=["main"]).main(args) == 0
  elif name == "pipeline.drift":
    parsed = __import__(name, fromlist=["parse_args"]).parse_args(fill_date_templates(args))
    assert "{" not in parsed.output + parsed.compare_to, parsed
  else:
    pytest.fail(f"README command not covered by tests/test_readme.py: {' '.join(argv)}")


SHRINK = {"--train": "6", "--val": "3", "--test": "3", "--size": "64", "--epochs": "2"}


@pytest.mark.slow
def test_train_your_own_model_block_runs(tmp_path):
  """The training block, for real: generate, train, export, evaluate, segment with the new model."""
  from pipeline.run import run

  block = [argv for section, argv in readme_commands() if section == "Train a model on your own data"]
  assert [(_module(argv) or (argv[0],))[0] for argv in block] == list(MODEL_COMMANDS) + ["./run_pipeline.sh"]
  paths = {
    "data/mosaic": str(tmp_path / "data"),
    "runs/mine": str(tmp_path / "run"),
    "models/mine": str(tmp_path / "model"),
    "results": str(tmp_path / "results"),
    "photos/*.png": os.path.join(REPO, "samples", "images", "strip_0003.png"),
  }

  def adapt(args):
    adapted = []
    for arg in args:
      for name, path in paths.items():
        if arg == name or arg.startswith(name + "/"):
          arg = path + arg[len(name) :]
      adapted.append(arg)
    for index, arg in enumerate(adapted[:-1]):
      if arg in SHRINK:
        adapted[index + 1] = SHRINK[arg]
    return adapted

  for argv in block[:-1]:
    name, args = _module(argv)
    args = adapt(args)
    if name == "model.train":
      # a narrow network and a few steps an epoch (defaults: width 32, at least 50): the block's road, not the model
      args += [
        "--image_size",
        "64",
        "--batch_size",
        "3",
        "--min_steps_per_epoch",
        "5",
        "--width",
        "8",
        "--verbose",
        "0",
      ]
    command_module(name).main(args)
  card = json.load(open(os.path.join(paths["models/mine"], "card.json")))
  assert set(card["metrics"]["test"]) >= {"pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou"}
  assert card["architecture"]["variant"] == "fcn2s"  # model.train's default decoder
  run(adapt(block[-1][1:]), save_main_session=False)
  summary = json.load(open(os.path.join(paths["results"], SUMMARY_FILE)))
  assert summary["counts"] == {"read": 1, "segmented": 1, "failed": 0, "reused_existing": 0}
  assert summary["model"]["path"] == paths["models/mine"]


def test_geotiff_block_runs(tmp_path):
  """The GeoTIFF block, for real, on the bundled model: GeoTIFF masks in the inputs' CRS, polygons, truth."""
  import rasterio

  from pipeline.run import run

  block = [argv for section, argv in readme_commands() if section == GEO]
  assert [argv[0] for argv in block] == ["./run_pipeline.sh"]
  args = block[0][1:]
  args[args.index("--output") + 1] = str(tmp_path / "geo")
  args = [os.path.join(REPO, arg) if arg.startswith("samples/") else arg for arg in args]
  run(args, save_main_session=False)
  summary = json.load(open(tmp_path / "geo" / SUMMARY_FILE))
  assert summary["counts"] == {"read": 2, "segmented": 2, "failed": 0, "reused_existing": 0}
  assert summary["crs"] == ["EPSG:32633", "EPSG:4326"]
  assert summary["truth"]["mean_iou"] > 0.9
  for name, epsg in (("utm33n_field.tif", 32633), ("wgs84_60n.tif", 4326)):
    with (
      rasterio.open(tmp_path / "geo" / MASKS_DIR / f"{name}.tif") as mask,
      rasterio.open(os.path.join(REPO, "samples", "geo", name)) as source,
    ):
      assert (mask.crs.to_epsg(), mask.transform, mask.shape) == (epsg, source.transform, source.shape)
    collection = json.load(open(tmp_path / "geo" / POLYGONS_DIR / f"{name}.geojson"))
    assert all(feature["properties"]["area"] >= 5 for feature in collection["features"])


@pytest.mark.slow
def test_pytorch_walkthrough_runs(tmp_path):
  """The U-Net walkthrough, for real: wrap an ONNX U-Net (as torch.onnx.export writes it), run it with --truth.

  The truth masks are the U-Net's own argmax, computed here by onnxruntime on the ImageNet-normalised
  pixels, so the run's scores say the pipeline reproduces the model on every pixel.
  """
  import numpy as np
  import onnx
  import onnx_models
  import onnxruntime
  from PIL import Image
  from pipeline_helpers import scene

  from model.wrap import cli as wrap
  from pipeline.run import run

  block = [argv for section, argv in readme_commands() if section == PYTORCH]
  assert [(_module(argv) or (argv[0],))[0] for argv in block] == ["model.wrap", "./run_pipeline.sh"]
  text = open(README, encoding="utf-8").read()
  assert "torch.onnx.export(" in text[text.index("## " + PYTORCH) :]
  onnx.save(onnx_models.unet(), str(tmp_path / "unet.onnx"))
  (tmp_path / "classes.json").write_text(
    json.dumps([{"id": 0, "name": "background"}, {"id": 1, "name": "field"}, {"id": 2, "name": "road"}])
  )
  session = onnxruntime.InferenceSession(str(tmp_path / "unet.onnx"), providers=["CPUExecutionProvider"])
  mean, std = np.float32([0.485, 0.456, 0.406]), np.float32([0.229, 0.224, 0.225])
  os.makedirs(tmp_path / "photos")
  os.makedirs(tmp_path / "truth")
  for index, (height, width) in enumerate([(96, 128), (80, 110)]):
    pixels = scene(height, width, seed=30 + index)
    Image.fromarray(pixels).save(tmp_path / "photos" / f"field{index}.png")
    padded = np.pad(pixels, [(0, height % 2), (0, width % 2), (0, 0)], mode="symmetric")
    x = ((padded.astype(np.float32) / np.float32(255) - mean) / std).transpose(2, 0, 1)[None]
    truth = session.run(None, {"input": np.ascontiguousarray(x)})[0][0].argmax(0)[:height, :width]
    Image.fromarray(truth.astype(np.uint8)).save(tmp_path / "truth" / f"field{index}.png")

  def here(args):
    return [
      str(tmp_path / arg)
      if arg.split("/")[0] in {"unet.onnx", "classes.json", "models", "photos", "truth", "results"}
      else arg
      for arg in args
    ]

  wrap.main(here(_module(block[0])[1]))
  run(here(block[1][1:]), save_main_session=False)
  results = tmp_path / "results" / "unet"
  summary = json.load(open(results / SUMMARY_FILE))
  assert summary["counts"] == {"read": 2, "segmented": 2, "failed": 0, "reused_existing": 0}
  assert summary["truth"]["pixel_accuracy"] == 1.0 and summary["truth"]["mean_iou"] == 1.0
  assert summary["engine"]["engine"] == "openvino"
  assert summary["model"]["card"]["wrapped_from"]["format"] == "onnx"
  assert "Confusion" in open(results / "report.html", encoding="utf-8").read()
