"""Kill the pipeline at seeded random points, resume it, and check the folder against a clean run.

Each kill point starts a run into its own folder (half of them into a copy
of a finished run, as a re-run), sends SIGKILL or SIGTERM after a seeded
fraction of the clean run's time, checks that nothing on disk is
half-written and that the folder does not claim to be complete, then runs
``--skip_existing`` and asserts that the folder equals the clean run's:
the same mask pixels and overlay bytes, the same records (times and run ids
aside; confidence means to 1e-6, see ``CONFIDENCE_RTOL``), no record twice,
state "complete".

Runs are forked from one process that has already imported the pipeline
(``_ZYGOTE``), so a kill point costs the run, not Python's and Beam's
start-up; each run is still its own process with its own signal handlers,
killed from outside like any other.

    python tests/crash_harness.py --kills 30 --seed 1      # prints one line per kill point
"""

import argparse
import contextlib
import dataclasses
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pipeline_helpers import REPO, folder_records, output_problems, scene  # noqa: E402

from transforms.imaging.mask_files import STATS_CHUNK  # noqa: E402

# The fork server: reads a JSON command per line; "run" forks a child that runs the pipeline with its
# output in a log file and answers the child's pid; "wait" answers the child's exit status.
_ZYGOTE = r"""
import json, os, sys
import pipeline.run
from model.engines import openvino_engine  # noqa: F401  (the engine's imports, done once)
# What every run imports on first use (the OpenVINO runtime, the Beam runner, Pillow's plugins), done once;
# none of it starts a thread, so the forks are safe.
import openvino  # noqa: F401
import apache_beam.runners.portability.fn_api_runner.fn_runner  # noqa: F401
from PIL import Image
Image.init()

for line in sys.stdin:
  command = json.loads(line)
  if command["op"] == "run":
    pid = os.fork()
    if pid == 0:
      log = os.open(command["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
      os.dup2(log, 1)
      os.dup2(log, 2)
      code = 1
      try:
        code = pipeline.run.main(command["argv"])
      finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code if isinstance(code, int) else 1)
    print(pid, flush=True)
  else:
    _, status = os.waitpid(command["pid"], 0)
    print(os.waitstatus_to_exitcode(status), flush=True)
"""
# Record fields that differ between two runs of the same inputs.
_RUN_FIELDS = ("run_id", "start_time", "end_time", "time", "reused")
# Confidence means are float32 sums, and their last digits depend on which images shared a batch
# (the engine picks other kernels for other shapes): equal to this relative tolerance, not bitwise.
CONFIDENCE_RTOL = 1e-6


class Runs:
  """The fork server, as a context manager."""

  def __enter__(self):
    self._process = subprocess.Popen(
      [sys.executable, "-c", _ZYGOTE], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    return self

  def __exit__(self, *exc):
    self._process.stdin.close()
    try:
      self._process.wait(timeout=30)
    except subprocess.TimeoutExpired:
      self._process.kill()
      self._process.wait()

  def _ask(self, **command) -> int:
    self._process.stdin.write(json.dumps(command) + "\n")
    self._process.stdin.flush()
    answer = self._process.stdout.readline()
    if not answer:
      raise RuntimeError("the fork server died")
    return int(answer)

  def start(self, argv, log) -> int:
    return self._ask(op="run", argv=[str(arg) for arg in argv], log=str(log))

  def wait(self, pid) -> int:
    return self._ask(op="wait", pid=pid)

  def run(self, argv, log) -> int:
    return self.wait(self.start(argv, log))


def make_inputs(folder, count=12, seed=0):
  """``count`` scenes of a few sizes and one file that is no image (a failure record in every run)."""
  os.makedirs(folder, exist_ok=True)
  rng = random.Random(seed)
  for index in range(count):
    height, width = rng.choice([(96, 128), (160, 120), (200, 200)])
    Image.fromarray(scene(height, width, seed=seed * 100 + index)).save(os.path.join(folder, f"img_{index:02d}.png"))
  with open(os.path.join(folder, "broken.png"), "wb") as handle:
    handle.write(b"\x89PNG\r\n\x1a\n cut")
  return folder


def _argv(inputs, output, model, *flags):
  return ["--input", os.path.join(inputs, "*.png"), "--output", output, "--model", model, "--overlays", *flags]


def _plain(record):
  if isinstance(record, dict):
    return {key: _plain(value) for key, value in record.items() if key not in _RUN_FIELDS}
  if isinstance(record, list):
    return [_plain(value) for value in record]
  return record


def same(a, b) -> bool:
  """Equal, floats to ``CONFIDENCE_RTOL``."""
  if isinstance(a, float) and isinstance(b, float):
    return math.isclose(a, b, rel_tol=CONFIDENCE_RTOL, abs_tol=1e-12)
  if isinstance(a, dict) and isinstance(b, dict):
    return a.keys() == b.keys() and all(same(a[key], b[key]) for key in a)
  if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
    return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
  return a == b


def folder_view(output) -> dict:
  """What must equal a clean run's: mask and overlay bytes, records by key, failures by URI, the state."""
  view = {"files": {}, "records": {}, "failures": {}}
  for sub in ("masks", "overlays"):
    folder = os.path.join(output, sub)
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
      path = os.path.join(folder, name)
      if sub == "masks":  # the pixels, and the record the mask carries for --skip_existing
        with Image.open(path) as mask:
          view["files"][f"{sub}/{name}"] = (
            mask.mode,
            np.asarray(mask).tobytes(),
            _plain(json.loads(mask.info[STATS_CHUNK])),
          )
      else:
        with open(path, "rb") as handle:
          view["files"][f"{sub}/{name}"] = handle.read()
  for kind, folder, field in (("records", "stats", "key"), ("failures", "failures", "uri")):
    rows = folder_records(output, folder)
    view[kind] = {row[field]: _plain(row) for row in rows}
    view[f"{kind}_duplicated"] = len(rows) - len(view[kind])
  with open(os.path.join(output, "run_state.json")) as handle:
    state = json.load(handle)
  view["status"], view["run_id"] = state["status"], state["run_id"]
  return view


def _completed_run(output):
  """The run id the folder's state calls complete, if any (a run killed before its lock left the old one)."""
  try:
    with open(os.path.join(output, "run_state.json")) as handle:
      state = json.load(handle)
  except FileNotFoundError:
    return None
  return state["run_id"] if state["status"] == "complete" else None


def _stage(output, images, earlier_run, started) -> str:
  """Where the kill landed, as the folder shows it: before the lock, masks being made, records, the end."""
  try:
    with open(os.path.join(output, "run_state.json")) as handle:
      state = json.load(handle)
  except FileNotFoundError:
    return "start-up"
  if state["run_id"] == earlier_run:
    return "start-up"
  if state["status"] == "complete":
    return "finished"
  stats = os.path.join(output, "stats")
  if any(state["run_id"] in name for name in (os.listdir(stats) if os.path.isdir(stats) else [])):
    return "summary/report"
  folder = os.path.join(output, "masks")
  names = os.listdir(folder) if os.path.isdir(folder) else []
  masks = sum(os.path.getmtime(os.path.join(folder, name)) >= started for name in names)
  return f"masks {masks}/{images}" if masks else "decode/inference"


@dataclasses.dataclass
class KillPoint:
  index: int
  signal: str
  delay_s: float
  rerun_of_finished: bool
  stage: str = ""
  exit_code: int = None
  problems: list = dataclasses.field(default_factory=list)

  def line(self) -> str:
    kind = "re-run" if self.rerun_of_finished else "fresh"
    verdict = "ok" if not self.problems else "FAILED: " + "; ".join(self.problems)
    return (
      f"kill {self.index:2d}: {self.signal:7s} at {self.delay_s:5.2f} s into a {kind:6s} run "
      f"-> exit {self.exit_code}, {self.stage}; resumed: {verdict}"
    )


def _diff(view, clean) -> list:
  problems = []
  for part in ("files", "records", "failures"):
    if view[part].keys() != clean[part].keys():
      missing, extra = clean[part].keys() - view[part].keys(), view[part].keys() - clean[part].keys()
      problems.append(f"{part}: missing {sorted(missing)[:3]}, extra {sorted(extra)[:3]}")
    else:
      changed = [name for name in clean[part] if not same(view[part][name], clean[part][name])]
      if changed:
        problems.append(f"{part} differ from the clean run: {changed[:3]}")
  for part in ("records_duplicated", "failures_duplicated"):
    if view[part]:
      problems.append(f"{view[part]} {part.replace('_', ' ')}")
  if view["status"] != "complete":
    problems.append(f"state {view['status']}")
  return problems


def _check_point(runs, point, inputs, output, model, images, clean, clean_dir, log):
  """Kill one run at ``point``'s time and signal, resume it, and record what differs from ``clean``."""
  if point.rerun_of_finished:
    shutil.copytree(clean_dir, output)
    clean_run_id = clean["run_id"]
  else:
    clean_run_id = None
  started = time.time() - 1.0  # file times may be rounded down to the second
  pid = runs.start(_argv(inputs, output, model), log)
  time.sleep(point.delay_s)
  try:
    os.kill(pid, getattr(signal, point.signal))
  except ProcessLookupError:
    pass
  point.exit_code = runs.wait(pid)
  point.stage = _stage(output, images + 1, clean_run_id, started)
  point.problems += [f"after the kill: {p}" for p in output_problems(output, temporaries=False)]
  if point.exit_code != 0 and _completed_run(output) not in (None, clean_run_id):
    point.problems.append(f"exit {point.exit_code} but the folder claims the killed run is complete")
  if point.signal == "SIGTERM" and point.exit_code not in (0, 143):
    point.problems.append(f"SIGTERM gave exit {point.exit_code}: {open(log).read()[-300:]}")
  resumed = runs.run(_argv(inputs, output, model, "--skip_existing"), log + ".resume")
  if resumed != 0:
    point.problems.append(f"the resumed run failed ({resumed}): {open(log + '.resume').read()[-500:]}")
  else:
    point.problems += output_problems(output) + _diff(folder_view(output), clean)


def run_harness(model, workdir, kills=30, seed=1, images=12, report=print, slots=1) -> list:
  """The kill points, each checked; ``report`` gets one line per point (in the order they finish).

  ``slots`` kill points run at a time, each slot with its own fork server and output path, and its own clean
  run (records name their folder) made alongside the others', so the kill times are drawn on the time a run
  takes with that many running.
  """
  rng = random.Random(seed)
  inputs = make_inputs(os.path.join(workdir, "in"), images, seed)
  with contextlib.ExitStack() as stack:
    servers = [stack.enter_context(Runs()) for _ in range(slots)]
    # Every run of a slot writes to the same path (records and masks name their folder), then is moved aside.
    outputs = [os.path.join(workdir, "out" if slots == 1 else f"out{slot}") for slot in range(slots)]
    # A first run pays for what later runs find cached (the engine's compiled model): it would stretch the
    # time scale the kill points are drawn on, so the clean runs come after it.
    if servers[0].run(_argv(inputs, outputs[0], model), os.path.join(workdir, "warm-up.log")) != 0:
      raise RuntimeError(f"the warm-up run failed: {open(os.path.join(workdir, 'warm-up.log')).read()[-2000:]}")
    shutil.rmtree(outputs[0])
    logs = [os.path.join(workdir, "clean.log" if slots == 1 else f"clean{slot}.log") for slot in range(slots)]
    started = time.monotonic()
    pids = [runs.start(_argv(inputs, output, model), log) for runs, output, log in zip(servers, outputs, logs)]
    codes = [runs.wait(pid) for runs, pid in zip(servers, pids)]
    clean_s = time.monotonic() - started
    cleans, clean_dirs = [], []
    for slot, (code, output, log) in enumerate(zip(codes, outputs, logs)):
      if code != 0:
        raise RuntimeError(f"the clean run failed ({code}): {open(log).read()[-2000:]}")
      cleans.append(folder_view(output))
      clean_dirs.append(os.path.join(workdir, "clean" if slots == 1 else f"clean{slot}"))
      os.rename(output, clean_dirs[-1])
    clean = cleans[0]
    report(f"clean run: {clean_s:.2f} s, {len(clean['records'])} records, {len(clean['failures'])} failures")
    points = [
      KillPoint(
        index=index + 1,
        signal=rng.choice(["SIGKILL", "SIGKILL", "SIGTERM"]),
        delay_s=round(rng.uniform(0.02, 0.95) * clean_s, 3),
        rerun_of_finished=rng.random() < 0.5,
      )
      for index in range(kills)
    ]
    lock = threading.Lock()

    def check(slot):
      for point in points[slot::slots]:
        log = os.path.join(workdir, f"kill_{point.index:02d}.log")
        args = (servers[slot], point, inputs, outputs[slot], model, images, cleans[slot], clean_dirs[slot], log)
        try:
          _check_point(*args)
        except Exception as exc:  # a failing slot is one more problem to show, not a lost thread
          point.problems.append(f"the harness failed: {exc!r}")
        with lock:
          report(point.line())
        if os.path.exists(outputs[slot]):
          os.rename(outputs[slot], os.path.join(workdir, f"kill_{point.index:02d}"))

    threads = [threading.Thread(target=check, args=(slot,), daemon=True) for slot in range(slots)]
    for thread in threads:
      thread.start()
    for thread in threads:
      thread.join()
  return points


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--kills", type=int, default=30)
  parser.add_argument("--seed", type=int, default=1)
  parser.add_argument("--images", type=int, default=12)
  parser.add_argument("--slots", type=int, default=1, help="kill points checked at a time (each in its own folder)")
  parser.add_argument("--model", default=None, help="model directory (default: the bundled model)")
  parser.add_argument("--keep", default=None, help="work in this folder and keep it")
  args = parser.parse_args(argv)
  model = args.model or os.path.join(REPO, "model", "default")
  workdir = args.keep or tempfile.mkdtemp(prefix="deconvseg-crash-")
  try:
    points = run_harness(model, workdir, args.kills, args.seed, args.images, slots=args.slots)
  finally:
    if not args.keep:
      shutil.rmtree(workdir, ignore_errors=True)
  failed = [point for point in points if point.problems]
  stages = sorted({point.stage.split(" ")[0] for point in points})
  print(f"{len(points) - len(failed)} of {len(points)} kill points passed; stages hit: {', '.join(stages)}")
  return 1 if failed else 0


if __name__ == "__main__":
  np.seterr(all="ignore")
  sys.exit(main())
