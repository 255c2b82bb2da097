"""The launcher's work once the job has ended: the final summary, the report, the table and the outcome.

A local run (or a blocking Dataflow launch that needs the summary for
``--max_failure_fraction`` or ``--compare_to``) gets its ``summary.json``
completed (``pipeline.post_run.summary``); a local run also gets
``OUT/report.html`` (``pipeline.report``) and the end-of-run table on stdout.
Then the outcome: FailureBudgetExceeded before DriftDetected, since a run with
too many failures is the more urgent alarm and its drift is suspect.
"""

import logging
from typing import Any

import apache_beam as beam
from apache_beam.runners.runner import PipelineState

from pipeline.config import RunConfig
from pipeline.console_text import format_summary
from pipeline.post_run import summary as summary_file
from pipeline.post_run.drift import check_drift, compute_drift, format_drift
from pipeline.report.render import write_run_report
from pipeline.runners import ends_here
from pipeline.schedule import FailureBudgetExceeded, check_failure_budget

_LOG = logging.getLogger("deconvseg")


def after_job(config: RunConfig, result: Any, runner: str, budget: float | None, elapsed: float) -> bool:
  """Completes what the launcher owes a finished job; returns whether the run has ended (not merely been submitted).

  Raises FailureBudgetExceeded, else DriftDetected (``--fail_on_drift``), once every output is written.
  """
  summary = None
  report_here = ends_here(runner)
  if report_here:
    summary = _finish_here(config, result, elapsed)
  elif (budget is not None or config.compare_to) and result.state == PipelineState.DONE:
    # a blocking Dataflow launch: the job has finished
    summary = complete_summary(config, result)
  elif config.compare_to:
    _LOG.warning(
      "The launcher returned before the job finished (a template or a non-blocking launch), so no "
      "drift was computed; once the job has finished, run: python -m pipeline.drift %s --compare_to %s",
      config.output,
      config.compare_to,
    )
  if not report_here:
    _LOG.info(
      "This launcher does not write the HTML report for %s; once the job has finished, run: "
      "python -m pipeline.report %s",
      runner,
      config.output,
    )
  if summary is not None:
    check_outcome(summary, budget, config)
  return report_here or result.state == PipelineState.DONE


def complete_summary(config: RunConfig, result: Any) -> dict[str, Any]:
  """The job's summary.json read once, with the io and drift blocks added, written once (atomically)."""
  job_summary = summary_file.read_job_summary(config.output)
  return summary_file.finish(
    config.output,
    job_summary,
    io=summary_file.io_of(job_summary, result),
    drift=_drift_of(job_summary, config),
  )


def check_outcome(summary: dict[str, Any], budget: float | None, config: RunConfig) -> None:
  """FailureBudgetExceeded, else DriftDetected (``--fail_on_drift``); drifted classes are logged either way."""
  try:
    check_failure_budget(summary["counts"], budget, config.output)
  except FailureBudgetExceeded:
    check_drift(summary.get("drift"), fail_on_drift=False)  # still log which classes moved
    raise
  check_drift(summary.get("drift"), config.fail_on_drift)


def _finish_here(config: RunConfig, result: Any, elapsed: float) -> dict[str, Any]:
  """A run that ended in this launcher: its summary completed, its report written, its table printed."""
  tiles = _counter(result, "tiles")
  if tiles is not None:
    _LOG.info("Finished in %.1f s: %s tiles through the model", elapsed, tiles)
  summary = complete_summary(config, result)
  if not config.no_report:
    write_run_report(config.output)  # OutputFailed: a report asked for and not written fails the run
  print(format_summary(summary, config.output, elapsed, report=not config.no_report), flush=True)
  if summary.get("drift"):
    print(format_drift(summary["drift"]), flush=True)
  return summary


def _drift_of(job_summary: dict[str, Any], config: RunConfig) -> dict[str, Any] | None:
  """The drift block (``--compare_to``); None without it, or when it cannot be computed (logged, not fatal)."""
  if not config.compare_to:
    return None
  try:
    return compute_drift(config.output, config.compare_to, config.drift_threshold, summary=job_summary)
  except Exception as exc:  # the run itself succeeded
    _LOG.warning(
      "could not compute the drift against %s (python -m pipeline.drift %s --compare_to %s): %s",
      config.compare_to,
      config.output,
      config.compare_to,
      exc,
    )
    return None


def _counter(result: Any, name: str) -> int | None:
  try:
    metrics = result.metrics().query(beam.metrics.MetricsFilter().with_name(name))["counters"]
    return sum(m.committed or m.attempted or 0 for m in metrics)
  except Exception:
    return None
