"""Tests of transforms/imaging/records.py: the pipeline's records, and credentials redacted from failures."""

from transforms.imaging.records import Failure, redact


def test_failure_records_never_carry_credentials():
  failure = Failure(
    "gs://user:secret@bucket/a.png?X-Goog-Signature=abc123&x=1",
    "a.png",
    "read",
    "OSError",
    "403 for https://h/o?access_token=ya29.tok and header Bearer ya29.xyz",
  )
  text = str(failure.to_dict())
  for secret in ("secret", "abc123", "ya29"):
    assert secret not in text
  assert redact("gs://bucket/plain/path.png") == "gs://bucket/plain/path.png"
