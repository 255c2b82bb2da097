"""The library module behind each documented ``python -m model.X`` command (model/X.py is only its entry point)."""

import importlib
from types import ModuleType

LIBRARY_MODULES = {
  "model.train": "model.training.train",
  "model.evaluate": "model.training.evaluate",
  "model.export": "model.artifact.export",
  "model.export_openvino": "model.artifact.export_openvino",
  "model.quantize": "model.artifact.quantize",
  "model.reproduce": "model.artifact.reproduce",
  "model.wrap": "model.wrap.cli",
  "model.ablation": "model.ablation.cli",
  "model.make_dataset": "model.data.make_dataset",
  "model.make_splits": "model.data.make_splits",
  "model.check_data": "model.data.check_data",
  "model.nuclei_data": "model.data.nuclei_data",
}


def command_module(command: str) -> ModuleType:
  """The module whose parse_args and main ``python -m COMMAND`` runs (model.make_dataset: model.data.make_dataset)."""
  return importlib.import_module(LIBRARY_MODULES[command])
