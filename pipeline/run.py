"""Entry point: ``python -m pipeline.run --input 'DIR/*' --output OUT``.

Before the graph is built: ``{date}``/``{yyyy}``/``{mm}``/``{dd}`` in any
argument are filled from ``--date`` (``pipeline.schedule``), the pipeline's
own flags are validated (``pipeline.checks``), and the Dataflow GPU flags
are checked and expanded into Beam's options (``pipeline.cloud.dataflow``).

Without ``--runner`` the pipeline runs on Beam's in-process FnApiRunner: in
Beam 2.77 the DirectRunner first tries to download the Prism runner binary on
every run, which is a network call offline machines cannot make and a delay
everywhere else. ``--direct_running_mode=multi_processing
--direct_num_workers=N`` spreads work over N processes on this runner;
``--runner=DataflowRunner`` (plus the usual Google Cloud options) runs on
Dataflow.
"""

import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any, NoReturn

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions, StandardOptions

from pipeline.checks import validate
from pipeline.cloud.dataflow import expand_dataflow_options, model_handler_kwargs
from pipeline.config import RunConfig
from pipeline.console_text import describe_engine
from pipeline.errors import OptionsError
from pipeline.graph import SegmentImages
from pipeline.model_check import check_model
from pipeline.options import help_parser
from pipeline.paths import matching_files
from pipeline.post_run.drift import DriftDetected
from pipeline.post_run.finish import after_job
from pipeline.run_state import (
  COMPLETE,
  FAILED,
  STOPPED,
  SUBMITTED,
  RunState,
  RunStateOptions,
  RunStopped,
  deferred_signals,
  install_signal_handlers,
  restore_signal_handlers,
  stop_signal,
)
from pipeline.runners import engine_threads, with_default_runner, workers_in_this_process
from pipeline.schedule import FailureBudgetExceeded, ScheduleOptions, fill_date_templates
from transforms.imaging.records import MASKS_DIR
from transforms.leftovers import remove_leftovers
from transforms.model_runtime import SegmenterHandle
from transforms.out_files import OutputFailed, QuietResourceErrors, describe_output_error, join

_LOG = logging.getLogger("deconvseg")


def run(argv: Sequence[str] | None = None, save_main_session: bool = True, test_pipeline: Any = None) -> Any:
  """Builds and runs the pipeline; returns the PipelineResult.

  Raises OptionsError (before any pipeline is built) for a bad invocation or
  an OUT another live run holds, FailureBudgetExceeded (after every output is
  written) when more inputs failed than ``--max_failure_fraction`` allows, and
  else DriftDetected when ``--fail_on_drift`` and a class drifted from the
  ``--compare_to`` run: a run with too many failures is the more urgent alarm,
  and its drift is suspect. RunStopped when a signal stopped it. Whatever the
  outcome, OUT/run_state.json says it and OUT's lock is released.
  """
  command = list(sys.argv[1:] if argv is None else argv)
  config, pipeline_options, runner, model = _prepare(command, save_main_session)
  state = RunState(config.output, command, pipeline_options)
  lock = pipeline_options.view_as(RunStateOptions)
  with deferred_signals():  # a half-taken lock would outlive this process
    state.begin(lock.force_unlock, lock.lock_max_age_hours)
  try:
    signum = stop_signal()
    if signum is not None:
      raise RunStopped(signum)
    _clean_leftovers(config.output, state)
    result, finished = _segment(config, pipeline_options, runner, model, state.run_id, test_pipeline)
  except FailureBudgetExceeded as exc:
    state.finish(COMPLETE, exit_code=3, reason=str(exc))
    raise
  except DriftDetected as exc:
    state.finish(COMPLETE, exit_code=4, reason=str(exc))
    raise
  except BaseException as exc:
    instead = _record_end(exc, config, state)
    if instead is None:
      raise
    raise instead from (exc if isinstance(instead, OutputFailed) else None)
  if finished:
    state.finish(COMPLETE)
  else:
    state.finish(SUBMITTED, runner=runner, job_state=str(result.state))
  return result


def _prepare(command: list[str], save_main_session: bool) -> tuple[RunConfig, Any, str, SegmenterHandle]:
  """(config, Beam's options, runner, checked model) of a command line; OptionsError before any work."""
  argv = with_default_runner(command)
  try:
    argv = fill_date_templates(argv)
  except ValueError as exc:
    raise OptionsError(str(exc)) from None
  pipeline_options = PipelineOptions(argv)
  config = validate(argv, pipeline_options)
  runner = str(pipeline_options.view_as(StandardOptions).runner or "")
  # The check's model serves the run when the workers are in this process; else each worker process loads its own.
  model = check_model(
    config.model_dir,
    config.card,
    config.engine,
    config.precision,
    config.mixed_precision,
    threads=config.engine_threads or engine_threads(runner, pipeline_options),
    hand_over=workers_in_this_process(runner, pipeline_options),
    tta=config.tta,
  )
  try:
    applied = expand_dataflow_options(pipeline_options)
  except ValueError as exc:
    raise OptionsError(str(exc)) from None
  if applied:
    _LOG.info("Dataflow options: %s", applied)
  pipeline_options.view_as(SetupOptions).save_main_session = save_main_session
  return config, pipeline_options, runner, model


def _record_end(exc: BaseException, config: RunConfig, state: RunState) -> BaseException | None:
  """Records a run that raised ``exc`` as failed or stopped; returns what to raise instead (None: ``exc`` itself)."""
  signum = stop_signal()
  if signum is None:
    if not state.shares_folder:
      _remove_leftovers_quietly(config.output)
    line = str(exc) if isinstance(exc, OutputFailed) else describe_output_error(exc, config.output)
    state.finish(FAILED, error=line or f"{type(exc).__name__}: {_first_line(exc)}")
    if line is None or isinstance(exc, OutputFailed):
      return None
    return OutputFailed(line)
  stopped = RunStopped(signum, _progress(config, state))
  state.finish(STOPPED, signal=stopped.name, progress=stopped.progress)
  return stopped


def _clean_leftovers(output: str, state: RunState) -> None:
  """Removes what killed runs left in OUT; not when a forced take-over means another run may be writing there."""
  if state.shares_folder:
    _LOG.warning(
      "left any temporaries in %s in place: the run this one took the lock from may still be writing them", output
    )
    return
  leftovers = remove_leftovers(output)  # after the lock: a live run's temporaries look the same
  if leftovers.total:
    _LOG.info("%s", leftovers.describe(output))


def _remove_leftovers_quietly(output: str) -> None:
  """A failed run's sink temp folders are no outputs; removing them must not hide why it failed."""
  try:
    remove_leftovers(output)
  except Exception as exc:
    _LOG.warning("could not remove the temporary files of this run in %s: %s", output, exc)


def _first_line(exc: BaseException) -> str:
  lines = str(exc).strip().splitlines()
  return lines[0] if lines else ""


def _progress(config: RunConfig, state: RunState) -> str | None:
  """'N of M images': masks this run wrote (newer than its start) of the files --input matches.

  M is only known for --input globs (manifests and TFRecords would have to
  be read again); the count is what OUT holds, not what a worker had in
  memory. None when OUT cannot be listed.
  """
  since = state.started_at - 1.0
  masks = join(config.output, MASKS_DIR)
  try:
    if "://" not in masks:
      written = 0
      for folder, _, names in os.walk(masks):
        written += sum(1 for name in names if os.path.getmtime(os.path.join(folder, name)) >= since)
    else:
      found = FileSystems.match([masks + "/**"])[0].metadata_list
      written = sum(1 for meta in found if (meta.last_updated_in_seconds or 0) >= since)
  except Exception:
    return None
  if config.globs and not (config.manifests or config.tfrecords):
    try:
      inputs = sum(len(matching_files(pattern)) for pattern in config.globs)
      return f"{written} of {inputs} images"
    except Exception:
      pass
  return f"{written} images"


def _segment(
  config: RunConfig,
  pipeline_options: Any,
  runner: str,
  model: SegmenterHandle,
  run_id: str,
  test_pipeline: Any = None,
) -> tuple[Any, bool]:
  """Runs the graph, then what the launcher owes it (``pipeline.post_run``); returns (result, whether it has ended)."""
  started = time.time()
  start_time = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))
  pipeline = test_pipeline or beam.Pipeline(options=pipeline_options)
  _ = pipeline | "SegmentImages" >> SegmentImages(
    config, start_time, model_handler_kwargs(pipeline_options), model, run_id=run_id
  )
  _LOG.info(
    "Segmenting into %s with model %s %s on %s",
    config.output,
    config.card.get("name"),
    config.card.get("version"),
    describe_engine(model.description),
  )
  result = pipeline.run()
  result.wait_until_finish()
  budget = pipeline_options.view_as(ScheduleOptions).max_failure_fraction
  return result, after_job(config, result, runner, budget, time.time() - started)


def main(argv: Sequence[str] | None = None) -> int:
  """Console entry point: clean messages and exit codes instead of tracebacks.

  0 done; 1 an output could not be written (one line naming the path and the
  cause); 2 a bad invocation or an OUT another run holds; 3 the failure
  budget exceeded; 4 drift with --fail_on_drift; 130 / 143 stopped by SIGINT /
  SIGTERM (128 + the signal, as shells report it).
  """
  argv = list(sys.argv[1:] if argv is None else argv)
  if "-h" in argv or "--help" in argv:
    help_parser().print_help()
    return 0
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
  for handler in logging.getLogger().handlers:
    handler.addFilter(QuietResourceErrors())  # Beam logs each failed step's traceback; main prints one line
  for noisy in ("apache_beam", "absl", "tensorflow"):
    logging.getLogger(noisy).setLevel(logging.WARNING)
  previous = install_signal_handlers()
  try:
    return _main(argv)
  except BaseException as exc:
    signum = stop_signal()
    if signum is None:
      raise
    stopped = exc if isinstance(exc, RunStopped) else RunStopped(signum)
    after = f" after {stopped.progress}" if stopped.progress else " before any work"
    print(f"deconvseg: stopped by {stopped.name}{after}; re-run with --skip_existing to resume", file=sys.stderr)
    return stopped.exit_code
  finally:
    restore_signal_handlers(previous)


def _main(argv: list[str]) -> int:
  try:
    run(argv)
  except RunStopped:
    raise
  except OptionsError as exc:
    print(f"deconvseg: error: {exc}", file=sys.stderr)
    return 2
  except FailureBudgetExceeded as exc:
    print(f"deconvseg: error: {exc}", file=sys.stderr)
    return 3
  except DriftDetected as exc:
    print(f"deconvseg: error: {exc}", file=sys.stderr)
    return 4
  except SystemExit as exc:  # argparse errors (bad number formats, bad choices) already printed usage
    return exc.code if isinstance(exc.code, int) else 2
  except Exception as exc:  # disk full, quota, permissions: one line, not a traceback
    line = str(exc) if isinstance(exc, OutputFailed) else describe_output_error(exc)
    if line is None:
      raise
    print(f"deconvseg: error: {line}", file=sys.stderr)
    return 1
  return 0


def exit_now(code: int) -> NoReturn:
  """Ends the process without the interpreter's teardown of TensorFlow and Beam (~1.5 s measured).

  Every output is written and closed before ``main`` returns; only the
  standard streams and the log handlers still need flushing.
  """
  sys.stdout.flush()
  sys.stderr.flush()
  logging.shutdown()
  os._exit(code)


if __name__ == "__main__":
  exit_now(main())
