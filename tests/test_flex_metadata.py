"""The Flex Template metadata names exactly the pipeline's options, and each one parses."""

import json
import os
import subprocess
import sys

import pytest
from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser
from pipeline_helpers import REPO

from pipeline.cloud import flex_metadata

METADATA = os.path.join(REPO, "deploy", "flex_template", "metadata.json")


class _Strict(_BeamArgumentParser):
  def error(self, message):
    raise ValueError(message)


def _pipeline_parser():
  """A parser with every option the real entry point registers (pipeline.run and its imports)."""
  import pipeline.run  # noqa: F401  (registers the entry point's options classes)

  classes = {
    cls
    for cls in _all_subclasses(PipelineOptions)
    if cls.__module__.startswith("pipeline.") and "_add_argparse_args" in cls.__dict__
  }
  parser = _Strict(allow_abbrev=False, add_help=False)
  for cls in classes:
    cls._add_argparse_args(parser)
  return parser, classes


def _all_subclasses(cls):
  for sub in cls.__subclasses__():
    yield sub
    yield from _all_subclasses(sub)


def _samples(param):
  """Values to try for a parameter; booleans try both, as one of them is the default."""
  regexes = param.get("regexes", [])
  if regexes == ["^(true|false)$"]:
    return ["true", "false"]
  return [_sample(regexes)]


def _sample(regexes):
  if regexes and regexes[0].startswith("^(") and "|" in regexes[0]:
    return regexes[0][2:].split("|")[-1].rstrip(")$")
  if regexes == ["^-?[0-9]+$"]:
    return "3"
  if regexes:
    return "2.5"
  return "gs://bucket/some/value"


def test_committed_metadata_is_up_to_date():
  with open(METADATA, encoding="utf-8") as handle:
    committed = json.load(handle)
  assert committed == flex_metadata.metadata(), (
    "deploy/flex_template/metadata.json is stale: run "
    "python -m pipeline.cloud.flex_metadata > deploy/flex_template/metadata.json"
  )


def test_metadata_names_exactly_the_pipeline_options():
  parser, classes = _pipeline_parser()
  names = {cls.__name__ for cls in classes}
  assert {"SegmentationOptions", "DataflowGpuOptions", "ScheduleOptions"} <= names, names
  assert set(flex_metadata.project_options_classes()) == classes
  with open(METADATA, encoding="utf-8") as handle:
    params = json.load(handle)["parameters"]
  defaults = vars(parser.parse_args([]))
  covered = set()
  for param in params:
    # Flex Templates pass every parameter as --name=value.
    changes = []
    for value in _samples(param):
      argv = flex_metadata.flex_argv(["--%s=%s" % (param["name"], value)])
      parsed = vars(parser.parse_args(argv))
      changes.append({dest for dest, got in parsed.items() if got != defaults[dest]})
    changed = set().union(*changes)
    assert len(changed) == 1, (param["name"], changes)
    covered |= changed
  assert covered == set(defaults), "options without a metadata parameter: %s" % (set(defaults) - covered)
  assert len(params) == len(covered)


def test_every_parameter_has_help_and_output_is_required():
  params = flex_metadata.metadata()["parameters"]
  assert all(p["helpText"] and p["label"] for p in params)
  required = [p["name"] for p in params if not p["isOptional"]]
  assert required == ["output"]


def test_flex_argv_rewrites_switches_only():
  classes = flex_metadata.project_options_classes()
  argv = [
    "--skip_existing=true",
    "--overlays=false",
    "--no_install_gpu_driver=true",
    "--install_gpu_driver=false",
    "--output=gs://b/o",
    "--runner=DataflowRunner",
  ]
  switches = {
    flag
    for cls in classes
    for action in flex_metadata._actions(cls)
    if action.nargs == 0
    for flag in action.option_strings
  }
  expected = [
    a.split("=")[0] if a.split("=")[0] in switches and a.endswith("=true") else a
    for a in argv
    if not (a.split("=")[0] in switches and a.endswith("=false"))
  ]
  assert flex_metadata.flex_argv(argv, classes) == expected
  with pytest.raises(ValueError, match="takes true or false"):
    flex_metadata.flex_argv(["--no_install_gpu_driver=maybe"], classes)


def test_generator_runs_as_a_module():
  done = subprocess.run(
    [sys.executable, "-m", "pipeline.cloud.flex_metadata"], cwd=REPO, capture_output=True, text=True, timeout=120
  )
  assert done.returncode == 0, done.stderr
  assert json.loads(done.stdout) == flex_metadata.metadata()


def test_pipeline_entry_point_registers_every_options_class():
  """A fresh ``import pipeline.run`` must know the same options the template advertises.

  Beam only parses flags of imported PipelineOptions subclasses, so a class the
  entry point never imports would make its Flex Template parameters dead.
  """
  code = (
    "import json, pipeline.run\n"
    "from apache_beam.options.pipeline_options import PipelineOptions\n"
    "def subs(c):\n"
    "  for s in c.__subclasses__():\n"
    "    yield s\n"
    "    yield from subs(s)\n"
    "print(json.dumps(sorted({c.__name__ for c in subs(PipelineOptions)\n"
    "                         if c.__module__.startswith('pipeline.')})))\n"
  )
  done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stderr
  registered = set(json.loads(done.stdout))
  advertised = {cls.__name__ for cls in flex_metadata.project_options_classes()}
  assert advertised <= registered, (
    "pipeline.run does not import %s; add to pipeline/run.py: "
    "from pipeline.cloud.dataflow import DataflowGpuOptions, expand_dataflow_options and "
    "from pipeline.schedule import ScheduleOptions, fill_date_templates" % sorted(advertised - registered)
  )
