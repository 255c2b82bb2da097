"""The crash harness in the suite: 30 seeded kill points (SIGKILL and SIGTERM), each resumed and checked.

``tests/crash_harness.py`` runs the same check from the command line with
any seed and count, on the bundled model by default.
"""

import pytest
from crash_harness import run_harness

KILL_POINTS = 30
# Three kill points at a time, each in its own folder with its own fork server: a run keeps a core busy for
# only part of its time (forks, waits between threads), so three fill two cores (72 s -> 40 s here). The kill
# times are drawn on the time a clean run takes beside the others.
SLOTS = 3


@pytest.mark.slow
def test_every_kill_point_resumes_to_the_clean_runs_folder(tmp_path, fake_model):
  lines = []
  points = run_harness(fake_model, str(tmp_path), kills=KILL_POINTS, seed=7, report=lines.append, slots=SLOTS)
  print("\n".join(lines))  # pytest -s shows the kill points
  failed = [point.line() for point in points if point.problems]
  assert not failed, "\n".join(lines)
  assert len(points) == KILL_POINTS
  # The kills landed in the middle of runs, at several stages (the drawn times scale with the machine).
  interrupted = [point for point in points if point.exit_code != 0]
  assert len(interrupted) >= KILL_POINTS // 2, "\n".join(lines)
  # (which stages a drawn time lands in depends on the machine: the records/summary/report stage is short)
  assert len({point.stage.split(" ")[0] for point in interrupted}) >= 2, "\n".join(lines)
  assert {point.signal for point in interrupted} == {"SIGKILL", "SIGTERM"}, "\n".join(lines)
