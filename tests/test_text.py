"""model.text.one_line: the one-line exception text every layer's messages use."""

from model.text import one_line


def test_folds_white_space_and_cuts_at_the_limit():
  exc = ValueError("  first line\n\tsecond   line\r\nthird ")
  assert one_line(exc) == "first line second line third"
  assert one_line(exc, 10) == "first line"
  assert one_line(exc, 300) == "first line second line third"


def test_an_empty_message_stays_empty_so_callers_can_fall_back():
  assert one_line(RuntimeError()) == ""
  assert one_line(RuntimeError("\n  \n"), 5) == ""


def test_takes_anything_with_a_str():
  assert one_line(KeyError("missing key")) == "'missing key'"
  assert one_line("a\nb", 2) == "a "
