"""Where the pipeline's wall time goes: py-spy samples of the main thread, attributed to stages.

``py-spy record --idle --threads --format raw`` samples every thread's Python
stack at a fixed rate, including time spent waiting in native code (the
engine call, zlib, file I/O). The in-memory FnApiRunner runs every bundle
in the main thread, so each main-thread sample is attributed to the innermost
stage frame on its stack; samples before the pipeline starts are start-up.
Decode and mask writing run on the look-ahead threads (``deconvseg-decode``,
``deconvseg-write``); ``background`` reports how long each of those was busy
per stage. TensorFlow's own threads are native and not sampled.
py-spy is an ad-hoc profiling tool and not a project dependency: the bench
installs it into its work folder with ``pip --target`` when it is missing.
"""

import collections
import re

# (stage, regex on one frame) checked from the innermost frame outwards.
STAGES = (
  ("model call (engine)", r"^\w+Segmenter\.(predict|segment_with_stats) \(model/engines/\w+\.py"),
  ("per-class reductions (numpy)", r"^per_class_sums \(model/engines/openvino_engine\.py"),
  ("inference post-processing (stack, crop, overlay)", r"^SegmentationModelHandler\.\w+ \(transforms/inference\.py"),
  ("PNG encoding", r"^encode_mask \(transforms/sinks\.py"),
  ("writing (temp file + rename)", r"^atomic_write \(transforms/(sinks|out_files)\.py"),
  ("statistics record", r"^image_record \(transforms/statistics\.py"),
  ("overlay encoding", r"^WriteMasksFn\._work \(transforms/sinks\.py"),
  ("read + decode", r"^(DecodeImagesFn\.process|decode_image|read_bytes) \(transforms/(decode|image_decoder)\.py"),
  ("tiling", r"^TileImagesFn\.process \(transforms/inference\.py"),
  ("stitching", r"^\w+\.process \(transforms/stitch\.py"),
  ("file matching", r"\(apache_beam/io/fileio\.py"),
  (
    "stats/failures/summary sinks",
    r"\((apache_beam/io/(textio|filebasedsink|iobase)\.py|transforms/(sinks|record_files)\.py)",
  ),
  ("RunInference/BatchElements machinery", r"\(apache_beam/(ml/inference|transforms/util)\.py|\(apache_beam/ml/"),
  (
    "start-up: imports, options, model check",
    r"^validate \(pipeline/(options|checks)\.py|^check_model \(pipeline/model_check\.py|^<module> \(pipeline/run\.py:\d+\)$",
  ),
  ("Beam runner (bundles, coders, shuffle)", r"\(apache_beam/runners/"),
)


def _samples(raw_text: str):
  """(thread header, frames outermost first, sample count) per line of py-spy's raw output."""
  for line in raw_text.splitlines():
    stack, _, count = line.rpartition(" ")
    if stack.startswith("thread"):
      head, _, rest = stack.partition(";")
      yield head, rest.split(";") if rest else [], int(count)


def _stage(frame: str):
  """The stage a single frame belongs to, or None."""
  return next((name for name, pattern in STAGES if re.search(pattern, frame)), None)


def attribute(raw_text: str, rate: int) -> dict:
  """Seconds per stage for the main thread, from py-spy's raw (collapsed) output."""
  seconds = collections.Counter()
  for head, frames, count in _samples(raw_text):
    if "MainThread" not in head:
      continue
    stage = "other (Python start-up, imports)"
    in_pipeline = any(frame.startswith("Pipeline.run ") for frame in frames)
    for frame in reversed(frames):
      matched = _stage(frame)
      if matched and (in_pipeline or matched.startswith("start-up")):
        stage = matched
        break
    else:
      if not in_pipeline and any(f.startswith("run (pipeline/run.py") for f in frames):
        stage = "start-up: imports, options, model check"
    seconds[stage] += count / rate
  return dict(seconds.most_common())


BACKGROUND_THREADS = (("decode thread", "deconvseg-decode"), ("write thread", "deconvseg-write"))
IDLE = "idle (waiting for work)"


def background(raw_text: str, rate: int) -> dict:
  """{thread: {stage: seconds}} for the look-ahead threads; samples outside any stage count as idle."""
  seconds = {label: collections.Counter() for label, _ in BACKGROUND_THREADS}
  for head, frames, count in _samples(raw_text):
    label = next((label for label, prefix in BACKGROUND_THREADS if f": {prefix}" in head), None)
    if label is not None:
      stage = next((stage for stage in map(_stage, reversed(frames)) if stage), IDLE)
      seconds[label][stage] += count / rate
  return {label: dict(counter.most_common()) for label, counter in seconds.items() if counter}
