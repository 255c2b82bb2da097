"""An output folder to trust after a full disk or a lost permission, inputs none of which go missing, no leftovers.

* Every write is whole or absent: a fake disk (``_Disk``) fills up, fails
  with EIO or loses its write permission at many points of a run, in this
  process; a real tmpfs fills up under a child process (root only). After
  each: the error is one line naming the file and the cause, every file
  under OUT decodes, no temporary file is left, and nothing claims success.
* Every entry a glob matches or a manifest lists is read or failed with a
  reason, by one rule; directories are skipped with a counted warning.
* The temporary folders and files of killed runs are removed, and only those.
"""

import errno
import io
import json
import logging
import os
import socket
import subprocess
import sys

import pytest
from apache_beam.io import textio
from apache_beam.io.localfilesystem import LocalFileSystem
from PIL import Image
from pipeline_helpers import REPO, check_accounting, encode, output_problems, read_outputs, run_pipeline, scene

from transforms import out_files
from transforms.imaging.records import FAILURES_DIR, MASKS_DIR, STATS_DIR, SUMMARY_FILE
from transforms.leftovers import Leftovers, remove_leftovers
from transforms.out_files import (
  OutputError,
  OutputFailed,
  QuietResourceErrors,
  atomic_write,
  describe_output_error,
  write_atomically,
)
from transforms.read import DIRECTORY, entry_problem

STATE_FILE = "run_state.json"  # pipeline.run_state's record of the folder's run


# ---------------------------------------------------------------- a disk that fails on cue


class _Disk:
  """Byte budget shared by every file the run opens for writing; past it, writes fail with ``error``.

  ``deny_after`` files opened, every further open for writing fails with
  EACCES (a permission lost mid-run). Failures persist, as on a real disk.
  """

  def __init__(self, free=None, error=errno.ENOSPC, deny_after=None):
    self.free, self.error, self.deny_after = free, error, deny_after
    self.written, self.opened = 0, 0
    self.files = []  # [path, bytes written] in the order they were opened

  def open(self, path):
    self.opened += 1
    if self.deny_after is not None and self.opened > self.deny_after:
      raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
    self.files.append([path, 0])
    return self.files[-1]

  def take(self, size):
    allowed = size if self.free is None else max(0, min(size, self.free - self.written))
    self.written += allowed
    return allowed


class _DiskFile:
  """A file opened for writing on ``_Disk``: a write past the budget writes what fits, then raises."""

  def __init__(self, handle, disk, entry):
    self._handle, self._disk, self._entry = handle, disk, entry

  def write(self, data):
    data = bytes(data)
    allowed = self._disk.take(len(data))
    self._entry[1] += allowed
    if allowed < len(data):
      self._handle.write(data[:allowed])
      raise OSError(self._disk.error, os.strerror(self._disk.error))
    return self._handle.write(data)

  def __getattr__(self, name):
    return getattr(self._handle, name)

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self._handle.close()


@pytest.fixture
def disk(monkeypatch):
  """Routes the run's writes (``atomic_write`` and Beam's local file sinks) through a ``_Disk``; returns a setter."""
  state = {"disk": _Disk()}
  real_path_open = LocalFileSystem._path_open

  def path_open(self, path, mode, *args, **kwargs):
    if "w" not in mode:
      return real_path_open(self, path, mode, *args, **kwargs)
    entry = state["disk"].open(path)
    return _DiskFile(real_path_open(self, path, mode, *args, **kwargs), state["disk"], entry)

  def plain_open(path, mode="r", *args, **kwargs):
    if "w" not in mode:
      return open(path, mode, *args, **kwargs)
    entry = state["disk"].open(path)
    return _DiskFile(open(path, mode, *args, **kwargs), state["disk"], entry)

  monkeypatch.setattr(LocalFileSystem, "_path_open", path_open)
  monkeypatch.setattr(out_files, "open", plain_open, raising=False)

  def use(new):
    state["disk"] = new
    return new

  return use


# ---------------------------------------------------------------- what a folder must look like


def _problems(out) -> list:
  return output_problems(out)


def _claims_success(out) -> bool:
  """Whether OUT says its run finished: the run state if there is one, else a summary.json."""
  state = os.path.join(out, STATE_FILE)
  if os.path.exists(state):
    with open(state) as handle:
      return json.load(handle).get("status") == "complete"
  return os.path.exists(os.path.join(out, SUMMARY_FILE))


def _error_line(exc, out) -> str:
  """The launcher's line for an exception that ended a run."""
  if isinstance(exc, OutputFailed):
    return str(exc)
  return describe_output_error(exc, str(out))


def _images(folder, count=5, size=(40, 56)):
  folder.mkdir(parents=True, exist_ok=True)
  for i in range(count):
    (folder / f"img{i}.png").write_bytes(encode(scene(size[0] + i, size[1], seed=i)))
  return folder


def _run(inputs, out, model, *flags):
  """None when the run finished, else the exception that ended it."""
  try:
    run_pipeline(str(inputs / "*.png"), str(out), model, "--overlays", *flags)
  except Exception as exc:
    return exc
  return None


# ---------------------------------------------------------------- the atomic writer


def test_atomic_write_that_fails_keeps_the_old_file_and_leaves_no_temp(tmp_path, disk):
  out = tmp_path / "out"
  target = out / MASKS_DIR / "a.png"
  atomic_write(str(out), str(target), b"old" * 100)
  disk(_Disk(free=50))
  with pytest.raises(OutputError) as caught:
    atomic_write(str(out), str(target), b"new" * 100)
  assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(target)
  assert target.read_bytes() == b"old" * 100
  assert os.listdir(out / out_files.TEMP_DIR) == []


def test_write_atomically_beside_the_file_outside_out(tmp_path, disk):
  target = tmp_path / "elsewhere" / "report.html"
  write_atomically(str(target), b"<html></html>")
  disk(_Disk(free=3))
  with pytest.raises(OutputError):
    write_atomically(str(target), b"<html>longer</html>")
  assert target.read_bytes() == b"<html></html>"
  assert os.listdir(target.parent) == ["report.html"]


def test_write_atomically_on_cloud_storage_is_one_object(gcs_emulator, gcs_bucket):
  path = f"gs://{gcs_bucket}/out/masks/a.png"
  atomic_write(f"gs://{gcs_bucket}/out", path, b"mask")
  assert gcs_emulator.download_prefix(f"gs://{gcs_bucket}/out") == {"masks/a.png": b"mask"}


# ---------------------------------------------------------------- the one line


def _wrapped(error):
  """``error`` as Beam re-raises a step's exception: a RuntimeError whose context is the original."""
  try:
    try:
      raise error
    except Exception as exc:
      raise RuntimeError(f"{exc} [while running 'SegmentImages/WriteFailures/WriteJsonLines']") from exc
  except RuntimeError as outer:
    return outer


def test_resource_errors_become_one_line_naming_path_and_cause():
  line = describe_output_error(
    _wrapped(OutputError(errno.ENOSPC, "No space left on device", "/out/masks/a.png")), "/out"
  )
  assert line.startswith("cannot write /out/masks/a.png: no space left on device;")
  assert "\n" not in line and "--skip_existing" in line
  # Beam's sinks name no file: the step names the folder.
  line = describe_output_error(_wrapped(OSError(errno.EDQUOT, "Disk quota exceeded")), "/out")
  assert line.startswith(f"cannot write /out/{FAILURES_DIR}/: disk quota exceeded")
  line = describe_output_error(_wrapped(PermissionError(errno.EACCES, "Permission denied", "/out/x")), "/out")
  assert "permission denied" in line
  assert describe_output_error(_wrapped(OSError(errno.EIO, "I/O error", "/out/y")), "/out").startswith(
    "cannot write /out/y: input/output error"
  )
  assert describe_output_error(_wrapped(ValueError("a bug")), "/out") is None
  # Reading a file outside OUT is no write: its errors keep their own report.
  assert (
    describe_output_error(_wrapped(PermissionError(errno.EACCES, "Permission denied", "/in/list.txt")), "/out") is None
  )
  assert describe_output_error(_wrapped(FileNotFoundError(errno.ENOENT, "gone", "/in/a.png")), "/out") is None


def test_cloud_storage_refusals_are_resource_errors():
  from google.api_core import exceptions

  line = describe_output_error(_wrapped(exceptions.Forbidden("no storage.objects.create access")), "gs://b/out")
  assert "permission denied by Cloud Storage (HTTP 403)" in line
  line = describe_output_error(_wrapped(exceptions.Forbidden("Quota exceeded for bucket")), "gs://b/out")
  assert "quota exceeded" in line
  assert describe_output_error(_wrapped(exceptions.NotFound("no such bucket")), "gs://b/out") is None


def test_beam_tracebacks_of_resource_errors_are_not_logged():
  quiet = QuietResourceErrors()

  def record(error):
    return logging.LogRecord(
      "apache_beam.runners.common", logging.ERROR, "", 0, "failed", (), (type(error), error, None)
    )

  assert not quiet.filter(record(_wrapped(OSError(errno.ENOSPC, "No space left on device"))))
  assert quiet.filter(record(_wrapped(ValueError("a bug"))))
  assert quiet.filter(logging.LogRecord("x", logging.INFO, "", 0, "plain", (), None))


# ---------------------------------------------------------------- runs on a failing disk


def _fill_points(files):
  """(file, disk size) pairs that run out in the middle of a write: the first writes, one mask or overlay
  half-way, and every write from the stats file on (stats, failures, summary, its rewrite, report, run state)."""
  first_sink = next((i for i, (path, _) in enumerate(files) if "beam-temp-" in path), len(files) // 2)
  picks = sorted({0, 1, 2, first_sink // 2, *range(first_sink, len(files))})
  starts = [sum(size for _, size in files[:i]) for i in range(len(files))]
  return [(files[i][0], starts[i] + files[i][1] // 2) for i in picks if files[i][1]]


@pytest.mark.slow
def test_a_disk_that_fills_up_at_any_point_leaves_only_whole_files(tmp_path, fake_model, disk):
  inputs = _images(tmp_path / "in")
  measured = disk(_Disk())
  assert _run(inputs, tmp_path / "full", fake_model) is None
  assert _problems(tmp_path / "full") == [] and _claims_success(tmp_path / "full")
  points = _fill_points(measured.files)
  assert len(points) >= 8, measured.files
  for i, (writing, free) in enumerate(points):
    out = tmp_path / f"out{i}"
    disk(_Disk(free=free))
    exc = _run(inputs, out, fake_model)
    assert exc is not None, f"a disk full while writing {writing} let the run finish"
    line = _error_line(exc, out)
    assert line and "no space left on device" in line and str(out) in line, (writing, line, exc)
    assert "\n" not in line
    assert _problems(out) == [], writing
    assert not _claims_success(out), writing


@pytest.mark.parametrize(
  "make, cause",
  [
    (lambda: _Disk(free=4000, error=errno.EIO), "input/output error"),
    (lambda: _Disk(deny_after=3), "permission denied"),
    (lambda: _Disk(free=9000, error=errno.EDQUOT), "disk quota exceeded"),
  ],
  ids=["EIO", "permission-lost", "quota"],
)
def test_io_errors_and_lost_permissions_stop_the_run_in_one_line(tmp_path, fake_model, disk, make, cause):
  inputs = _images(tmp_path / "in")
  out = tmp_path / "out"
  disk(make())
  exc = _run(inputs, out, fake_model)
  assert exc is not None
  line = _error_line(exc, out)
  assert line and cause in line and str(out) in line, (line, exc)
  assert _problems(out) == []
  assert not _claims_success(out)


def test_a_report_that_cannot_be_written_fails_the_run(tmp_path, fake_model, monkeypatch):
  """Unless --no_report: then there is no report and the run succeeds."""
  inputs = _images(tmp_path / "in", count=2)
  real = out_files.atomic_write

  def refuse_report(output, path, data, mime_type="application/octet-stream"):
    if path.endswith("report.html"):
      raise OutputError(errno.ENOSPC, "No space left on device", path)
    return real(output, path, data, mime_type)

  monkeypatch.setattr(out_files, "atomic_write", refuse_report)
  out = tmp_path / "out"
  exc = _run(inputs, out, fake_model)
  assert exc is not None
  line = _error_line(exc, out)
  assert line and "report.html" in line and "no space left on device" in line, (line, exc)
  assert not (out / "report.html").exists() and not _claims_success(out)
  skipped = tmp_path / "no_report"
  assert _run(inputs, skipped, fake_model, "--no_report") is None
  assert not (skipped / "report.html").exists() and _claims_success(skipped)


def _mount_tmpfs(folder, kib):
  folder.mkdir(exist_ok=True)
  done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(folder)], capture_output=True)
  return done.returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_real_full_disk_gives_one_line_and_no_half_written_file(tmp_path, fake_model):
  """The probe of the report: a run on a small tmpfs, in a child process, so exit status and stderr are real."""
  inputs = _images(tmp_path / "in", count=8, size=(120, 150))
  mount = tmp_path / "mnt"
  if not _mount_tmpfs(mount, 64 * 1024):
    pytest.skip("cannot mount a tmpfs here")
  try:
    done = _cli(inputs, mount / "out", fake_model)
    assert done.returncode == 0, done.stderr[-3000:]
    used = os.statvfs(mount)
    needed_kib = (used.f_blocks - used.f_bfree) * used.f_frsize // 1024
  finally:
    subprocess.run(["umount", str(mount)], check=True)
  for fraction in (0.3, 0.7, 0.95):
    if not _mount_tmpfs(mount, max(8, int(needed_kib * fraction))):
      pytest.skip("cannot mount a tmpfs here")
    try:
      out = mount / "out"
      done = _cli(inputs, out, fake_model)
      errors = [line for line in done.stderr.splitlines() if line.startswith("deconvseg: error:")]
      assert done.returncode not in (0, None), (fraction, done.stderr[-3000:])
      assert len(errors) == 1 and str(out) in errors[0] and "no space left on device" in errors[0], done.stderr
      assert "Traceback" not in done.stderr, done.stderr[-3000:]
      assert _problems(out) == [] and not _claims_success(out), fraction
    finally:
      subprocess.run(["umount", str(mount)], check=True)


def _cli(inputs, out, model):
  return subprocess.run(
    [sys.executable, "-m", "pipeline.run", "--input", str(inputs / "*.png"), "--output", str(out), "--model", model],
    capture_output=True,
    text=True,
    timeout=300,
    cwd=REPO,
  )


# ---------------------------------------------------------------- nothing dropped


def _odd_entries(folder):
  """Good images, and every kind of entry Beam's glob used to drop; returns {name: expected reason}."""
  _images(folder, count=3)
  os.symlink("nowhere.png", folder / "dangling.png")
  os.symlink("loop_b.png", folder / "loop_a.png")
  os.symlink("loop_a.png", folder / "loop_b.png")
  os.mkfifo(folder / "pipe.png")
  here = os.getcwd()
  os.chdir(folder)  # a socket's path is limited to about 100 bytes
  try:
    server = socket.socket(socket.AF_UNIX)
    server.bind("sock.png")
    server.close()
  finally:
    os.chdir(here)
  (folder / "locked.png").write_bytes(encode(scene(30, 30)))
  (folder / "sub.png").mkdir()
  (folder / "sub.png" / "inner.png").write_bytes(encode(scene(30, 30)))
  return {
    "dangling.png": "dangling symbolic link to nowhere.png",
    "loop_a.png": "symbolic link loop",
    "loop_b.png": "symbolic link loop",
    "pipe.png": "not a regular file (FIFO)",
    "sock.png": "not a regular file (socket)",
    "locked.png": "permission denied",
  }


@pytest.fixture
def locked(monkeypatch):
  """Files named locked.png are unreadable (the tests run as root, which reads anything)."""
  real = os.access
  monkeypatch.setattr(os, "access", lambda path, mode, **kw: "locked.png" not in str(path) and real(path, mode, **kw))


def test_entry_problem_names_every_kind(tmp_path, locked):
  expected = _odd_entries(tmp_path)
  for name, reason in expected.items():
    assert entry_problem(str(tmp_path / name)) == reason, name
  assert entry_problem(str(tmp_path / "img0.png")) is None
  assert entry_problem(str(tmp_path / "sub.png")) == DIRECTORY
  assert entry_problem(str(tmp_path / "absent.png")) == "no such file"


@pytest.mark.slow
def test_every_entry_a_glob_or_a_manifest_names_is_read_or_failed(tmp_path, fake_model, locked, caplog):
  folder = tmp_path / "in"
  expected = _odd_entries(folder)
  manifest = tmp_path / "list.txt"
  manifest.write_text("\n".join(f"in/{name}" for name in sorted(os.listdir(folder))) + "\n")
  reasons = {}
  for source, flags in (
    ("glob", ["--input", str(folder / "*")]),
    ("manifest", ["--manifest", str(manifest)]),
  ):
    out = tmp_path / f"out_{source}"
    caplog.clear()
    with caplog.at_level(logging.WARNING):
      from pipeline.run import run

      run([*flags, "--output", str(out), "--model", fake_model], save_main_session=False)
    summary, records, failures = read_outputs(str(out))
    check_accounting(summary, records, failures, expected_read=3 + len(expected))
    assert sorted(key.split("/")[-1] for key in records) == [f"img{i}.png" for i in range(3)], source
    assert {f["stage"] for f in failures} == {"read"}
    reasons[source] = {f["key"].split("/")[-1]: f["message"] for f in failures}
    assert reasons[source] == expected, source
    warnings = [r.getMessage() for r in caplog.records if "skipped 1 directory" in r.getMessage()]
    assert len(warnings) == 1 and str(folder / "sub.png") in warnings[0], (source, caplog.text[-2000:])
  assert reasons["glob"] == reasons["manifest"]


# ---------------------------------------------------------------- leftovers of killed runs


def _beam_temp(prefix):
  """A temp folder name made by Beam's own file sink code, so the test follows Beam's naming."""
  return os.path.basename(textio._TextSink(prefix)._create_temp_dir(prefix))


def _kill_leftovers(out):
  """What kill -9 leaves: Beam sink temp folders (one holding a partial shard) and OUT/.tmp files."""
  stats = out / STATS_DIR / _beam_temp(str(out / STATS_DIR / "stats"))
  stats.mkdir(parents=True)
  (stats / "0d2c.stats.jsonl").write_text('{"uri": "a", "ke')
  (out / FAILURES_DIR / _beam_temp(str(out / FAILURES_DIR / "failures"))).mkdir(parents=True)
  (out / out_files.TEMP_DIR).mkdir()
  for name in ("3f" * 16, "a1" * 16):
    (out / out_files.TEMP_DIR / name).write_bytes(b"\x89PNG half")


def _look_alikes(out):
  """Not leftovers: other names, even look-alikes, stay."""
  keep = [
    out / STATS_DIR / "stats.jsonl",
    out / STATS_DIR / "beam-temp-notes",
    out / MASKS_DIR / _beam_temp(str(out / MASKS_DIR / "m")) / "x.png",
    out / out_files.TEMP_DIR / "notes.txt",
  ]
  for path in keep:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("keep")
  return keep


def test_remove_leftovers_removes_exactly_the_temporaries_of_killed_runs(tmp_path):
  out = tmp_path / "out"
  _kill_leftovers(out)
  keep = _look_alikes(out)
  removed = remove_leftovers(str(out))
  assert removed == Leftovers(folders=2, files=2) and removed.total == 4
  assert "2 beam-temp folders and 2 temporary files" in removed.describe(str(out))
  assert all(path.exists() for path in keep)
  assert not [name for name in os.listdir(out / STATS_DIR) if name.startswith("beam-temp-stats")]
  assert os.listdir(out / FAILURES_DIR) == []
  assert os.listdir(out / out_files.TEMP_DIR) == ["notes.txt"]
  assert remove_leftovers(str(out)) == Leftovers()
  assert remove_leftovers(str(tmp_path / "absent")) == Leftovers()


def test_remove_leftovers_on_cloud_storage(tmp_path, gcs_emulator, gcs_bucket):
  local = tmp_path / "out"
  _kill_leftovers(local)
  _look_alikes(local)
  remote = f"gs://{gcs_bucket}/out"
  gcs_emulator.upload_folder(str(local), remote)
  # The empty failures temp folder was no object: Cloud Storage has only what a folder holds.
  assert remove_leftovers(remote) == Leftovers(folders=1, files=2)
  assert sorted(gcs_emulator.download_prefix(remote)) == sorted(
    [
      f"{STATS_DIR}/stats.jsonl",
      f"{STATS_DIR}/beam-temp-notes",
      f"{MASKS_DIR}/{os.listdir(local / MASKS_DIR)[0]}/x.png",
      f"{out_files.TEMP_DIR}/notes.txt",
    ]
  )


def test_a_run_removes_what_a_killed_run_left_and_says_how_many(tmp_path, fake_model, caplog):
  inputs = _images(tmp_path / "in", count=2)
  out = tmp_path / "out"
  _kill_leftovers(out)
  with caplog.at_level(logging.INFO):
    assert _run(inputs, out, fake_model) is None
  assert "Removed 2 beam-temp folders and 2 temporary files in .tmp/" in caplog.text
  assert _problems(out) == []
  for folder in (STATS_DIR, FAILURES_DIR):
    assert not [name for name in os.listdir(out / folder) if name.startswith("beam-temp-")]


def test_half_written_file_check_sees_a_cut_png(tmp_path):
  """The checker itself: a cut PNG and a cut JSON are caught."""
  out = tmp_path / "out"
  (out / MASKS_DIR).mkdir(parents=True)
  buffer = io.BytesIO()
  Image.new("P", (64, 64)).save(buffer, "PNG")
  (out / MASKS_DIR / "a.png").write_bytes(buffer.getvalue()[:-20])
  (out / SUMMARY_FILE).write_text('{"counts": {')
  assert len(_problems(out)) == 2
