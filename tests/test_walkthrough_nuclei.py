"""The README's walkthrough on the real nuclei image, command by command, with a shortened training run.

The commands are read from the README itself (section "Walkthrough: ...")
and run in order through each module's ``main``: nuclei_data, make_splits,
check_data, train, export with evaluation, then the pipeline with its
report. Only training is shortened (a narrow network for two short epochs),
so this proves the road works end to end, not the IoU target, which
docs/OWN_DATA.md records from the full run.
"""

import json
import os

import pytest
from model_commands import command_module
from pipeline_helpers import check_accounting, read_mask, read_outputs
from test_readme import WALKTHROUGH, readme_commands

from pipeline.run import run
from transforms.imaging.records import REPORT_FILE

SHORT_TRAINING = [
  "--width",
  "8",
  "--image_size",
  "64",
  "--epochs",
  "2",
  "--min_steps_per_epoch",
  "10",
  "--verbose",
  "0",
]


@pytest.mark.slow
def test_readme_walkthrough_from_package_data_to_report(tmp_path):
  block = [argv for section, argv in readme_commands() if section == WALKTHROUGH]
  assert [argv[0] for argv in block] == [".venv/bin/pip"] + [".venv/bin/python"] * 5 + ["./run_pipeline.sh"]
  assert [argv[2] for argv in block[1:-1]] == [
    "model.nuclei_data",
    "model.make_splits",
    "model.check_data",
    "model.train",
    "model.export",
  ]

  def adapt(args):
    return [str(tmp_path / arg) if arg.split("/")[0] in ("data", "runs", "models", "results") else arg for arg in args]

  for argv in block[1:-1]:
    module, args = argv[2], adapt(argv[3:])
    if module == "model.train":
      args += SHORT_TRAINING
    assert command_module(module).main(args) in (0, None), argv

  model_dir = str(tmp_path / "models" / "nuclei")
  with open(os.path.join(model_dir, "card.json")) as handle:
    card = json.load(handle)
  assert (card["input"]["dtype"], card["input"]["channels"], card["input"]["color"]) == ("uint16", 1, "grey")
  assert set(card["metrics"]["test"]["per_class_iou"]) == {"background", "nucleus"}

  run(adapt(block[-1][1:]) + ["--runner", "FnApiRunner"], save_main_session=False)
  out = str(tmp_path / "results" / "nuclei")
  summary, records, failures = read_outputs(out)
  check_accounting(summary, records, failures, expected_read=4)
  assert [entry["name"] for entry in summary["classes"]] == ["background", "nucleus"]
  for key in records:
    assert read_mask(out, key).shape == (128, 128)
  with open(os.path.join(out, REPORT_FILE)) as handle:
    assert "nucleus" in handle.read()
