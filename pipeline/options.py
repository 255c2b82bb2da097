"""The pipeline's own flags and the checks that run before any work starts.

``SegmentationOptions`` is an ordinary Beam ``PipelineOptions`` subclass, so
the flags travel to Dataflow workers with the rest. ``validate`` turns the
parsed flags into a ``RunConfig`` (absolute paths, the model card) or raises
``OptionsError`` whose message says how to fix the invocation; ``run.main``
prints it without a traceback and exits with status 2.
"""

import argparse
import logging
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser
from apache_beam.runners.runner import create_runner

from pipeline.errors import OptionsError
from pipeline.model_check import load_card
from transforms import geo
from transforms.input_spec import InputSpec
from transforms.mask_files import MASK_FORMATS
from transforms.ood import OodRule
from transforms.polygons import PolygonSettings

_LOG = logging.getLogger(__name__)
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODEL_DIR = os.path.join(REPO_ROOT, "model", "default")
STATS_FORMATS = ("jsonl", "csv", "parquet")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


class SegmentationOptions(PipelineOptions):
  """Flags of the deconvseg segmentation pipeline."""

  @classmethod
  def _add_argparse_args(cls, parser):
    parser.add_argument(
      "--input",
      nargs="+",
      action="extend",
      default=None,
      metavar="GLOB",
      help="Image files to segment: one or more glob patterns, files or directories (all files "
      "below), local or gs:// (PNG, JPEG, TIFF, BMP, WebP, GIF). Quote patterns so Beam, not the "
      "shell, expands them. Output keys are paths relative to the directory before the first "
      "wildcard.",
    )
    parser.add_argument(
      "--manifest",
      nargs="+",
      action="extend",
      default=None,
      metavar="FILE",
      help="Text file(s) listing one image URI per line (blank lines and # comments ignored; "
      "relative entries are relative to the manifest's directory).",
    )
    parser.add_argument(
      "--tfrecord",
      nargs="+",
      action="extend",
      default=None,
      metavar="GLOB",
      help="TFRecord shard(s) of tf.train.Example (glob; .gz shards are decompressed). "
      "A corrupt record becomes a failure record; the rest of the shard is still read.",
    )
    parser.add_argument(
      "--tfrecord_image_feature",
      default="image/encoded",
      help="bytes feature holding the encoded image in each Example (default: image/encoded).",
    )
    parser.add_argument(
      "--tfrecord_key_feature",
      default="image/key",
      help="feature naming the record's output key (default: image/key); records without it are keyed <shard>/<index>.",
    )
    parser.add_argument(
      "--output",
      default=None,
      metavar="DIR",
      help="Output directory, local or gs://: masks/, stats/, failures/, summary.json "
      "(and overlays/). Must not be inside an input directory.",
    )
    parser.add_argument(
      "--model",
      default=DEFAULT_MODEL_DIR,
      metavar="DIR",
      help="Exported model directory (saved_model/ + card.json), local or gs://. Default: the bundled model/default.",
    )
    parser.add_argument(
      "--batch_size",
      type=int,
      default=8,
      help="Maximum tiles per inference call (default 8). Tiles from different images share batches.",
    )
    parser.add_argument(
      "--tile_size",
      type=int,
      default=512,
      help="Edge of the square tiles large images are cut into (default 512; see --whole_image_pixels). "
      "Make tile_size - tile_overlap a multiple of the model stride to keep tiles on its grid.",
    )
    parser.add_argument(
      "--whole_image_pixels",
      type=int,
      default=None,
      help="Images with at most this many pixels run whole at their native size (exactly whole-image "
      "inference, batched with same-sized images); larger ones are tiled. Default 4 x tile_size^2.",
    )
    parser.add_argument(
      "--tile_overlap",
      type=int,
      default=64,
      help="Overlap between neighbouring tiles in pixels (default 64). Each output pixel comes "
      "from the tile whose centre region holds it (boundaries at the middle of overlaps), "
      "so every pixel keeps at least overlap/2 pixels of context.",
    )
    parser.add_argument(
      "--stats_format",
      choices=STATS_FORMATS,
      default="jsonl",
      help="Per-image statistics format under OUT/stats/: jsonl (default), csv or parquet.",
    )
    parser.add_argument(
      "--pixel_size",
      type=float,
      default=None,
      metavar="UNITS",
      help="Ground size of one pixel (square) in --pixel_unit, to report class areas of images "
      "without a CRS (it overrides a GeoTIFF's geotransform or ModelPixelScale tag that has no CRS; "
      "a GeoTIFF with a CRS always gets areas in m^2 from its CRS). Without either, areas are left empty.",
    )
    parser.add_argument(
      "--pixel_unit",
      default="m",
      help="Unit of --pixel_size and of GeoTIFF pixel scales (default m; areas are in unit^2).",
    )
    parser.add_argument(
      "--mask_format",
      choices=MASK_FORMATS,
      default="auto",
      help="Mask files: auto (default) writes OUT/masks/<key>.tif, a Cloud-Optimized GeoTIFF with the "
      "input's CRS and geotransform, for georeferenced inputs (GeoTIFFs) and a palette PNG for the rest; "
      "png or geotiff force one format. GeoTIFF needs the geo extra.",
    )
    parser.add_argument(
      "--polygons",
      action="store_true",
      default=False,
      help="Also write OUT/polygons/<key>.geojson: one feature per connected region with class id, name "
      "and area, in the image's CRS (pixel coordinates for images without one). Needs the geo extra.",
    )
    parser.add_argument(
      "--min_polygon_area",
      type=float,
      default=0.0,
      metavar="AREA",
      help="With --polygons: leave out regions smaller than this, in the polygons' area unit (m^2 for "
      "images with a CRS, --pixel_unit^2 with --pixel_size, else pixels). Default 0: keep all.",
    )
    parser.add_argument(
      "--simplify",
      type=float,
      default=0.0,
      metavar="TOLERANCE",
      help="With --polygons: simplify polygon edges with this tolerance in CRS units (pixels without "
      "a CRS), keeping neighbouring polygons' shared edges together. Default 0: exact pixel edges.",
    )
    parser.add_argument(
      "--overlays",
      action="store_true",
      default=False,
      help="Also write OUT/overlays/<key>.png: the image mixed 50/50 with the class colours.",
    )
    parser.add_argument(
      "--max_image_pixels",
      type=int,
      default=150_000_000,
      help="Refuse images with more pixels than this (default 150000000, checked on the header "
      "before decoding: guards against decompression bombs and worker memory).",
    )
    parser.add_argument(
      "--mixed_precision",
      action="store_true",
      default=False,
      help="Use the model's serving_mixed_float16 signature (GPUs with tensor cores; slower on CPU).",
    )
    parser.add_argument(
      "--skip_existing",
      action="store_true",
      default=False,
      help="Do not recompute images whose mask from the same model already exists in OUT "
      "(their statistics are read back from the mask; with --overlays, their overlay must "
      "exist too); for resuming an interrupted run.",
    )
    parser.add_argument(
      "--truth",
      nargs="+",
      action="extend",
      default=None,
      metavar="GLOB",
      help="Ground-truth masks to score the run against: one or more glob patterns, local or gs:// "
      "(single-channel class ids, palette indices count, 255 = ignore). A truth file belongs to the "
      "image whose key without extension equals the file's path relative to the directory before "
      "the pattern's first wildcard, without extension ('truth/**/*.png' file truth/a/b.png scores "
      "key a/b.jpg). Adds 'truth' to each stats record and to summary.json; a truth mask of another "
      "size fails its image at stage 'truth'.",
    )
    parser.add_argument(
      "--png_compress_level",
      type=int,
      default=6,
      help="zlib level 0-9 for mask PNGs (default 6). Masks use zlib's run-length strategy, for which "
      "levels 1-9 give nearly the same size and speed; 0 stores them uncompressed.",
    )


@dataclass(frozen=True)
class RunConfig:
  """Everything the graph needs, resolved and checked."""

  globs: Tuple[str, ...]
  manifests: Tuple[str, ...]
  tfrecords: Tuple[str, ...]
  image_feature: str
  key_feature: str
  output: str
  model_dir: str
  card: dict = field(hash=False)
  batch_size: int = 8
  tile_size: int = 512
  tile_overlap: int = 64
  whole_image_pixels: int = 4 * 512 * 512
  stats_format: str = "jsonl"
  pixel_size: Optional[float] = None
  pixel_unit: str = "m"
  overlays: bool = False
  max_image_pixels: int = 150_000_000
  mixed_precision: bool = False
  skip_existing: bool = False
  png_compress_level: int = 6
  mask_format: str = "auto"
  polygons: PolygonSettings = PolygonSettings()
  truth_globs: Tuple[str, ...] = ()
  compare_to: Optional[str] = None  # an earlier run to measure drift against (None: not given or not there)
  drift_threshold: float = 0.05
  fail_on_drift: bool = False

  @property
  def classes(self) -> List[dict]:
    return list(self.card["classes"])

  @property
  def input_spec(self) -> InputSpec:
    """What the model takes (card["input"]): decoding and inference both follow it."""
    return InputSpec.from_card(self.card)

  @property
  def ood_rule(self) -> OodRule:
    """The out-of-distribution check's thresholds, from the card (``transforms.ood``)."""
    return OodRule.from_card(self.card)

  @property
  def model_info(self) -> dict:
    return {"name": self.card.get("name"), "version": self.card.get("version"), "path": self.model_dir}

  def options_record(self) -> dict:
    """The options as recorded in summary.json."""
    return {
      "input": list(self.globs),
      "manifest": list(self.manifests),
      "tfrecord": list(self.tfrecords),
      "tfrecord_image_feature": self.image_feature,
      "tfrecord_key_feature": self.key_feature,
      "output": self.output,
      "model": self.model_dir,
      "batch_size": self.batch_size,
      "tile_size": self.tile_size,
      "tile_overlap": self.tile_overlap,
      "whole_image_pixels": self.whole_image_pixels,
      "stats_format": self.stats_format,
      "pixel_size": self.pixel_size,
      "pixel_unit": self.pixel_unit,
      "overlays": self.overlays,
      "max_image_pixels": self.max_image_pixels,
      "mixed_precision": self.mixed_precision,
      "skip_existing": self.skip_existing,
      "png_compress_level": self.png_compress_level,
      "mask_format": self.mask_format,
      "polygons": self.polygons.enabled,
      "min_polygon_area": self.polygons.min_area,
      "simplify": self.polygons.simplify,
      "truth": list(self.truth_globs),
    }


def help_parser(prog: str = "python -m pipeline.run") -> _BeamArgumentParser:
  """A parser with only this pipeline's flags, for --help."""
  parser = _BeamArgumentParser(
    prog=prog,
    allow_abbrev=False,
    description="Segment images into class masks with per-class statistics (Apache Beam).",
    epilog="Any Apache Beam pipeline option is accepted as well, e.g. --runner, "
    "--direct_running_mode=multi_processing --direct_num_workers=N, or the Dataflow options. "
    "Without --runner, runs use Beam's in-process FnApiRunner (DirectRunner in Beam 2.77 tries "
    "to download the Prism runner on every run; pass --runner=DirectRunner to get it anyway).",
  )
  SegmentationOptions._add_argparse_args(parser)  # pylint: disable=protected-access
  from pipeline.dataflow import DataflowGpuOptions  # pylint: disable=import-outside-toplevel
  from pipeline.schedule import ScheduleOptions  # pylint: disable=import-outside-toplevel

  ScheduleOptions._add_argparse_args(  # pylint: disable=protected-access
    parser.add_argument_group("scheduling (nightly runs)")
  )
  DataflowGpuOptions._add_argparse_args(  # pylint: disable=protected-access
    parser.add_argument_group("Dataflow GPU workers (with --runner=DataflowRunner)")
  )
  return parser


class _StrictParser(_BeamArgumentParser):
  """Raises OptionsError instead of printing Beam's very long usage and exiting."""

  def error(self, message):
    raise OptionsError(f"{message}. Run with --help for this pipeline's flags.")


# Runners Beam has no short name for; DaskRunner is the project's corrected subclass of Beam's (pipeline/dask_runner.py).
RUNNER_ALIASES = {"DaskRunner": "pipeline.dask_runner.DaskRunner"}


def _import_runner(argv: Sequence[str]):
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


def reject_unknown_flags(argv: Sequence[str]):
  """Bad values and unknown flags are errors (Beam itself only warns and drops unknown ones)."""
  own = _StrictParser(allow_abbrev=False, add_help=False)
  SegmentationOptions._add_argparse_args(own)  # pylint: disable=protected-access
  own.parse_known_args(list(argv))
  # The project's other option groups register themselves on import; import them here so the
  # check does not depend on what the caller happened to import first.
  import pipeline.dataflow  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  import pipeline.schedule  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import

  _import_runner(argv)
  parser = _StrictParser(allow_abbrev=False, add_help=False)
  seen = {}
  pending = list(PipelineOptions.__subclasses__())
  while pending:
    cls = pending.pop()
    seen.setdefault(str(cls), cls)
    pending.extend(cls.__subclasses__())
  for cls in seen.values():
    cls._add_argparse_args(parser)  # pylint: disable=protected-access
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


def _is_local(path: str) -> bool:
  return not _SCHEME.match(path)


def _absolute(path: str) -> str:
  return os.path.abspath(os.path.expanduser(path)) if _is_local(path) else path


def _as_glob(path: str) -> str:
  """A directory given as --input means every file below it."""
  if path.endswith("/") or (_is_local(path) and os.path.isdir(path)):
    return path.rstrip("/") + "/**"
  return path


def _matching_files(pattern: str) -> List[str]:
  try:
    results = FileSystems.match([pattern])
  except Exception as exc:  # pylint: disable=broad-except
    raise OptionsError(f"cannot list {pattern!r}: {exc}") from None
  paths = [m.path for result in results for m in result.metadata_list]
  if _is_local(pattern):
    paths = [p for p in paths if os.path.isfile(p)]
  return paths


def _check_writable(output: str):
  """A local --output must be creatable and writable, or the run would fail after start-up with a traceback.

  Tries a temporary directory in the output (or its nearest existing parent)
  and removes it again, so a refused invocation leaves nothing behind.
  """
  existing = output
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  try:
    shutil.rmtree(tempfile.mkdtemp(prefix=".deconvseg-write-check-", dir=existing))
  except OSError as exc:
    raise OptionsError(
      f"cannot write to --output {output}: {exc.strerror or exc} (in {existing}). Choose a directory you can write to."
    ) from None


def _check_number(name, value, low, high=None):
  if (
    value is None
    or (isinstance(value, float) and not math.isfinite(value))
    or value < low
    or (high is not None and value > high)
  ):
    bound = f"between {low} and {high}" if high is not None else f"at least {low}"
    raise OptionsError(f"--{name}={value} is out of range: it must be {bound}.")


def _check_truth(patterns: Sequence[str]):
  """Every --truth pattern matches files, and no two truth files claim the same image."""
  from transforms.truth import truth_stem  # pylint: disable=import-outside-toplevel

  seen = {}
  for pattern in patterns:
    paths = _matching_files(pattern)
    if not paths:
      raise OptionsError(
        f"--truth {pattern!r} matches no files; check the path (and quote the pattern so the shell does not expand it)."
      )
    for path in paths:
      stem = truth_stem(path, pattern)
      if seen.setdefault(stem, path) != path:
        raise OptionsError(
          f"--truth files {seen[stem]} and {path} both match images keyed {stem!r} (keys are "
          "compared without extension); keep one truth mask per image."
        )


def _check_geo_outputs(opts) -> PolygonSettings:
  """--mask_format geotiff and --polygons need the geo extra; the polygon knobs need --polygons."""
  for name in ("min_polygon_area", "simplify"):
    value = getattr(opts, name)
    if not (math.isfinite(value) and value >= 0):
      raise OptionsError(f"--{name}={value} must be a number >= 0.")
    if value and not opts.polygons:
      raise OptionsError(f"--{name} only applies to polygons: add --polygons, or drop --{name}.")
  wants = [
    flag for flag, on in (("--mask_format geotiff", opts.mask_format == "geotiff"), ("--polygons", opts.polygons)) if on
  ]
  if wants and not geo.available():
    raise OptionsError(
      f"{' and '.join(wants)} need the geo extra (rasterio, pyproj, shapely), which is not installed: {geo.GEO_EXTRA}"
    )
  return PolygonSettings(
    enabled=bool(opts.polygons), min_area=float(opts.min_polygon_area), simplify=float(opts.simplify)
  )


def _given(argv: Sequence[str], flag: str) -> bool:
  return any(arg == flag or arg.startswith(flag + "=") for arg in argv)


def fixed_size_tiling(card: dict, argv: Sequence[str], tile_size: int, overlap: int, whole_pixels: int):
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


def validate(argv: Sequence[str], options: PipelineOptions) -> RunConfig:
  """All checks that can fail an invocation, cheapest first; returns the RunConfig."""
  reject_unknown_flags(argv)
  opts = options.view_as(SegmentationOptions)
  globs = tuple(_as_glob(_absolute(p)) for p in (opts.input or []))
  manifests = tuple(_absolute(p) for p in (opts.manifest or []))
  tfrecords = tuple(_absolute(p) for p in (opts.tfrecord or []))
  if not (globs or manifests or tfrecords):
    raise OptionsError(
      "no input given: pass --input 'DIR/*.png' (glob, local or gs://), "
      "--manifest FILE, or --tfrecord 'SHARDS-*.tfrecord'."
    )
  if not opts.output:
    raise OptionsError("no output given: pass --output DIR (local or gs://).")
  output = _absolute(opts.output).rstrip("/") or "/"

  _check_number("batch_size", opts.batch_size, 1, 4096)
  _check_number("tile_size", opts.tile_size, 16, 16384)
  _check_number("tile_overlap", opts.tile_overlap, 0, opts.tile_size // 2)
  _check_number("max_image_pixels", opts.max_image_pixels, 1)
  whole_image_pixels = 4 * opts.tile_size**2 if opts.whole_image_pixels is None else opts.whole_image_pixels
  _check_number("whole_image_pixels", whole_image_pixels, 0, 64 * opts.tile_size**2)
  _check_number("png_compress_level", opts.png_compress_level, 0, 9)
  from pipeline.schedule import ScheduleOptions  # pylint: disable=import-outside-toplevel

  schedule = options.view_as(ScheduleOptions)
  if schedule.max_failure_fraction is not None:
    _check_number("max_failure_fraction", schedule.max_failure_fraction, 0.0, 1.0)
  from pipeline import drift  # pylint: disable=import-outside-toplevel

  drift_threshold = drift.check_threshold(schedule.drift_threshold)
  if schedule.compare_to is None and (schedule.fail_on_drift or schedule.drift_threshold is not None):
    raise OptionsError(
      "--drift_threshold and --fail_on_drift need --compare_to PREVIOUS_OUT (an earlier run's output to compare with)."
    )
  polygons = _check_geo_outputs(opts)
  if opts.pixel_size is not None:
    if not (math.isfinite(opts.pixel_size) and opts.pixel_size > 0):
      raise OptionsError(
        f"--pixel_size={opts.pixel_size} must be a positive number (size of one pixel in {opts.pixel_unit})."
      )

  from transforms.read import glob_root  # pylint: disable=import-outside-toplevel

  for pattern in globs:
    if not _matching_files(pattern):
      raise OptionsError(
        f"--input {pattern!r} matches no files; check the path (and quote the pattern so the shell does not expand it)."
      )
    root = glob_root(pattern)
    if root and (output + "/").startswith(root):
      raise OptionsError(
        f"--output {output} is inside the input directory {root}: the next run would read "
        "the masks as inputs. Choose an output directory outside the input."
      )
  for manifest in manifests:
    if not FileSystems.exists(manifest):
      raise OptionsError(f"--manifest {manifest} does not exist.")
  for pattern in tfrecords:
    if not _matching_files(pattern):
      raise OptionsError(f"--tfrecord {pattern!r} matches no files; check the path (and quote the pattern).")
  truth_globs = tuple(_as_glob(_absolute(p)) for p in (opts.truth or []))
  _check_truth(truth_globs)
  if _is_local(output) and os.path.exists(output) and not os.path.isdir(output):
    raise OptionsError(f"--output {output} exists and is not a directory.")
  if _is_local(output):
    _check_writable(output)
  compare_to = drift.check_compare_to(schedule.compare_to, output) if schedule.compare_to else None

  model_dir = _absolute(opts.model).rstrip("/")
  if _is_local(model_dir) and not os.path.isdir(model_dir):
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

  return RunConfig(
    globs=globs,
    manifests=manifests,
    tfrecords=tfrecords,
    image_feature=opts.tfrecord_image_feature,
    key_feature=opts.tfrecord_key_feature,
    output=output,
    model_dir=model_dir,
    card=card,
    batch_size=opts.batch_size,
    tile_size=tile_size,
    tile_overlap=tile_overlap,
    whole_image_pixels=whole_image_pixels,
    stats_format=opts.stats_format,
    pixel_size=opts.pixel_size,
    pixel_unit=opts.pixel_unit,
    overlays=opts.overlays,
    max_image_pixels=opts.max_image_pixels,
    mixed_precision=opts.mixed_precision,
    skip_existing=opts.skip_existing,
    png_compress_level=opts.png_compress_level,
    mask_format=opts.mask_format,
    polygons=polygons,
    truth_globs=truth_globs,
    compare_to=compare_to,
    drift_threshold=drift_threshold,
    fail_on_drift=schedule.fail_on_drift,
  )
