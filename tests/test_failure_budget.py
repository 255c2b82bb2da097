"""--max_failure_fraction: a scheduled run over too many bad inputs writes everything, then exits 3."""

import pytest
from PIL import Image
from pipeline_helpers import check_accounting, read_outputs, scene

from pipeline.run import main
from pipeline.schedule import FailureBudgetExceeded, check_failure_budget
from transforms.imaging.records import REPORT_FILE


@pytest.fixture(scope="module")
def one_bad_in_four(tmp_path_factory):
  folder = tmp_path_factory.mktemp("night")
  for index in range(3):
    Image.fromarray(scene(24, 40, seed=index)).save(folder / f"good_{index}.png")
  (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated upload")
  return folder


@pytest.mark.parametrize("budget, expected_code", [(None, 0), (0.5, 0), (0.25, 0), (0.2, 3), (0.0, 3)])
def test_exit_code_follows_the_budget_and_outputs_are_complete(
  capsys, tmp_path, fake_model, one_bad_in_four, budget, expected_code
):
  output = tmp_path / "out"
  argv = ["--input", str(one_bad_in_four / "*.png"), "--output", str(output), "--model", fake_model]
  if budget is not None:
    argv += ["--max_failure_fraction", str(budget)]
  assert main(argv) == expected_code
  err = capsys.readouterr().err
  summary, records, failures = read_outputs(str(output))
  check_accounting(summary, records, failures, expected_read=4)
  assert summary["counts"]["failed"] == 1 and failures[0]["uri"].endswith("broken.png")
  assert (output / REPORT_FILE).exists()
  if expected_code == 3:
    assert "1 of 4 inputs failed (25.0%)" in err and f"--max_failure_fraction={budget:g}" in err, err
    assert "Traceback" not in err


def test_budget_must_be_a_fraction(capsys, tmp_path, fake_model, one_bad_in_four):
  code = main(
    [
      "--input",
      str(one_bad_in_four / "*.png"),
      "--output",
      str(tmp_path / "out"),
      "--model",
      fake_model,
      "--max_failure_fraction",
      "1.5",
    ]
  )
  err = capsys.readouterr().err
  assert code == 2 and "--max_failure_fraction=1.5 is out of range" in err, err
  assert not (tmp_path / "out").exists()


def test_check_failure_budget_edges():
  check_failure_budget({"read": 0, "failed": 0}, 0.0, "OUT")
  check_failure_budget({"read": 10, "failed": 1}, 0.1, "OUT")
  check_failure_budget({"read": 10, "failed": 10}, None, "OUT")
  with pytest.raises(FailureBudgetExceeded, match="2 of 10 inputs failed"):
    check_failure_budget({"read": 10, "failed": 2}, 0.1, "OUT")
