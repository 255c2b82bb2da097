"""Short text for messages, shared by every layer (model is the bottom one, so transforms and pipeline may import it)."""


def one_line(exc: BaseException, limit: int | None = None) -> str:
  """``str(exc)`` with its white space folded to single spaces, cut at ``limit`` characters (no cut when None)."""
  return " ".join(str(exc).split())[:limit]
