"""After the job: what a run's output folder gets once the job has ended.

- ``finish``: the launcher's end of a run: the final summary, the report, the
  end-of-run table, and the outcome (failure budget, then drift);
- ``summary``: the one writer of the final ``summary.json``: the job's summary
  read once, the ``io`` and ``drift`` blocks added, written once (atomically);
- ``drift``: the run-to-run drift statistics (PSI, KS, share change).

The report itself is ``pipeline.report`` (it also rebuilds the page of any
finished run on its own); ``python -m pipeline.drift`` is the drift check
after the fact.
"""
