"""The error a bad invocation raises: the launcher prints its message and exits 2 before any work."""


class OptionsError(ValueError):
  """A bad invocation; the message is meant for the person who typed it."""
