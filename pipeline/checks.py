"""The checks that run before any work starts: ``validate`` turns the argv and parsed flags into a ``RunConfig``.

Cheapest first: unknown flags and bad values (``reject_unknown_flags``),
numbers out of range, the geo extra, the inputs and the output on their file
systems (``pipeline.paths``), then the model's card and what a fixed input
size does to tiling. Each failure is an ``OptionsError`` whose message says
how to fix the invocation.
"""

import argparse
import logging
import math
import os
from typing import Any, NoReturn, Sequence

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser
from apache_beam.runners.runner import create_runner

from pipeline.config import RunConfig, parsed_fields
from pipeline.errors import OptionsError
from pipeline.model_check import load_card
from pipeline.options import SegmentationOptions
from pipeline.paths import absolute, as_glob, check_truth, check_writable, is_local, matching_files
from transforms.imaging import geo
from transforms.imaging.polygons import PolygonSettings

_LOG = logging.getLogger(__name__)


class _StrictParser(_BeamArgumentParser):
  """Raises OptionsError instead of printing Beam's very long usage and exiting."""

  def error(self, message: str) -> NoReturn:
    raise OptionsError(f"{message}. Run with --help for this pipeline's flags.")


# Runners Beam has no short name for; DaskRunner is the project's corrected subclass of Beam's
# (pipeline/dask_runner.py).
RUNNER_ALIASES = {"DaskRunner": "pipeline.dask_runner.DaskRunner"}


def _import_runner(argv: Sequence[str]) -> None:
  """Imports the module of the ``--runner`` named, so its option group (e.g. ``DaskOptions``) registers.

  Beam defines a runner's options next to the runner, so ``--dask_client_address``
  exists only once ``apache_beam.runners.dask.dask_runner`` is imported.
  """
  runner_parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
  runner_parser.add_argument("--runner", default=None)
  name = runner_parser.parse_known_args(list(argv))[0].runner
  if not name:
    return
  name = RUNNER_ALIASES.get(name, name)
  try:
    create_runner(name)
  except ImportError as error:
    raise OptionsError(
      f"--runner={name} needs a package that is not installed ({error}); for Dask run "
      "pip install 'apache-beam[dask]' (or this project's [dask] extra)"
    ) from error
  except ValueError as error:
    raise OptionsError(f"--runner={name}: {error}") from error


def reject_unknown_flags(argv: Sequence[str]) -> None:
  """Bad values and unknown flags are errors (Beam itself only warns and drops unknown ones)."""
  own = _StrictParser(allow_abbrev=False, add_help=False)
  SegmentationOptions._add_argparse_args(own)
  own.parse_known_args(list(argv))
  # The project's other option groups register themselves on import; import them here so the
  # check does not depend on what the caller happened to import first.
  import pipeline.cloud.dataflow  # noqa: F401
  import pipeline.run_state  # noqa: F401
  import pipeline.schedule  # noqa: F401

  _import_runner(argv)
  parser = _StrictParser(allow_abbrev=False, add_help=False)
  seen: dict[str, Any] = {}
  pending = list(PipelineOptions.__subclasses__())
  while pending:
    cls = pending.pop()
    seen.setdefault(str(cls), cls)
    pending.extend(cls.__subclasses__())
  for cls in seen.values():
    cls._add_argparse_args(parser)
  _, unknown = parser.parse_known_args(list(argv))
  if unknown:
    hint = ""
    if any(not arg.startswith("-") for arg in unknown):
      hint = (
        " Values without a flag usually come from an unquoted glob that the shell expanded"
        " after a flag that takes one value; quote the pattern."
      )
    raise OptionsError(
      f"unrecognised argument(s): {' '.join(unknown)}.{hint} Run with --help for this pipeline's flags."
    )


def _check_number(name: str, value: float | None, low: float, high: float | None = None) -> None:
  if (
    value is None
    or (isinstance(value, float) and not math.isfinite(value))
    or value < low
    or (high is not None and value > high)
  ):
    bound = f"between {low} and {high}" if high is not None else f"at least {low}"
    raise OptionsError(f"--{name}={value} is out of range: it must be {bound}.")


def _check_geo_outputs(opts: SegmentationOptions) -> PolygonSettings:
  """--mask_format geotiff and --polygons need the geo extra; the polygon knobs need --polygons."""
  for name in ("min_polygon_area", "simplify"):
    value = getattr(opts, name)
    if not (math.isfinite(value) and value >= 0):
      raise OptionsError(f"--{name}={value} must be a number >= 0.")
    if value and not opts.polygons:
      raise OptionsError(f"--{name} only applies to polygons: add --polygons, or drop --{name}.")
  if opts.polygon_format != "geojson" and not opts.polygons:
    raise OptionsError("--polygon_format only applies to polygons: add --polygons, or drop --polygon_format.")
  wants = [
    flag for flag, on in (("--mask_format geotiff", opts.mask_format == "geotiff"), ("--polygons", opts.polygons)) if on
  ]
  if wants and not geo.available():
    raise OptionsError(
      f"{' and '.join(wants)} need the geo extra (rasterio, pyproj, shapely), which is not installed: {geo.GEO_EXTRA}"
    )
  return PolygonSettings(
    enabled=bool(opts.polygons),
    min_area=float(opts.min_polygon_area),
    simplify=float(opts.simplify),
    format=opts.polygon_format,
  )


def _given(argv: Sequence[str], flag: str) -> bool:
  return any(arg == flag or arg.startswith(flag + "=") for arg in argv)


def fixed_size_tiling(
  card: dict[str, Any], argv: Sequence[str], tile_size: int, overlap: int, whole_pixels: int
) -> tuple[int, int, int]:
  """(tile_size, overlap, whole_image_pixels) for a model that takes one fixed input size.

  A wrapped model with ``input_size`` [H, W] in its card cannot run a larger
  image whole: every image is tiled at min(H, W) (smaller images and edge
  tiles are padded up by the model itself). Flags the user gave are kept but
  checked; defaults are replaced and the run says so.
  """
  size = card.get("input_size")
  if not size:
    return tile_size, overlap, whole_pixels
  limit = min(int(v) for v in size)
  if _given(argv, "--tile_size"):
    if tile_size > limit:
      raise OptionsError(
        f"--tile_size={tile_size} is larger than the model's fixed input size {size[0]}x{size[1]} "
        f"(card.json input_size); use --tile_size {limit} or less."
      )
  else:
    tile_size = limit
  if not _given(argv, "--tile_overlap"):
    overlap = min(overlap, tile_size // 4)
  _check_number("tile_overlap", overlap, 0, tile_size // 2)
  if _given(argv, "--whole_image_pixels"):
    if whole_pixels > limit * limit:
      raise OptionsError(
        f"--whole_image_pixels={whole_pixels} would run images larger than the model's fixed "
        f"input size {size[0]}x{size[1]} whole; use --whole_image_pixels 0."
      )
  else:
    whole_pixels = 0
  _LOG.info(
    "The model takes a fixed %sx%s input: tiles of %d with overlap %d, no image runs whole.",
    size[0],
    size[1],
    tile_size,
    overlap,
  )
  return tile_size, overlap, whole_pixels


def _sources(opts: SegmentationOptions) -> dict[str, Any]:
  """The RunConfig's input fields, made absolute; at least one input must be given."""
  globs = tuple(as_glob(absolute(p)) for p in (opts.input or []))
  manifests = tuple(absolute(p) for p in (opts.manifest or []))
  tfrecords = tuple(absolute(p) for p in (opts.tfrecord or []))
  if not (globs or manifests or tfrecords):
    raise OptionsError(
      "no input given: pass --input 'DIR/*.png' (glob, local or gs://), "
      "--manifest FILE, or --tfrecord 'SHARDS-*.tfrecord'."
    )
  return {
    "globs": globs,
    "manifests": manifests,
    "tfrecords": tfrecords,
  }


def _check_sources_exist(sources: dict[str, Any], output: str) -> None:
  """Every --input and --tfrecord pattern matches files, every --manifest exists, and OUT is outside the inputs."""
  from transforms.read import glob_root

  for pattern in sources["globs"]:
    if not matching_files(pattern):
      raise OptionsError(
        f"--input {pattern!r} matches no files; check the path (and quote the pattern so the shell does not expand it)."
      )
    root = glob_root(pattern)
    if root and (output + "/").startswith(root):
      raise OptionsError(
        f"--output {output} is inside the input directory {root}: the next run would read "
        "the masks as inputs. Choose an output directory outside the input."
      )
  for manifest in sources["manifests"]:
    if not FileSystems.exists(manifest):
      raise OptionsError(f"--manifest {manifest} does not exist.")
  for pattern in sources["tfrecords"]:
    if not matching_files(pattern):
      raise OptionsError(f"--tfrecord {pattern!r} matches no files; check the path (and quote the pattern).")


def _check_model(argv: Sequence[str], opts: SegmentationOptions, whole_image_pixels: int) -> dict[str, Any]:
  """The RunConfig's model fields: its directory, its card, and the tiling the card allows."""
  model_dir = absolute(opts.model).rstrip("/")
  if is_local(model_dir) and not os.path.isdir(model_dir):
    raise OptionsError(
      f"--model {model_dir} is not a directory. Point it at an exported model "
      "(saved_model/ + card.json), or omit it to use the bundled model/default."
    )
  card = load_card(model_dir)
  tile_size, tile_overlap, whole_image_pixels = fixed_size_tiling(
    card, argv, opts.tile_size, opts.tile_overlap, whole_image_pixels
  )
  stride = int(card.get("stride", 1) or 1)
  if stride > 1 and (tile_size - tile_overlap) % stride:
    _LOG.warning(
      "tile_size - tile_overlap = %d is not a multiple of the model stride %d: tiles will not "
      "share the whole-image stride grid.",
      tile_size - tile_overlap,
      stride,
    )
  return {
    "model_dir": model_dir,
    "card": card,
    "tile_size": tile_size,
    "tile_overlap": tile_overlap,
    "whole_image_pixels": whole_image_pixels,
  }


def _check_tta(opts: SegmentationOptions, options: PipelineOptions) -> None:
  """``--tta flips`` runs on the OpenVINO engine, so GPU workers would idle (the engine rules are in model.engines)."""
  from pipeline.cloud.dataflow import DataflowGpuOptions

  if opts.tta == "flips" and options.view_as(DataflowGpuOptions).gpu_type:
    raise OptionsError(
      "--tta flips runs on the OpenVINO engine, on the workers' CPUs, so --gpu_type would pay for GPUs that stay "
      "idle: drop --gpu_type (CPU workers), or drop --tta."
    )


def validate(argv: Sequence[str], options: PipelineOptions) -> RunConfig:
  """All checks that can fail an invocation, cheapest first; returns the RunConfig.

  ``fields`` gathers the RunConfig's fields as each check passes.
  """
  reject_unknown_flags(argv)
  opts = options.view_as(SegmentationOptions)
  fields = _sources(opts)
  if not opts.output:
    raise OptionsError("no output given: pass --output DIR (local or gs://).")
  fields["output"] = output = absolute(opts.output).rstrip("/") or "/"

  _check_number("batch_size", opts.batch_size, 1, 4096)
  _check_number("tile_size", opts.tile_size, 16, 16384)
  _check_number("tile_overlap", opts.tile_overlap, 0, opts.tile_size // 2)
  _check_number("max_image_pixels", opts.max_image_pixels, 1)
  _check_number("windowed_read_mb", opts.windowed_read_mb, 0)
  whole_image_pixels = 4 * opts.tile_size**2 if opts.whole_image_pixels is None else opts.whole_image_pixels
  _check_number("whole_image_pixels", whole_image_pixels, 0, 64 * opts.tile_size**2)
  _check_number("png_compress_level", opts.png_compress_level, 0, 9)
  _check_number("engine_threads", opts.engine_threads, 0, 1024)
  fields.update(parsed_fields(opts))  # the fields that are a flag's value as parsed (pipeline.options.OPTIONS)
  _check_tta(opts, options)
  from pipeline.schedule import ScheduleOptions

  schedule = options.view_as(ScheduleOptions)
  if schedule.max_failure_fraction is not None:
    _check_number("max_failure_fraction", schedule.max_failure_fraction, 0.0, 1.0)
  from pipeline.run_state import RunStateOptions

  _check_number("lock_max_age_hours", options.view_as(RunStateOptions).lock_max_age_hours, 0.0)
  from pipeline.post_run import drift

  fields["drift_threshold"] = drift.check_threshold(schedule.drift_threshold)
  fields["fail_on_drift"] = schedule.fail_on_drift
  if schedule.compare_to is None and (schedule.fail_on_drift or schedule.drift_threshold is not None):
    raise OptionsError(
      "--drift_threshold and --fail_on_drift need --compare_to PREVIOUS_OUT (an earlier run's output to compare with)."
    )
  fields["polygons"] = _check_geo_outputs(opts)
  if opts.pixel_size is not None:
    if not (math.isfinite(opts.pixel_size) and opts.pixel_size > 0):
      raise OptionsError(
        f"--pixel_size={opts.pixel_size} must be a positive number (size of one pixel in {opts.pixel_unit})."
      )

  _check_sources_exist(fields, output)
  fields["truth_globs"] = tuple(as_glob(absolute(p)) for p in (opts.truth or []))
  check_truth(fields["truth_globs"])
  if is_local(output) and os.path.exists(output) and not os.path.isdir(output):
    raise OptionsError(f"--output {output} exists and is not a directory.")
  if is_local(output):
    check_writable(output)
  fields["compare_to"] = drift.check_compare_to(schedule.compare_to, output) if schedule.compare_to else None
  fields.update(_check_model(argv, opts, whole_image_pixels))
  return RunConfig(**fields)
