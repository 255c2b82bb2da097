"""Bad invocations stop before the pipeline is built, with one clear message and exit code 2."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from fake_model import build_fake_model, card
from PIL import Image
from pipeline_helpers import REPO, scene

from pipeline.checks import validate
from pipeline.options import SegmentationOptions, help_parser
from pipeline.run import main
from transforms.imaging.records import MASKS_DIR, SUMMARY_FILE


@pytest.fixture
def inputs(tmp_path):
  folder = tmp_path / "in"
  folder.mkdir()
  Image.fromarray(scene(20, 30)).save(folder / "a.png")
  return folder


@pytest.fixture
def argv(tmp_path, inputs, fake_model):
  """A valid command line: the inputs, an output under tmp_path, the fake model."""
  return ["--input", str(inputs / "*.png"), "--output", str(tmp_path / "out"), "--model", fake_model]


def _fails(capsys, argv, *fragments, single_line=True):
  code = main(argv)
  err = capsys.readouterr().err
  assert code == 2, err
  assert "Traceback" not in err
  assert err.startswith("deconvseg: error: "), err
  if single_line:
    assert err.count("\n") == 1, err
  for fragment in fragments:
    assert fragment in err, err
  return err


def test_no_input(capsys, tmp_path, fake_model):
  _fails(capsys, ["--output", str(tmp_path / "out"), "--model", fake_model], "no input given", "--input")


def test_no_output(capsys, inputs, fake_model):
  _fails(capsys, ["--input", str(inputs / "*.png"), "--model", fake_model], "no output given")


def test_glob_matching_nothing(capsys, tmp_path, fake_model):
  _fails(
    capsys,
    ["--input", str(tmp_path / "nowhere" / "*.png"), "--output", str(tmp_path / "out"), "--model", fake_model],
    "matches no files",
  )


def test_missing_tfrecord_and_manifest(capsys, tmp_path, inputs, fake_model):
  base = ["--output", str(tmp_path / "out"), "--model", fake_model]
  _fails(capsys, base + ["--tfrecord", str(tmp_path / "*.tfrecord")], "--tfrecord", "matches no files")
  _fails(capsys, base + ["--manifest", str(tmp_path / "list.txt")], "--manifest", "does not exist")


def test_output_inside_input(capsys, inputs, fake_model):
  _fails(
    capsys,
    ["--input", str(inputs / "*.png"), "--output", str(inputs / "out"), "--model", fake_model],
    "inside the input directory",
  )


def test_unwritable_output_stops_before_any_work(capsys, inputs, fake_model):
  _fails(
    capsys,
    ["--input", str(inputs / "*.png"), "--output", "/proc/deconvseg-out", "--model", fake_model],
    "cannot write to --output /proc/deconvseg-out",
  )
  assert not os.path.exists("/proc/deconvseg-out")


def test_writable_output_check_leaves_nothing_behind(tmp_path, inputs, fake_model):
  output = tmp_path / "new" / "out"
  argv = ["--input", str(inputs / "*.png"), "--output", str(output), "--model", fake_model]
  config = validate(argv, PipelineOptions(argv))
  assert config.output == str(output) and not (tmp_path / "new").exists()


def test_model_directory_missing(capsys, tmp_path, inputs):
  _fails(
    capsys,
    ["--input", str(inputs / "*.png"), "--output", str(tmp_path / "out"), "--model", str(tmp_path / "no_model")],
    "is not a directory",
  )


def test_model_unreadable(capsys, tmp_path, inputs, fake_model):
  broken = tmp_path / "broken_model"
  shutil.copytree(fake_model, broken)
  shutil.rmtree(broken / "saved_model" / "variables")
  (broken / "saved_model" / "saved_model.pb").write_bytes(b"garbage")
  _fails(
    capsys,
    ["--input", str(inputs / "*.png"), "--output", str(tmp_path / "out"), "--model", str(broken)],
    "cannot load the SavedModel",
  )
  (broken / "card.json").write_text("{not json")
  _fails(
    capsys,
    ["--input", str(inputs / "*.png"), "--output", str(tmp_path / "out"), "--model", str(broken)],
    "not valid JSON",
  )


def test_card_not_matching_model(capsys, tmp_path, inputs, fake_model):
  mismatched = tmp_path / "mismatched"
  shutil.copytree(fake_model, mismatched)
  three = card()["classes"][:3]
  (mismatched / "card.json").write_text(json.dumps(card(classes=three)))
  _fails(
    capsys,
    ["--input", str(inputs / "*.png"), "--output", str(tmp_path / "out"), "--model", str(mismatched)],
    "4 classes",
    "lists 3",
  )


@pytest.mark.parametrize(
  "signature,fragment",
  [
    ({"signature_channels": 3}, "takes images of 3 channels (card.json input.channels: 4)"),
    ({"signature_dtype": "uint8"}, "takes images of dtype uint8 (card.json input.dtype: uint16)"),
  ],
)
@pytest.mark.slow
def test_card_input_not_matching_the_signature(capsys, tmp_path, inputs, signature, fragment):
  model = build_fake_model(str(tmp_path / "model"), channels=4, dtype="uint16", **signature)
  _fails(capsys, ["--input", str(inputs / "*.png"), "--output", str(tmp_path / "out"), "--model", model], fragment)
  assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
  "block,fragment",
  [
    ({"dtype": "float32", "channels": 3}, "input.dtype 'float32' is not supported"),
    ({"dtype": "uint8", "channels": 0}, "input.channels 0 must be an integer from 1 to 64"),
  ],
)
def test_card_input_block_is_checked(capsys, tmp_path, inputs, fake_model, block, fragment):
  broken = tmp_path / "broken_input"
  shutil.copytree(fake_model, broken)
  document = card()
  document["input"].update(block)
  (broken / "card.json").write_text(json.dumps(document))
  _fails(
    capsys, ["--input", str(inputs / "*.png"), "--output", str(tmp_path / "out"), "--model", str(broken)], fragment
  )


@pytest.mark.parametrize(
  "flag,fragment",
  [
    ("--batch_size=0", "--batch_size=0 is out of range"),
    ("--tile_size=8", "--tile_size=8 is out of range"),
    ("--tile_overlap=300", "--tile_overlap=300 is out of range"),
    ("--tile_overlap=-1", "--tile_overlap=-1 is out of range"),
    ("--max_image_pixels=0", "--max_image_pixels=0"),
    ("--pixel_size=-2", "--pixel_size=-2.0 must be a positive number"),
    ("--pixel_size=nan", "must be a positive number"),
    ("--batch_size=many", "invalid int value: 'many'"),
    ("--stats_format=xml", "invalid choice: 'xml'"),
    ("--png_compress_level=11", "--png_compress_level=11"),
  ],
)
def test_bad_numbers_and_choices(capsys, argv, flag, fragment):
  _fails(capsys, argv + [flag], fragment)


def test_unknown_flags(capsys, argv):
  _fails(capsys, argv + ["--tile-size=64"], "unrecognised argument(s): --tile-size=64")
  _fails(capsys, argv + ["--inpu", "x"], "unrecognised")
  _fails(capsys, argv + ["stray.png"], "unquoted glob")


def test_beam_options_are_accepted(tmp_path, argv, capsys):
  assert main(argv + ["--runner=FnApiRunner", "--direct_num_workers=1", "--job_name=x"]) == 0
  assert (tmp_path / "out" / SUMMARY_FILE).exists()


def test_help_documents_every_flag(capsys):
  assert main(["--help"]) == 0
  text = capsys.readouterr().out
  parser = help_parser()
  flags = [a.option_strings[0] for a in parser._actions if a.option_strings and a.dest != "help"]
  assert len(flags) >= 18
  for flag in flags:
    assert flag in text
  for action in parser._actions:
    assert action.help, f"{action.option_strings} has no help text"
  assert "FnApiRunner" in text
  assert SegmentationOptions  # the flags are a PipelineOptions subclass, so they reach workers


def test_exit_code_from_a_real_process(tmp_path):
  env = dict(os.environ, PYTHONPATH=REPO)
  proc = subprocess.run(
    [sys.executable, "-m", "pipeline.run", "--output", str(tmp_path), "--bogus_flag=1"],
    cwd=str(tmp_path),
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 2
  assert "unrecognised argument(s): --bogus_flag=1" in proc.stderr
  assert "Traceback" not in proc.stderr


def test_date_templates_are_filled_before_validation(capsys, tmp_path, fake_model):
  day = tmp_path / "drops" / "2024" / "05" / "31"
  day.mkdir(parents=True)
  Image.fromarray(scene(10, 12)).save(day / "a.png")
  argv = [
    "--input",
    str(tmp_path / "drops" / "{yyyy}" / "{mm}" / "{dd}" / "*.png"),
    "--output",
    str(tmp_path / "out" / "date={date}"),
    "--model",
    fake_model,
    "--date",
    "2024-05-31",
  ]
  assert main(argv) == 0
  summary = json.loads((tmp_path / "out" / "date=2024-05-31" / SUMMARY_FILE).read_text())
  assert summary["counts"] == {"read": 1, "segmented": 1, "failed": 0, "reused_existing": 0}
  _fails(capsys, argv[:-1] + ["2024-13-45"], "--date")


def test_dataflow_flags_without_dataflow_are_refused(capsys, argv):
  _fails(capsys, argv + ["--gpu_type=nvidia-tesla-t4"], "only apply to Dataflow", single_line=False)


def test_a_directory_input_means_every_file_below_it(tmp_path, inputs, fake_model):
  (inputs / "sub").mkdir()
  Image.fromarray(scene(8, 9)).save(inputs / "sub" / "b.png")
  assert main(["--input", str(inputs), "--output", str(tmp_path / "out"), "--model", fake_model]) == 0
  summary = json.loads((tmp_path / "out" / SUMMARY_FILE).read_text())
  assert summary["counts"]["segmented"] == 2
  assert sorted(p.name for p in (tmp_path / "out" / MASKS_DIR).rglob("*.png")) == ["a.png.png", "b.png.png"]


def test_precision_default_comes_from_the_environment_and_a_bad_value_stops_the_run(
  capsys, monkeypatch, inputs, fake_model, tmp_path
):
  monkeypatch.setenv("DECONVSEG_PRECISION", "bf16")
  assert SegmentationOptions([]).view_as(SegmentationOptions).precision == "bf16"
  monkeypatch.setenv("DECONVSEG_PRECISION", "fp16")
  assert main(["--input", str(inputs / "*.png"), "--output", str(tmp_path / "out"), "--model", fake_model]) == 2
  err = capsys.readouterr().err
  assert "DECONVSEG_PRECISION='fp16' is not a precision: set one of auto, fp32, bf16, int8 or unset it." in err
  assert not (tmp_path / "out").exists()
