"""Writing the JSON files the model commands leave beside their outputs (cards, class lists, records)."""

import json
from typing import Any


def write_json_file(path: str, value: Any, indent: int = 2) -> None:
  """value as indented JSON ending in a newline, as an editor would leave the file."""
  with open(path, "w") as handle:
    json.dump(value, handle, indent=indent)
    handle.write("\n")
