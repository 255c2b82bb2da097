"""The flag table (pipeline.options.OPTIONS) agrees with what reads it: argparse, RunConfig and summary.json."""

import dataclasses
from operator import attrgetter

from apache_beam.options.pipeline_options import _BeamArgumentParser

from pipeline.config import SUMMARY_OPTIONS, RunConfig, parsed_fields
from pipeline.options import OPTION, OPTIONS, SegmentationOptions
from transforms.imaging.polygons import PolygonSettings

# RunConfig fields no flag of SegmentationOptions fills (the card; the scheduling options' drift check).
NOT_FROM_THE_TABLE = {"card", "compare_to", "drift_threshold", "fail_on_drift"}


def _config(**changes):
  """A RunConfig whose every field holds a value of its own, so a wrong mapping shows."""
  values = {}
  for number, item in enumerate(dataclasses.fields(RunConfig)):
    values[item.name] = f"value-{number}"
  values["polygons"] = PolygonSettings(enabled=True, min_area=1.5, simplify=0.25, format="geoparquet")
  values["globs"], values["truth_globs"] = ("g1", "g2"), ("t",)
  values.update(changes)
  return RunConfig(**values)


def test_every_option_fills_a_runconfig_field_and_every_field_has_its_option():
  names = {item.name for item in dataclasses.fields(RunConfig)}
  filled = {option.fills.split(".")[0] for option in OPTIONS}
  assert filled | NOT_FROM_THE_TABLE == names
  config = _config()
  for option in OPTIONS:
    attrgetter(option.fills)(config)  # a dotted field exists inside its settings object


def test_the_table_is_what_argparse_registers_in_its_order():
  parser = _BeamArgumentParser(allow_abbrev=False, add_help=False)
  SegmentationOptions._add_argparse_args(parser)
  actions = [action for action in parser._actions if action.option_strings]
  assert [action.dest for action in actions] == [option.flag for option in OPTIONS]
  assert [action.option_strings for action in actions] == [["--" + option.flag] for option in OPTIONS]
  assert all(action.help == OPTION[action.dest].help for action in actions)


def test_parsed_fields_are_the_unresolved_options_as_parsed():
  opts = SegmentationOptions(["--tfrecord_key_feature", "k", "--batch_size", "3", "--overlays", "--no_report"])
  fields = parsed_fields(opts.view_as(SegmentationOptions))
  assert set(fields) == {option.fills for option in OPTIONS if not option.resolved}
  assert fields["key_feature"] == "k" and fields["batch_size"] == 3
  assert fields["overlays"] is True and fields["no_report"] is True and fields["skip_existing"] is False


def test_options_record_names_every_recorded_flag_once_with_its_value():
  assert len(set(SUMMARY_OPTIONS)) == len(SUMMARY_OPTIONS)
  assert set(SUMMARY_OPTIONS) == {option.flag for option in OPTIONS} - {"no_report"}
  record = _config().options_record()
  assert list(record) == list(SUMMARY_OPTIONS)
  assert record["input"] == ["g1", "g2"] and record["truth"] == ["t"]
  assert record["polygons"] is True and record["min_polygon_area"] == 1.5 and record["polygon_format"] == "geoparquet"
  assert record["model"] == _config().model_dir and record["tfrecord_image_feature"] == _config().image_feature
