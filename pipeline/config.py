"""What the pipeline's flags resolve to: ``RunConfig``, built by ``pipeline.checks.validate``.

Which flag fills which field is the table's to say (``pipeline.options.OPTIONS``):
``parsed_fields`` takes the fields that are a flag's value as parsed, and
``RunConfig.options_record`` turns the fields back into the options that
summary.json records, under their flags' names.

The steps do not take the ``RunConfig`` (``transforms`` may not import
``pipeline``): each takes its own small frozen settings object, defined
beside it in ``transforms`` and built here (``decode_settings``,
``sink_settings``).
"""

from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.options import OPTION, OPTIONS
from transforms.decode import DecodeSettings
from transforms.imaging.input_spec import InputSpec
from transforms.imaging.ood import OodRule
from transforms.imaging.polygons import PolygonSettings
from transforms.sinks import SinkSettings

# The flags summary.json's "options" records, in its order (--no_report is not recorded).
SUMMARY_OPTIONS = (
  "input",
  "manifest",
  "tfrecord",
  "tfrecord_image_feature",
  "tfrecord_key_feature",
  "output",
  "model",
  "batch_size",
  "tile_size",
  "tile_overlap",
  "whole_image_pixels",
  "stats_format",
  "pixel_size",
  "pixel_unit",
  "overlays",
  "max_image_pixels",
  "windowed_read_mb",
  "engine",
  "precision",
  "engine_threads",
  "mixed_precision",
  "tta",
  "skip_existing",
  "png_compress_level",
  "mask_format",
  "polygons",
  "min_polygon_area",
  "simplify",
  "polygon_format",
  "truth",
)


def parsed_fields(opts: PipelineOptions) -> dict[str, Any]:
  """The ``RunConfig`` fields that are their flag's value as parsed (the options not ``resolved``)."""
  return {option.fills: getattr(opts, option.flag) for option in OPTIONS if not option.resolved}


@dataclass(frozen=True)
class RunConfig:
  """Everything the graph needs, resolved and checked (``pipeline.checks.validate``; each flag's field: ``OPTIONS``)."""

  globs: tuple[str, ...]
  manifests: tuple[str, ...]
  tfrecords: tuple[str, ...]
  image_feature: str
  key_feature: str
  output: str
  model_dir: str
  card: dict[str, Any] = field(hash=False)
  batch_size: int
  tile_size: int
  tile_overlap: int
  whole_image_pixels: int
  stats_format: str
  pixel_size: float | None
  pixel_unit: str
  overlays: bool
  max_image_pixels: int
  windowed_read_mb: int
  engine: str
  precision: str
  engine_threads: int
  mixed_precision: bool
  tta: str
  skip_existing: bool
  no_report: bool
  png_compress_level: int
  mask_format: str
  polygons: PolygonSettings
  truth_globs: tuple[str, ...]
  compare_to: str | None = None  # an earlier run to measure drift against (None: not given or not there)
  drift_threshold: float = 0.05
  fail_on_drift: bool = False

  @property
  def classes(self) -> list[dict[str, Any]]:
    return list(self.card["classes"])

  @property
  def input_spec(self) -> InputSpec:
    """What the model takes (card["input"]): decoding and inference both follow it."""
    return InputSpec.from_card(self.card)

  @property
  def ood_rule(self) -> OodRule:
    """The out-of-distribution check's thresholds, from the card (``transforms.imaging.ood``)."""
    return OodRule.from_card(self.card)

  @property
  def model_info(self) -> dict[str, Any]:
    return {"name": self.card.get("name"), "version": self.card.get("version"), "path": self.model_dir}

  @property
  def pixel_budget(self) -> int:
    """Pixels of one full batch of tiles: --batch_size tiles of --tile_size squared."""
    return self.batch_size * self.tile_size**2

  def options_record(self) -> dict[str, Any]:
    """The options as recorded in summary.json: each flag's value as resolved, lists for tuples."""
    record = {}
    for flag in SUMMARY_OPTIONS:
      value = attrgetter(OPTION[flag].fills)(self)
      record[flag] = list(value) if isinstance(value, tuple) else value
    return record

  def decode_settings(self) -> DecodeSettings:
    """What the Decode step takes: two batches of images decoded ahead (at most two batches' pixels)."""
    return DecodeSettings(
      self.max_image_pixels,
      prefetch=2 * self.batch_size,
      prefetch_pixels=2 * self.pixel_budget,
      spec=self.input_spec,
      ood_range=self.ood_rule.range,
      windowed_bytes=self.windowed_read_mb << 20,
    )

  def sink_settings(self) -> SinkSettings:
    """What the per-image sinks take: masks written up to one batch (one batch's pixels) behind."""
    return SinkSettings(
      self.output,
      self.classes,
      self.model_info,
      pixel_size=self.pixel_size,
      pixel_unit=self.pixel_unit,
      compress_level=self.png_compress_level,
      mask_format=self.mask_format,
      polygons=self.polygons,
      overlays=self.overlays,
      truth=bool(self.truth_globs),
      ood_rule=self.ood_rule,
      write_ahead=self.batch_size,
      write_ahead_pixels=self.pixel_budget,
    )
