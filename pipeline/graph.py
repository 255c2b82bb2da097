"""The segmentation pipeline as one composite transform.

    read -> decode -> tile + RunInference -> stitch -> write masks -> statistics
                                                                   -> summary
    (every step's failures) ---------------------------------------> failures
    --truth files (stem -> URI) ------------- side input of write masks

Every input found ends in exactly one of the mask/statistics path or the
failures sink; ``summary.json`` counts both and is written after all other
outputs, so its presence marks a finished run.
"""

import time
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from model.engines import flips
from pipeline.config import RunConfig
from transforms import accounting
from transforms.decode import DecodeImages
from transforms.imaging.records import DONE, FAILED, new_run_id
from transforms.inference import SegmentationModelHandler, TileAndSegment
from transforms.model_runtime import SegmenterHandle
from transforms.read import ReadImages
from transforms.record_files import WriteFailures, WriteStats, write_summary
from transforms.sinks import SinkSettings, SkipExistingFn, WriteMasksFn
from transforms.statistics import (
  EVENT_FAILED,
  EVENT_READ,
  EVENT_REUSED,
  EVENT_SEGMENTED,
  EVENT_TRUTH_UNMATCHED,
  RunSummaryFn,
)
from transforms.stitch import StitchTiles
from transforms.truth import MatchTruth, UnmatchedTruth


def model_handler(
  config: RunConfig, handler_kwargs: dict[str, Any] | None = None, model: SegmenterHandle | None = None
) -> SegmentationModelHandler:
  """The inference handler; ``model`` is the start-up check's handle (``pipeline.model_check``), else a fresh one.

  Under ``--tta flips`` each engine call stacks four views of its tiles, so the pixel budget per call is quartered.
  """
  palette = [entry["color"] for entry in config.classes] if config.overlays else None
  return SegmentationModelHandler(
    model
    or SegmenterHandle(
      config.model_dir,
      config.engine,
      config.precision,
      config.mixed_precision,
      config.input_spec,
      config.engine_threads,
      tta=config.tta,
    ),
    num_classes=len(config.classes),
    max_batch_size=config.batch_size,
    palette=palette,
    pixel_budget=config.pixel_budget // (len(flips.VIEWS) if config.tta == "flips" else 1),
    **(handler_kwargs or {}),
  )


class CountEventsFn(beam.DoFn):
  """Tags each element as a summary event and counts it in Beam metrics (images_<kind>)."""

  def __init__(self, kind: str):
    self._kind = kind
    self._counter = Metrics.counter(accounting.NAMESPACE, f"images_{kind}")

  def process(self, element: Any) -> Iterator[Any]:
    self._counter.inc()
    yield self._kind, element


def match_truth(pbegin: Any, refs: Any, patterns: tuple[str, ...]) -> tuple[Any, list[Any]]:
  """--truth: the {stem: truth URI} side input of the steps that hold masks, and the unmatched-file events.

  Only paths travel to those steps; each comparison happens there, and just
  the per-image numbers travel on in the records. Without --truth: {} and no events.
  """
  if not patterns:
    return {}, []
  truth = pbegin | "MatchTruth" >> MatchTruth(patterns)
  unmatched = refs | "UnmatchedTruth" >> UnmatchedTruth(truth)
  return beam.pvalue.AsDict(truth), [
    unmatched | "UnmatchedTruthEvents" >> beam.ParDo(CountEventsFn(EVENT_TRUTH_UNMATCHED))
  ]


def skip_existing(refs: Any, truth_side: Any, settings: SinkSettings) -> tuple[Any, list[Any], list[Any]]:
  """--skip_existing: (the refs still to segment, [the reused records], [their failures]); else (refs, [], [])."""
  checked = refs | "SkipExisting" >> beam.ParDo(SkipExistingFn(settings), truth_side).with_outputs(
    DONE, FAILED, main="todo"
  )
  return checked.todo, [checked[DONE]], [checked[FAILED]]


def write_masks(mask_streams: list[Any], truth_side: Any, settings: SinkSettings) -> tuple[list[Any], list[Any]]:
  """(records, failures) of writing each mask stream, whole-image and stitched (``StitchTiles``)."""
  write = WriteMasksFn(settings)
  written = [
    masks | f"WriteMasks{kind}" >> beam.ParDo(write, truth_side).with_outputs(FAILED, main="records")
    for kind, masks in zip(("Whole", "Stitched"), mask_streams)
  ]
  return [w.records for w in written], [w[FAILED] for w in written]


def count_events(input_uris: Any, records: Any, failures: Any, reused: list[Any]) -> list[Any]:
  """The summary's event streams: inputs read, records (segmented), failures and records reused."""
  streams = [
    input_uris | "ReadEvents" >> beam.ParDo(CountEventsFn(EVENT_READ)),
    records | "SegmentedEvents" >> beam.ParDo(CountEventsFn(EVENT_SEGMENTED)),
    failures | "FailedEvents" >> beam.ParDo(CountEventsFn(EVENT_FAILED)),
  ]
  if reused:
    streams.append(reused[0] | "ReusedEvents" >> beam.ParDo(CountEventsFn(EVENT_REUSED)))
  return streams


class SegmentImages(beam.PTransform):
  """Composite: PBegin -> the summary dict (one element) after writing all outputs."""

  def __init__(
    self,
    config: RunConfig,
    start_time: str | None = None,
    handler_kwargs: dict[str, Any] | None = None,
    model: SegmenterHandle | None = None,
    run_id: str | None = None,
  ):
    super().__init__()
    self._config = config
    self._handler_kwargs = handler_kwargs
    self._model = model
    self._start_time = start_time or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    # the launcher's, as in OUT/run_state.json: ties summary.json and the record files to their run
    self._run_id = run_id or new_run_id()

  def expand(self, pbegin: Any) -> Any:
    config, sinks = self._config, self._config.sink_settings()
    refs, read_failures, input_uris = pbegin | "ReadInputs" >> ReadImages(
      config.globs, config.manifests, config.tfrecords, config.image_feature, config.key_feature
    )
    truth_side, truth_events = match_truth(pbegin, refs, config.truth_globs)
    reused: list[Any] = []
    skip_failures: list[Any] = []
    if config.skip_existing:
      refs, reused, skip_failures = skip_existing(refs, truth_side, sinks)

    images, decode_failures = refs | "Decode" >> DecodeImages(config.decode_settings())
    tile_results = images | "TileAndInfer" >> TileAndSegment(
      model_handler(config, self._handler_kwargs, self._model),
      config.tile_size,
      config.tile_overlap,
      config.whole_image_pixels,
    )
    mask_streams, inference_failures = tile_results | "Stitch" >> StitchTiles()
    written, write_failures = write_masks(mask_streams, truth_side, sinks)

    records = written + reused | "AllRecords" >> beam.Flatten()
    failure_streams = [read_failures, decode_failures, inference_failures] + write_failures + skip_failures
    failures = failure_streams | "AllFailures" >> beam.Flatten()
    stats_files = records | "WriteStats" >> WriteStats(
      config.output, config.stats_format, config.classes, truth=bool(config.truth_globs), run_id=self._run_id
    )
    failure_files = failures | "WriteFailures" >> WriteFailures(config.output, self._run_id)
    events = count_events(input_uris, records, failures, reused) + truth_events | "AllEvents" >> beam.Flatten()
    return self._summarise(events, stats_files, failure_files)

  def _summarise(self, events: Any, stats_files: Any, failure_files: Any) -> Any:
    """The run's counts and totals from its events, written as OUT/summary.json once every other output exists."""
    config = self._config
    run_info = {
      "model": dict(config.model_info, card=config.card),
      "engine": self._model.description if self._model is not None else None,
      "options": config.options_record(),
      "start_time": self._start_time,
      "run_id": self._run_id,
    }
    return (
      events
      | "Summarise"
      >> beam.CombineGlobally(RunSummaryFn(config.classes, config.truth_globs, config.ood_rule.describe()))
      | "WriteSummary"
      >> beam.Map(
        write_summary, config.output, run_info, beam.pvalue.AsList(stats_files), beam.pvalue.AsList(failure_files)
      )
    )
