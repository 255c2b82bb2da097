"""OUT/run_state.json, the one-run-per-folder lock and clean stops on SIGINT/SIGTERM.

The signal tests start a real ``python -m pipeline.run`` and signal it once its
first mask exists, so the stop lands in the middle of the work.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image
from pipeline_helpers import REPO, scene

from pipeline import run_state
from pipeline.errors import OptionsError
from pipeline.report.cli import main as report_main
from pipeline.run import main
from pipeline.run_state import LOCK_FILE, STATE_FILE, RunState
from transforms.imaging.records import MASKS_DIR, REPORT_FILE, SUMMARY_FILE

SIGNAL_IMAGES = 48  # 512² each: about 1.5 s of mask writing after the first mask, time to land a signal


@pytest.fixture(scope="module")
def few_images(tmp_path_factory):
  folder = tmp_path_factory.mktemp("few")
  for index in range(3):
    Image.fromarray(scene(32, 48, seed=index)).save(folder / f"img_{index}.png")
  return folder


@pytest.fixture(scope="module")
def many_images(tmp_path_factory):
  folder = tmp_path_factory.mktemp("many")
  for index in range(SIGNAL_IMAGES):
    Image.fromarray(scene(512, 512, seed=index)).save(folder / f"img_{index:02d}.png")
  return folder


@pytest.fixture
def sleeper():
  """A live process on this host whose pid a test can put into a lock; killed afterwards."""
  process = subprocess.Popen(["sleep", "300"])
  yield process
  process.kill()
  process.wait()


def _dead_pid():
  process = subprocess.Popen(["true"])
  process.wait()
  return process.pid


def _argv(inputs, output, model, *flags):
  return ["--input", str(inputs / "*.png"), "--output", str(output), "--model", model, *flags]


def _read(path):
  with open(path, encoding="utf-8") as handle:
    return json.load(handle)


def _lock_record(pid, started=None):
  return {
    "status": "running",
    "run_id": "other",
    "host": run_state.socket.gethostname(),
    "pid": pid,
    "started": started or run_state.now_iso(),
    "command": ["python", "-m", "pipeline.run"],
  }


def test_a_run_goes_from_running_to_complete(capsys, tmp_path, fake_model, few_images, monkeypatch):
  import pipeline.run as launcher

  output = tmp_path / "out"
  seen = {}
  segment = launcher._segment

  def watching(config, *args, **kwargs):
    seen["state"] = _read(output / STATE_FILE)
    seen["lock"] = _read(output / LOCK_FILE)
    return segment(config, *args, **kwargs)

  monkeypatch.setattr(launcher, "_segment", watching)
  handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
  assert main(_argv(few_images, output, fake_model)) == 0
  assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers

  assert seen["state"]["status"] == "running" and seen["state"]["pid"] == os.getpid()
  assert seen["lock"]["run_id"] == seen["state"]["run_id"]
  state, summary = _read(output / STATE_FILE), _read(output / SUMMARY_FILE)
  assert state["status"] == "complete" and state["finished"] >= state["started"]
  assert summary["status"] == "complete" and summary["run_id"] == state["run_id"] == seen["state"]["run_id"]
  assert state["command"][-4:] == ["--output", str(output), "--model", fake_model]
  assert not (output / LOCK_FILE).exists() and not (output / ".tmp").exists()
  assert run_state.incomplete_reason(str(output), summary) is None
  assert 'id="incomplete"' not in (output / REPORT_FILE).read_text()


def test_a_live_lock_stops_a_second_run_before_any_work(capsys, tmp_path, fake_model, few_images, sleeper):
  output = tmp_path / "out"
  output.mkdir()
  (output / LOCK_FILE).write_text(json.dumps(_lock_record(sleeper.pid)))

  assert main(_argv(few_images, output, fake_model)) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1, err
  host = run_state.socket.gethostname()
  assert err[0].startswith(f"deconvseg: error: another run is writing to {output} (pid {sleeper.pid} on {host}, ")
  assert "--force_unlock" in err[0]
  assert sorted(os.listdir(output)) == [LOCK_FILE]  # no state, no masks: nothing of this run
  assert _read(output / LOCK_FILE)["pid"] == sleeper.pid


def test_a_dead_runs_lock_is_taken_over(capsys, caplog, tmp_path, fake_model, few_images):
  output = tmp_path / "out"
  output.mkdir()
  dead = _dead_pid()
  (output / LOCK_FILE).write_text(json.dumps(_lock_record(dead)))

  assert main(_argv(few_images, output, fake_model)) == 0
  assert f"taking over the lock {output / LOCK_FILE} of pid {dead}" in caplog.text
  assert _read(output / STATE_FILE)["status"] == "complete"
  assert not (output / LOCK_FILE).exists()


def test_an_old_or_forced_lock_is_taken_over_and_release_keeps_anothers(tmp_path, sleeper):
  output = str(tmp_path / "out")
  os.makedirs(output)
  lock = os.path.join(output, LOCK_FILE)
  with open(lock, "w") as handle:
    json.dump(_lock_record(sleeper.pid, started="2020-01-01T00:00:00Z"), handle)
  first = RunState(output, ["--output", output])
  first.begin(max_age_hours=24)  # 6 years old: stale although the pid lives
  assert _read(lock)["run_id"] == first.run_id and _read(os.path.join(output, STATE_FILE))["status"] == "running"

  with pytest.raises(OptionsError, match=f"pid {os.getpid()} on .*--force_unlock"):
    RunState(output, []).begin()
  second = RunState(output, [])
  second.begin(force=True)
  first.finish("complete")  # the forced run holds the lock now: the first must not remove it, nor mark OUT
  assert _read(lock)["run_id"] == second.run_id
  assert _read(os.path.join(output, STATE_FILE)) == dict(second.record, status="running")
  second.finish("failed", error="boom")
  assert not os.path.exists(lock)
  reason = run_state.incomplete_reason(output)
  assert reason.startswith("this folder holds an incomplete run (failed at ") and "boom" in reason


def test_lock_max_age_is_checked(capsys, tmp_path, fake_model, few_images):
  assert main(_argv(few_images, tmp_path / "out", fake_model, "--lock_max_age_hours", "-1")) == 2
  assert "--lock_max_age_hours=-1.0 is out of range" in capsys.readouterr().err


def test_readers_name_a_killed_or_stopped_run(tmp_path):
  output = str(tmp_path)
  killed = dict(_lock_record(_dead_pid()), run_id="b")
  with open(os.path.join(output, STATE_FILE), "w") as handle:
    json.dump(killed, handle)
  reason = run_state.incomplete_reason(output, {"run_id": "a", "end_time": "2026-01-01T00:00:00Z"})
  assert reason.startswith(f"this folder holds an incomplete run (its process (pid {killed['pid']} on ")
  assert "killed or crashed); re-run with --skip_existing" in reason
  assert reason.endswith("; summary.json is from an earlier run (ended 2026-01-01T00:00:00Z)")

  with open(os.path.join(output, STATE_FILE), "w") as handle:
    json.dump(dict(killed, status="submitted", runner="DataflowRunner"), handle)
  assert "has not written its summary.json yet" in run_state.incomplete_reason(output, {"run_id": "a"})
  assert run_state.incomplete_reason(output, {"run_id": "b"}) is None  # the job's last step wrote it


def test_a_second_signal_exits_at_once(monkeypatch):
  exits = []

  def fake_exit(code):
    exits.append(code)
    raise SystemExit(code)

  monkeypatch.setattr(run_state, "_silence_beam", lambda: None)
  monkeypatch.setattr(run_state.os, "_exit", fake_exit)
  # The recorded signal is this process's state: left set, every later run() in the session would stop at once.
  monkeypatch.setattr(run_state, "_stop", dict(run_state._stop))
  previous = run_state.install_signal_handlers()
  try:
    with pytest.raises(run_state.RunStopped) as stopped:
      run_state._on_signal(signal.SIGINT, None)
    assert stopped.value.exit_code == 130 and run_state.stop_signal() == signal.SIGINT
    with pytest.raises(SystemExit):
      run_state._on_signal(signal.SIGINT, None)
    assert exits == [130]
  finally:
    run_state.restore_signal_handlers(previous)


def test_gcs_lock_refuses_a_live_run_and_survives_a_race(gcs_bucket, sleeper, monkeypatch):
  from google.api_core.exceptions import PreconditionFailed
  from google.cloud.storage import Blob

  output = f"gs://{gcs_bucket}/out"
  first = RunState(output, [])
  first.begin()
  with pytest.raises(OptionsError, match=f"another run is writing to {output} \\(pid {os.getpid()} "):
    RunState(output, []).begin()
  first.finish("complete")
  assert run_state.read_state(output)["status"] == "complete"

  # Between our read (no lock) and our write, another run takes the lock: the precondition fails
  # (the emulator does not enforce preconditions, so the failure is simulated) and we must judge its lock.
  upload = Blob.upload_from_string

  def racing(blob, data, **kwargs):
    if blob.name.endswith(LOCK_FILE) and kwargs.get("if_generation_match") == 0:
      upload(blob, json.dumps(_lock_record(sleeper.pid)).encode("utf-8"))
      raise PreconditionFailed("412 another writer")
    return upload(blob, data, **kwargs)

  monkeypatch.setattr(Blob, "upload_from_string", racing)
  with pytest.raises(OptionsError, match=f"pid {sleeper.pid} "):
    RunState(output, []).begin()
  monkeypatch.setattr(Blob, "upload_from_string", upload)
  sleeper.kill()
  sleeper.wait()
  taken = RunState(output, [])
  taken.begin()  # the racer's pid is gone now: stale
  taken.finish("complete")
  assert run_state.read_state(output)["run_id"] == taken.run_id


def _default_signals():
  # A child inherits ignored signals, and Python (as the pipeline) leaves an ignored SIGINT ignored. Something earlier
  # in a full test session leaves SIGINT ignored in the pytest process; the run under test must start as from a shell.
  signal.signal(signal.SIGINT, signal.SIG_DFL)
  signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _start(inputs, output, model, *flags):
  return subprocess.Popen(
    [sys.executable, "-m", "pipeline.run", *_argv(inputs, output, model, "--batch_size", "1", *flags)],
    cwd=REPO,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
    preexec_fn=_default_signals,
  )


def _signal_after_first_mask(process, output, signum):
  """Sends ``signum`` once the run has written a mask; returns (exit code, stderr)."""
  masks = output / MASKS_DIR

  def count():
    return len(list(masks.iterdir())) if masks.is_dir() else 0

  before = count()
  try:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
      if count() > before:
        break
      time.sleep(0.02)
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
  finally:
    if process.poll() is None:
      process.kill()
      process.wait()
  return process.returncode, err


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_run_cleanly(capsys, tmp_path, fake_model, many_images, signum, code):
  from pipeline.evaluate import main as evaluate_main

  output = tmp_path / "out"
  rc, err = _signal_after_first_mask(_start(many_images, output, fake_model), output, signum)
  name = signal.Signals(signum).name
  assert rc == code, err
  assert "Traceback" not in err, err
  assert err.strip().splitlines()[-1].startswith(f"deconvseg: stopped by {name} after "), err
  assert err.strip().endswith(f" of {SIGNAL_IMAGES} images; re-run with --skip_existing to resume"), err
  assert len([line for line in err.splitlines() if " ERROR " in line or "Error" in line]) == 0, err
  state = _read(output / STATE_FILE)
  written = len(list((output / MASKS_DIR).iterdir()))
  assert state["status"] == "stopped" and state["signal"] == name
  assert state["progress"] == f"{written} of {SIGNAL_IMAGES} images" and 0 < written < SIGNAL_IMAGES
  assert not (output / LOCK_FILE).exists()

  capsys.readouterr()
  assert report_main([str(output)]) == 2
  assert evaluate_main([str(output), "--truth", str(many_images / "*.png")]) == 2
  lines = capsys.readouterr().err.strip().splitlines()
  assert len(lines) == 2, lines
  for line in lines:
    assert f"this folder holds an incomplete run (stopped by {name} at {state['finished']} after {written} of" in line


@pytest.mark.slow
def test_kill_during_a_rerun_is_seen_and_skip_existing_completes(capsys, tmp_path, fake_model, many_images):
  output = tmp_path / "out"
  assert main(_argv(many_images, output, fake_model)) == 0
  first = _read(output / STATE_FILE)
  for mask in (output / MASKS_DIR).iterdir():  # half of the images must be made again
    if int(mask.name[4:6]) % 2:
      mask.unlink()

  rc, _ = _signal_after_first_mask(_start(many_images, output, fake_model), output, signal.SIGKILL)
  assert rc == -signal.SIGKILL
  state = _read(output / STATE_FILE)
  assert state["status"] == "running" and state["run_id"] != first["run_id"]
  reason = run_state.incomplete_reason(str(output), _read(output / SUMMARY_FILE))
  assert "killed or crashed" in reason and "summary.json is from an earlier run" in reason, reason
  capsys.readouterr()
  assert report_main([str(output)]) == 0
  assert 'id="incomplete">this folder holds an incomplete run' in (output / REPORT_FILE).read_text()

  assert main(_argv(many_images, output, fake_model, "--skip_existing")) == 0
  state, summary = _read(output / STATE_FILE), _read(output / SUMMARY_FILE)
  assert state["status"] == "complete" and summary["run_id"] == state["run_id"]
  assert summary["counts"]["segmented"] == SIGNAL_IMAGES and summary["counts"]["reused_existing"] > 0
  assert 'id="incomplete"' not in (output / REPORT_FILE).read_text()
