"""Flex Template ``metadata.json`` generated from the pipeline's own options classes.

    python -m pipeline.cloud.flex_metadata > deploy/flex_template/metadata.json

Generating it (instead of writing it by hand) keeps the template's parameters
exactly the pipeline's flags: every ``PipelineOptions`` subclass defined in the
``pipeline`` package contributes one parameter per option (per argparse
``dest``), with its help text and a validation regex from its type or choices.

Flex Templates pass every parameter as ``--name=value``. Plain argparse
``store_true`` flags reject a value, so :func:`flex_argv` rewrites
``--flag=true`` to ``--flag`` (and drops ``--flag=false``) before the
pipeline parses its arguments; ``deploy/flex_template/main.py`` applies it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

PACKAGE = "pipeline"
# Flags the pipeline cannot run without (it also needs one of input/manifest/tfrecord).
REQUIRED = ("output",)
TEMPLATE_NAME = "deconvseg-segmentation"
TEMPLATE_DESCRIPTION = (
  "Segment every image under a (date-partitioned) Cloud Storage prefix with the deconvseg "
  "model: class masks, per-image statistics, a run summary and failure records."
)
_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")


def project_options_classes(package: str = PACKAGE) -> list[type[PipelineOptions]]:
  """``PipelineOptions`` subclasses defined in ``package`` (importing its modules that define any).

  Modules (subpackages' too) are imported only when their source mentions
  ``PipelineOptions``, so listing options does not load the model code and TensorFlow.
  """
  root = importlib.import_module(package)
  for name in _modules_defining_options(package, root.__path__):
    importlib.import_module(name)
  found, pending = {}, list(PipelineOptions.__subclasses__())
  while pending:
    cls = pending.pop()
    pending.extend(cls.__subclasses__())
    if cls.__module__.split(".")[0] == package and "_add_argparse_args" in cls.__dict__:
      found[f"{cls.__module__}.{cls.__qualname__}"] = cls
  # The pipeline's main options first, then the others by module name.
  return sorted(found.values(), key=lambda c: (c.__module__ != f"{package}.options", c.__module__, c.__qualname__))


def _modules_defining_options(package: str, folders: Iterable[str]) -> Iterator[str]:
  """Names of the modules in ``folders`` (``package``'s), and in their subpackages, whose source mentions
  ``PipelineOptions)``; read from their files, so no subpackage's ``__init__`` is imported."""
  for folder in folders:
    for module_info in pkgutil.iter_modules([folder]):
      name = f"{package}.{module_info.name}"
      if module_info.ispkg:
        yield from _modules_defining_options(name, [os.path.join(folder, module_info.name)])
        continue
      source = os.path.join(folder, f"{module_info.name}.py")
      if not os.path.isfile(source):
        continue
      with open(source, encoding="utf-8") as handle:
        if "PipelineOptions)" in handle.read():
          yield name


def _actions(cls: type[PipelineOptions]) -> list[argparse.Action]:
  parser = _BeamArgumentParser(allow_abbrev=False, add_help=False)
  cls._add_argparse_args(parser)
  return [a for a in parser._actions if a.option_strings]


def _takes_value(action: argparse.Action) -> bool:
  return action.nargs != 0


def _is_boolean(actions: Sequence[argparse.Action]) -> bool:
  return all(not _takes_value(a) or getattr(a.type, "__name__", "") == "true/false" for a in actions)


def _regex(actions: Sequence[argparse.Action]) -> list[str]:
  if _is_boolean(actions):
    return ["^(true|false)$"]
  action = next(a for a in actions if _takes_value(a))
  if action.choices:
    return ["^(%s)$" % "|".join(str(c) for c in action.choices)]
  if action.type is int:
    return ["^-?[0-9]+$"]
  if action.type is float:
    return [r"^-?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$"]
  return []


def _flag_name(actions: Sequence[argparse.Action]) -> str:
  """The parameter name: the option's value-taking ``--flag`` (``store_true`` flags: the flag)."""
  preferred = [a for a in actions if _takes_value(a)] or list(actions)
  return preferred[0].option_strings[-1].lstrip("-")


def parameters(classes: Sequence[type[PipelineOptions]]) -> list[dict[str, Any]]:
  """One Flex Template parameter per option ``dest`` of ``classes``, in definition order."""
  params, seen = [], set()
  for cls in classes:
    by_dest: dict[str, list[argparse.Action]] = {}
    for action in _actions(cls):
      by_dest.setdefault(action.dest, []).append(action)
    for dest, actions in by_dest.items():
      if dest in seen:
        raise ValueError(
          f"option {dest!r} is defined by more than one pipeline options class "
          f"(again in {cls.__module__}.{cls.__qualname__})."
        )
      seen.add(dest)
      name = _flag_name(actions)
      helped = next((a.help for a in actions if a.help and "--" + name in a.option_strings), None) or next(
        (a.help for a in actions if a.help), ""
      )
      param = {
        "name": name,
        "label": name.replace("_", " ").capitalize(),
        "helpText": " ".join(str(helped).split()),
        "isOptional": name not in REQUIRED,
      }
      regexes = _regex(actions)
      if regexes:
        param["regexes"] = regexes
      params.append(param)
  return params


def metadata(classes: Sequence[type[PipelineOptions]] | None = None) -> dict[str, Any]:
  """The whole ``metadata.json`` document."""
  classes = project_options_classes() if classes is None else classes
  return {"name": TEMPLATE_NAME, "description": TEMPLATE_DESCRIPTION, "parameters": parameters(classes)}


def flex_argv(argv: Sequence[str], classes: Sequence[type[PipelineOptions]] | None = None) -> list[str]:
  """Turn ``--flag=true`` into ``--flag`` and drop ``--flag=false`` for value-less flags."""
  classes = project_options_classes() if classes is None else classes
  switches = {
    flag for cls in classes for action in _actions(cls) if not _takes_value(action) for flag in action.option_strings
  }
  rewritten = []
  for arg in argv:
    flag, equals, value = arg.partition("=")
    if equals and flag in switches:
      wanted = value.strip().lower()
      if wanted not in _TRUE + _FALSE:
        raise ValueError(f"{flag} takes true or false, got {value!r}.")
      if wanted in _TRUE:
        rewritten.append(flag)
      continue
    rewritten.append(arg)
  return rewritten


def main() -> int:
  json.dump(metadata(), sys.stdout, indent=2)
  sys.stdout.write("\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
