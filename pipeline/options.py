"""The pipeline's own flags, each declared once in the table ``OPTIONS``.

Each ``Option`` of the table says everything about one flag: how argparse
reads it, its default and help, and the ``RunConfig`` field it fills. The
table is read by ``SegmentationOptions`` (the argparse registration, and
through it ``--help`` and ``pipeline.cloud.flex_metadata``) and by
``pipeline.config`` (``parsed_fields``, the fields ``pipeline.checks.validate``
takes as parsed, and ``RunConfig.options_record``, the options in summary.json).

``SegmentationOptions`` is an ordinary Beam ``PipelineOptions`` subclass, so
the flags travel to Dataflow workers with the rest. The checks that turn the
parsed flags into a ``RunConfig`` (absolute paths, the model card), or stop
the invocation with an ``OptionsError`` that says how to fix it, are in
``pipeline.checks``; ``run.main`` prints such an error without a traceback
and exits with status 2.
"""

import argparse
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

from model.engines.choice import ENGINES, PRECISIONS, TTA_MODES
from pipeline.errors import OptionsError
from transforms.imaging.mask_files import MASK_FORMATS
from transforms.imaging.polygons import POLYGON_FORMATS
from transforms.record_files import STATS_FORMATS

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODEL_DIR = os.path.join(REPO_ROOT, "model", "default")


PRECISION_ENV = "DECONVSEG_PRECISION"


def default_precision() -> str:
  """``--precision``'s default: $DECONVSEG_PRECISION where set (a fleet pinning fp32 for masks that are the same
  on every CPU, bf16 or not), else auto."""
  value = os.environ.get(PRECISION_ENV, "auto")
  if value not in PRECISIONS:
    raise OptionsError(f"{PRECISION_ENV}={value!r} is not a precision: set one of {', '.join(PRECISIONS)} or unset it.")
  return value


@dataclass(frozen=True)
class Option:
  """One flag of the pipeline: how argparse reads it, its default and help, and the ``RunConfig`` field it fills.

  ``kind``: "value" takes one value (of ``value_type``, or one of ``choices``;
  a string when neither is given); "list" takes one or more and may be
  repeated (``nargs="+"``, ``action="extend"``; None when not given);
  "switch" takes none (``store_true``; False when not given). A callable
  ``default`` is called each time the flag is registered (``--precision``
  reads the environment then).

  ``config_field`` is the ``RunConfig`` attribute the flag fills (empty: the
  flag's own name), dotted for one inside a settings object
  (``polygons.min_area``). With ``resolved``, ``pipeline.checks.validate``
  computes that field from the flag (absolute paths, the model card's
  tiling, ``PolygonSettings``); without it the field is the value as parsed.
  """

  flag: str  # without the leading "--"; also the argparse dest and summary.json's key
  help: str
  kind: Literal["value", "list", "switch"] = "value"
  value_type: Callable[[str], Any] | None = None
  choices: Sequence[str] | None = None
  default: Any = None
  metavar: str | None = None
  config_field: str = ""
  resolved: bool = False

  @property
  def fills(self) -> str:
    """The ``RunConfig`` attribute (dotted path) this flag fills."""
    return self.config_field or self.flag

  def add_to(self, parser: argparse._ActionsContainer) -> None:
    """Registers the flag on an argparse parser or argument group."""
    settings: dict[str, Any]
    if self.kind == "switch":
      settings = {"action": "store_true", "default": False}
    elif self.kind == "list":
      settings = {"nargs": "+", "action": "extend", "default": None, "metavar": self.metavar}
    else:
      default = self.default() if callable(self.default) else self.default
      settings = {"choices": self.choices, "default": default, "metavar": self.metavar}
      if self.value_type is not None:
        settings["type"] = self.value_type
    parser.add_argument("--" + self.flag, help=self.help, **settings)


# The flags in --help order.
OPTIONS: tuple[Option, ...] = (
  Option(
    "input",
    config_field="globs",
    resolved=True,
    kind="list",
    metavar="GLOB",
    help="Image files to segment: one or more glob patterns, files or directories (all files "
    "below), local or gs:// (PNG, JPEG, TIFF, BMP, WebP, GIF). Quote patterns so Beam, not the "
    "shell, expands them. Output keys are paths relative to the directory before the first "
    "wildcard.",
  ),
  Option(
    "manifest",
    config_field="manifests",
    resolved=True,
    kind="list",
    metavar="FILE",
    help="Text file(s) listing one image URI per line (blank lines and # comments ignored; "
    "relative entries are relative to the manifest's directory).",
  ),
  Option(
    "tfrecord",
    config_field="tfrecords",
    resolved=True,
    kind="list",
    metavar="GLOB",
    help="TFRecord shard(s) of tf.train.Example (glob; .gz shards are decompressed). "
    "A corrupt record becomes a failure record; the rest of the shard is still read.",
  ),
  Option(
    "tfrecord_image_feature",
    config_field="image_feature",
    default="image/encoded",
    help="bytes feature holding the encoded image in each Example (default: image/encoded).",
  ),
  Option(
    "tfrecord_key_feature",
    config_field="key_feature",
    default="image/key",
    help="feature naming the record's output key (default: image/key); records without it are keyed <shard>/<index>.",
  ),
  Option(
    "output",
    resolved=True,
    default=None,
    metavar="DIR",
    help="Output directory, local or gs://: masks/, stats/, failures/, summary.json "
    "(and overlays/). Must not be inside an input directory.",
  ),
  Option(
    "model",
    config_field="model_dir",
    resolved=True,
    default=DEFAULT_MODEL_DIR,
    metavar="DIR",
    help="Exported model directory (saved_model/ + card.json), local or gs://. Default: the bundled model/default.",
  ),
  Option(
    "batch_size",
    value_type=int,
    default=8,
    help="Maximum tiles per inference call (default 8). Tiles from different images share batches.",
  ),
  Option(
    "tile_size",
    resolved=True,
    value_type=int,
    default=512,
    help="Edge of the square tiles large images are cut into (default 512; see --whole_image_pixels). "
    "Make tile_size - tile_overlap a multiple of the model stride to keep tiles on its grid.",
  ),
  Option(
    "whole_image_pixels",
    resolved=True,
    value_type=int,
    default=None,
    help="Images with at most this many pixels run whole at their native size (exactly whole-image "
    "inference, batched with same-sized images); larger ones are tiled. Default 4 x tile_size^2.",
  ),
  Option(
    "tile_overlap",
    resolved=True,
    value_type=int,
    default=64,
    help="Overlap between neighbouring tiles in pixels (default 64). Each output pixel comes "
    "from the tile whose centre region holds it (boundaries at the middle of overlaps), "
    "so every pixel keeps at least overlap/2 pixels of context.",
  ),
  Option(
    "stats_format",
    choices=STATS_FORMATS,
    default="jsonl",
    help="Per-image statistics format under OUT/stats/: jsonl (default), csv or parquet.",
  ),
  Option(
    "pixel_size",
    value_type=float,
    default=None,
    metavar="UNITS",
    help="Ground size of one pixel (square) in --pixel_unit, to report class areas of images "
    "without a CRS (it overrides a GeoTIFF's geotransform or ModelPixelScale tag that has no CRS; "
    "a GeoTIFF with a CRS always gets areas in m^2 from its CRS). Without either, areas are left empty.",
  ),
  Option(
    "pixel_unit",
    default="m",
    help="Unit of --pixel_size and of GeoTIFF pixel scales (default m; areas are in unit^2).",
  ),
  Option(
    "mask_format",
    choices=MASK_FORMATS,
    default="auto",
    help="Mask files: auto (default) writes OUT/masks/<key>.tif, a Cloud-Optimized GeoTIFF with the "
    "input's CRS and geotransform, for georeferenced inputs (GeoTIFFs) and a palette PNG for the rest; "
    "png or geotiff force one format. GeoTIFF needs the geo extra.",
  ),
  Option(
    "polygons",
    config_field="polygons.enabled",
    resolved=True,
    kind="switch",
    help="Also write OUT/polygons/<key>.geojson: one feature per connected region with class id, name "
    "and area, in the image's CRS (pixel coordinates for images without one). Needs the geo extra.",
  ),
  Option(
    "polygon_format",
    config_field="polygons.format",
    resolved=True,
    choices=POLYGON_FORMATS,
    default="geojson",
    help="With --polygons: geojson (default, OUT/polygons/<key>.geojson) or geoparquet "
    "(OUT/polygons/<key>.parquet: GeoParquet 1.1, WKB geometry, CRS as PROJJSON).",
  ),
  Option(
    "min_polygon_area",
    config_field="polygons.min_area",
    resolved=True,
    value_type=float,
    default=0.0,
    metavar="AREA",
    help="With --polygons: leave out regions smaller than this, in the polygons' area unit (m^2 for "
    "images with a CRS, --pixel_unit^2 with --pixel_size, else pixels). Default 0: keep all.",
  ),
  Option(
    "simplify",
    config_field="polygons.simplify",
    resolved=True,
    value_type=float,
    default=0.0,
    metavar="TOLERANCE",
    help="With --polygons: simplify polygon edges with this tolerance in CRS units (pixels without "
    "a CRS), keeping neighbouring polygons' shared edges together. Default 0: exact pixel edges.",
  ),
  Option(
    "overlays",
    kind="switch",
    help="Also write OUT/overlays/<key>.png: the image mixed 50/50 with the class colours.",
  ),
  Option(
    "max_image_pixels",
    value_type=int,
    default=150_000_000,
    help="Refuse images with more pixels than this (default 150000000, checked on the header "
    "before decoding: guards against decompression bombs and worker memory).",
  ),
  Option(
    "windowed_read_mb",
    value_type=int,
    default=256,
    metavar="MB",
    help="GeoTIFF files (8- or 16-bit samples, with the geo extra) whose pixels would take more than "
    "this many MB decoded are read window by window as they are tiled, local or gs://, instead of "
    "whole, so a worker holds tiles and the mask rather than the scene (default 256; 0 reads "
    "every image whole).",
  ),
  Option(
    "engine",
    choices=ENGINES,
    default="auto",
    help="Inference engine: auto (default) runs OpenVINO on CPUs (TensorFlow where a GPU is visible or "
    "OpenVINO is not installed; onnxruntime-gpu for a model wrapped from ONNX on a GPU); tensorflow, "
    "openvino or onnxruntime (ONNX models only) force one. The engine used is logged when the "
    "run starts and recorded in summary.json.",
  ),
  Option(
    "precision",
    choices=PRECISIONS,
    default=default_precision,
    help="OpenVINO arithmetic: auto (default) is bf16 where the CPU has AMX or AVX-512 BF16 and fp32 "
    "elsewhere; int8 needs the model's int8 IR (python -m model.quantize). TensorFlow runs fp32. "
    f"${PRECISION_ENV} sets the default (fp32: the same masks on every CPU).",
  ),
  Option(
    "engine_threads",
    value_type=int,
    default=0,
    metavar="N",
    help="Threads each worker process gives the OpenVINO engine. 0 (default): the machine's cores "
    "divided among --direct_num_workers processes locally, 1 per process on Dataflow (one process per vCPU).",
  ),
  Option(
    "mixed_precision",
    kind="switch",
    help="Use the model's serving_mixed_float16 signature on the TensorFlow engine (GPUs with tensor "
    "cores; slower on CPU).",
  ),
  Option(
    "tta",
    choices=TTA_MODES,
    default="none",
    help="Test-time augmentation: none (default), or flips: each tile's class probabilities averaged over "
    "its four flips (left-right, up-down, both) in one engine call, for cleaner boundaries at about four "
    "times the model time (docs/MODEL.md, Test-time flips). Runs on the OpenVINO engine; recorded in "
    "summary.json.",
  ),
  Option(
    "skip_existing",
    kind="switch",
    help="Do not recompute images whose mask from the same model already exists in OUT "
    "(their statistics are read back from the mask; with --overlays, their overlay must "
    "exist too); for resuming an interrupted run.",
  ),
  Option(
    "no_report",
    kind="switch",
    help="Do not write OUT/report.html (python -m pipeline.report OUT writes it later). Without it, a "
    "report that cannot be written fails the run.",
  ),
  Option(
    "truth",
    config_field="truth_globs",
    resolved=True,
    kind="list",
    metavar="GLOB",
    help="Ground-truth masks to score the run against: one or more glob patterns, local or gs:// "
    "(single-channel class ids, palette indices count, 255 = ignore). A truth file belongs to the "
    "image whose key without extension equals the file's path relative to the directory before "
    "the pattern's first wildcard, without extension ('truth/**/*.png' file truth/a/b.png scores "
    "key a/b.jpg). Adds 'truth' to each stats record and to summary.json; a truth mask of another "
    "size fails its image at stage 'truth'.",
  ),
  Option(
    "png_compress_level",
    value_type=int,
    default=6,
    help="zlib level 0-9 for mask PNGs (default 6). Masks use zlib's run-length strategy, for which "
    "levels 1-9 give nearly the same size and speed; 0 stores them uncompressed.",
  ),
)
OPTION = {option.flag: option for option in OPTIONS}


class SegmentationOptions(PipelineOptions):
  """Flags of the deconvseg segmentation pipeline (``OPTIONS``)."""

  @classmethod
  def _add_argparse_args(cls, parser: argparse._ActionsContainer) -> None:
    for option in OPTIONS:
      option.add_to(parser)


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
  SegmentationOptions._add_argparse_args(parser)
  from pipeline.cloud.dataflow import DataflowGpuOptions
  from pipeline.run_state import RunStateOptions
  from pipeline.schedule import ScheduleOptions

  ScheduleOptions._add_argparse_args(parser.add_argument_group("scheduling (nightly runs)"))
  RunStateOptions._add_argparse_args(parser.add_argument_group("one run per output folder"))
  DataflowGpuOptions._add_argparse_args(
    parser.add_argument_group("Dataflow GPU workers (with --runner=DataflowRunner)")
  )
  return parser
