"""docs/ARCHITECTURE.md names only modules and files that exist, so its picture and "where a change goes" stay true."""

import os
import re

from pipeline_helpers import REPO

ARCHITECTURE = os.path.join(REPO, "docs", "ARCHITECTURE.md")
PACKAGES = ("model", "transforms", "pipeline", "bench", "tests", "scripts", "deploy", "docs", "samples")


def _names(pattern):
  with open(ARCHITECTURE, encoding="utf-8") as handle:
    return sorted(set(re.findall(pattern, handle.read())))


def _basenames():
  names = set()
  for _, dirs, files in os.walk(REPO):
    dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("runs", "data", "output")]
    names.update(files)
  return names


def test_every_file_path_it_names_exists():
  paths = _names(r"`([\w./-]+\.(?:py|sh))`")
  assert len(paths) > 30
  basenames = _basenames()
  missing = [
    path
    for path in paths
    if not os.path.exists(os.path.join(REPO, path)) and not ("/" not in path and path in basenames)
  ]
  assert missing == [], f"docs/ARCHITECTURE.md names files that do not exist: {missing}"


def test_every_dotted_module_it_names_imports_from_a_real_module():
  modules = _names(r"`((?:%s)(?:\.\w+)+)`" % "|".join(PACKAGES[:4]))
  assert modules
  missing = []
  for name in modules:
    parts = name.split(".")
    # `model.engines.choice.choose` names a function of a module: some prefix must be a module or a package.
    prefixes = [os.path.join(REPO, *parts[:end]) for end in range(len(parts), 1, -1)]
    if not any(os.path.isfile(prefix + ".py") or os.path.isdir(prefix) for prefix in prefixes):
      missing.append(name)
  assert missing == [], f"docs/ARCHITECTURE.md names modules that do not exist: {missing}"
