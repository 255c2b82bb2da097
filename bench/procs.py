"""Run a command and watch its process tree: wall time and every process's peak RSS.

Peak RSS is read from ``/proc/PID/status`` (``VmHWM``, the kernel's high-water
mark, so a sample taken any time before exit sees the peak reached so far)
every 50 ms for the process and all its descendants, e.g. the SDK worker
processes that ``--direct_running_mode=multi_processing`` starts. The
``RUSAGE_CHILDREN`` maximum is kept as a cross-check for the largest one.
"""

import os
import resource
import subprocess
import time
from typing import Dict, List


def _children_map() -> Dict[int, List[int]]:
  children = {}
  for entry in os.listdir("/proc"):
    if not entry.isdigit():
      continue
    try:
      with open(f"/proc/{entry}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
      children.setdefault(int(fields[1]), []).append(int(entry))
    except (OSError, IndexError, ValueError):
      continue
  return children


def _tree(root: int) -> List[int]:
  children = _children_map()
  found, stack = [], [root]
  while stack:
    pid = stack.pop()
    found.append(pid)
    stack.extend(children.get(pid, []))
  return found


def _peak_mb(pid: int):
  try:
    with open(f"/proc/{pid}/status") as handle:
      for line in handle:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) / 1024
  except OSError:
    return None
  return None


def _cmdline(pid: int) -> str:
  try:
    with open(f"/proc/{pid}/cmdline", "rb") as handle:
      return handle.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
  except OSError:
    return ""


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child_env():
  """The environment for measured child processes: this repository importable, TensorFlow quiet, no GCE probe."""
  env = dict(os.environ)
  env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  env.setdefault("NO_GCE_CHECK", "true")
  return env


def peak_rss_mb(watched: dict):
  """The largest per-process peak RSS (MB) of a ``run_watched`` result, None when none was sampled."""
  return max((process["peak_rss_mb"] for process in watched["processes"]), default=None)


def load_average() -> List[float]:
  with open("/proc/loadavg") as handle:
    return [float(v) for v in handle.read().split()[:3]]


def run_watched(cmd: List[str], env=None, cwd=None, timeout: float = 1800, interval: float = 0.05) -> dict:
  """Runs ``cmd``; returns returncode, wall_s, stdout, stderr tail and per-process peaks (MB)."""
  before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
  load_before = load_average()
  started = time.perf_counter()
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd, text=True)
  peaks, names = {}, {}
  import threading

  out_chunks, err_chunks = [], []
  readers = [
    threading.Thread(target=lambda: out_chunks.append(proc.stdout.read()), daemon=True),
    threading.Thread(target=lambda: err_chunks.append(proc.stderr.read()), daemon=True),
  ]
  for reader in readers:
    reader.start()
  while proc.poll() is None:
    if time.perf_counter() - started > timeout:
      proc.kill()
      break
    for pid in _tree(proc.pid):
      peak = _peak_mb(pid)
      if peak is not None:
        peaks[pid] = max(peaks.get(pid, 0.0), peak)
        if pid not in names:
          names[pid] = _cmdline(pid)
    time.sleep(interval)
  proc.wait()
  wall_s = time.perf_counter() - started
  for reader, stream in zip(readers, (proc.stdout, proc.stderr)):
    reader.join(timeout=10)
    if not reader.is_alive():  # a reader still blocked on its pipe (a grandchild holds it) would block the close
      stream.close()
  after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
  processes = [
    {"pid": pid, "peak_rss_mb": round(peaks[pid], 1), "cmd": names.get(pid, "")[:160]}
    for pid in sorted(peaks)
    if peaks[pid] > 50
  ]
  return {
    "returncode": proc.returncode,
    "wall_s": wall_s,
    "stdout": "".join(out_chunks),
    "stderr_tail": "".join(err_chunks)[-3000:],
    "processes": processes,
    "rusage_children_max_mb": round(after, 1) if after > before else None,
    "load_before": load_before,
    "load_after": load_average(),
  }
