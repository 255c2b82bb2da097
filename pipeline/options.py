"""The pipeline's own flags (``SegmentationOptions``) and what they resolve to (``RunConfig``).

``SegmentationOptions`` is an ordinary Beam ``PipelineOptions`` subclass, so
the flags travel to Dataflow workers with the rest. The checks that turn the
parsed flags into a ``RunConfig`` (absolute paths, the model card), or stop
the invocation with an ``OptionsError`` that says how to fix it, are in
``pipeline.checks``; ``run.main`` prints such an error without a traceback
and exits with status 2.
"""

import os
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

from model.engines.choice import ENGINES, PRECISIONS, TTA_MODES
from pipeline.errors import OptionsError
from transforms.input_spec import InputSpec
from transforms.mask_files import MASK_FORMATS
from transforms.ood import OodRule
from transforms.polygons import POLYGON_FORMATS, PolygonSettings
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
      "--polygon_format",
      choices=POLYGON_FORMATS,
      default="geojson",
      help="With --polygons: geojson (default, OUT/polygons/<key>.geojson) or geoparquet "
      "(OUT/polygons/<key>.parquet: GeoParquet 1.1, WKB geometry, CRS as PROJJSON).",
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
      "--windowed_read_mb",
      type=int,
      default=256,
      metavar="MB",
      help="GeoTIFF files (8- or 16-bit samples, with the geo extra) whose pixels would take more than "
      "this many MB decoded are read window by window as they are tiled, local or gs://, instead of "
      "whole, so a worker holds tiles and the mask rather than the scene (default 256; 0 reads "
      "every image whole).",
    )
    parser.add_argument(
      "--engine",
      choices=ENGINES,
      default="auto",
      help="Inference engine: auto (default) runs OpenVINO on CPUs (TensorFlow where a GPU is visible or "
      "OpenVINO is not installed; onnxruntime-gpu for a model wrapped from ONNX on a GPU); tensorflow, "
      "openvino or onnxruntime (ONNX models only) force one. The engine used is logged when the "
      "run starts and recorded in summary.json.",
    )
    parser.add_argument(
      "--precision",
      choices=PRECISIONS,
      default=default_precision(),
      help="OpenVINO arithmetic: auto (default) is bf16 where the CPU has AMX or AVX-512 BF16 and fp32 "
      "elsewhere; int8 needs the model's int8 IR (python -m model.quantize). TensorFlow runs fp32. "
      f"${PRECISION_ENV} sets the default (fp32: the same masks on every CPU).",
    )
    parser.add_argument(
      "--engine_threads",
      type=int,
      default=0,
      metavar="N",
      help="Threads each worker process gives the OpenVINO engine. 0 (default): the machine's cores "
      "divided among --direct_num_workers processes locally, 1 per process on Dataflow (one process per vCPU).",
    )
    parser.add_argument(
      "--mixed_precision",
      action="store_true",
      default=False,
      help="Use the model's serving_mixed_float16 signature on the TensorFlow engine (GPUs with tensor "
      "cores; slower on CPU).",
    )
    parser.add_argument(
      "--tta",
      choices=TTA_MODES,
      default="none",
      help="Test-time augmentation: none (default), or flips: each tile's class probabilities averaged over "
      "its four flips (left-right, up-down, both) in one engine call, for cleaner boundaries at about four "
      "times the model time (docs/MODEL.md, Test-time flips). Runs on the OpenVINO engine; recorded in "
      "summary.json.",
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
      "--no_report",
      action="store_true",
      default=False,
      help="Do not write OUT/report.html (python -m pipeline.report OUT writes it later). Without it, a "
      "report that cannot be written fails the run.",
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
  windowed_read_mb: int = 256
  engine: str = "auto"
  precision: str = "auto"
  engine_threads: int = 0
  mixed_precision: bool = False
  tta: str = "none"
  skip_existing: bool = False
  no_report: bool = False
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
      "windowed_read_mb": self.windowed_read_mb,
      "engine": self.engine,
      "precision": self.precision,
      "engine_threads": self.engine_threads,
      "mixed_precision": self.mixed_precision,
      "tta": self.tta,
      "skip_existing": self.skip_existing,
      "png_compress_level": self.png_compress_level,
      "mask_format": self.mask_format,
      "polygons": self.polygons.enabled,
      "min_polygon_area": self.polygons.min_area,
      "simplify": self.polygons.simplify,
      "polygon_format": self.polygons.format,
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
  SegmentationOptions._add_argparse_args(parser)
  from pipeline.dataflow import DataflowGpuOptions
  from pipeline.run_state import RunStateOptions
  from pipeline.schedule import ScheduleOptions

  ScheduleOptions._add_argparse_args(parser.add_argument_group("scheduling (nightly runs)"))
  RunStateOptions._add_argparse_args(parser.add_argument_group("one run per output folder"))
  DataflowGpuOptions._add_argparse_args(
    parser.add_argument_group("Dataflow GPU workers (with --runner=DataflowRunner)")
  )
  return parser
