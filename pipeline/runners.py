"""Which Beam runner a run uses, and what that means for where its work and its model live.

Without ``--runner`` the pipeline runs on Beam's in-process FnApiRunner: in
Beam 2.77 the DirectRunner first tries to download the Prism runner binary on
every run, which is a network call offline machines cannot make and a delay
everywhere else. Apart from the launcher (``pipeline.run``) because these are
the rules about runners as such: the default and the short names, which
runners end inside the launcher (so it writes the report itself), whether the
workers share the launcher's process (so the start-up check's model serves
them), and how many engine threads each worker process gets.
"""

import os
from collections.abc import Sequence
from typing import Any

from apache_beam.options.pipeline_options import DirectOptions

from pipeline.checks import RUNNER_ALIASES

DEFAULT_RUNNER = "FnApiRunner"
# Runners whose run ends inside this launcher, so it reads the summary and writes the report itself.
LOCAL_RUNNERS = (
  "FnApiRunner",
  "DirectRunner",
  "SwitchingDirectRunner",
  "BundleBasedDirectRunner",
  "PrismRunner",
  "DaskRunner",
  "PortableRunner",
)


def with_default_runner(argv: Sequence[str]) -> list[str]:
  """FnApiRunner unless ``--runner`` is given; short names Beam does not register are spelled out."""
  argv = list(argv)
  for index, arg in enumerate(argv):
    if arg.startswith("--runner="):
      name = arg.split("=", 1)[1]
      argv[index] = f"--runner={RUNNER_ALIASES.get(name, name)}"
      return argv
    if arg == "--runner" and index + 1 < len(argv):
      argv[index + 1] = RUNNER_ALIASES.get(argv[index + 1], argv[index + 1])
      return argv
  return argv + [f"--runner={DEFAULT_RUNNER}"]


def ends_here(runner: str) -> bool:
  """Whether a run on ``runner`` ends inside this launcher (``LOCAL_RUNNERS``)."""
  return any(runner.endswith(name) for name in LOCAL_RUNNERS)


def workers_in_this_process(runner: str, pipeline_options: Any) -> bool:
  """True when the model check's loaded model can serve the run (in-process FnApiRunner)."""
  mode = pipeline_options.view_as(DirectOptions).direct_running_mode or "in_memory"
  return runner.endswith(DEFAULT_RUNNER) and mode == "in_memory"


def engine_threads(runner: str, pipeline_options: Any) -> int:
  """The engine's threads per worker process when --engine_threads is 0: the cores shared among the processes.

  0 lets the engine take every core (one worker process, in this one);
  local multi-process runs split the cores among ``--direct_num_workers``;
  Dataflow runs one SDK process per vCPU, so each gets one thread.
  """
  if runner.endswith("DataflowRunner"):
    return 1
  direct = pipeline_options.view_as(DirectOptions)
  if (direct.direct_running_mode or "in_memory") != "in_memory":
    workers = direct.direct_num_workers or 1
    if workers <= 0:
      return 1  # Beam's 0 means one process per core
    return max(1, (os.cpu_count() or 1) // workers)
  return 0
