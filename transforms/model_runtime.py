"""The model as the workers get it: ``SegmenterHandle`` loads it once per process, on the engine chosen there.

Apart from tiling and the RunInference handler because the launcher's
start-up check (``pipeline.model_check``) and every worker share it: the
check loads the model through a handle and hands that handle to the graph.
``class_id_beyond`` is the one check that a model's class ids stay within its card.
"""

import logging
from typing import Any, Dict, Optional

import numpy as np
from apache_beam.utils import shared
from numpy.typing import ArrayLike

from model import engines
from model.engines.choice import EngineChoice
from transforms.imaging.input_spec import DEFAULT_SPEC, InputSpec
from transforms.staging import local_copy

_LOG = logging.getLogger(__name__)


class SegmenterHandle:
  """The run's model as the workers get it: loaded at most once per process, handed over where already loaded.

  Why: a local run checks the model at start-up (``pipeline.model_check``) and
  would otherwise load it again in its worker. The launcher passes the model
  it loaded as ``loaded``: this handle holds it, for as long as the launcher
  holds the handle (the graph it builds), and offers it through Beam's
  per-process ``Shared`` cache under the handle's own key.

  Pickled into the graph, the handle carries only that key and what to load:
  the model directory, the *requested* engine and precision, the input spec,
  the engine's thread count and the test-time augmentation (``--tta``). A copy unpickled in the launcher's process
  (the in-process FnApiRunner) acquires the launcher's model through the
  key; a copy in any other process (multi-process FnApiRunner, portable and
  remote workers) resolves ``auto`` for its own machine (a GPU worker gets
  TensorFlow, a CPU worker OpenVINO at the precision its CPU supports) and
  loads the model there, once for all of that process's threads.
  """

  def __init__(
    self,
    model_dir: str,
    engine: str = "auto",
    precision: str = "auto",
    mixed_precision: bool = False,
    spec: InputSpec = DEFAULT_SPEC,
    threads: int = 0,
    loaded: Any = None,
    tta: str = "none",
  ) -> None:
    self.model_dir = model_dir
    self.engine = engine
    self.precision = precision
    self.mixed_precision = bool(mixed_precision)
    self.spec = spec
    self.threads = int(threads or 0)
    self.tta = tta
    # What the start-up check loaded: engine, precision, CPU (summary.json).
    self.description: Optional[Dict[str, Any]] = None
    self._shared = shared.Shared()
    self._loaded = loaded
    if loaded is not None:
      if loaded.spec != spec:
        raise ValueError(f"the loaded model takes {loaded.spec}, not {spec}")
      self._shared.acquire(lambda: loaded)

  def __getstate__(self) -> Dict[str, Any]:
    state = dict(self.__dict__)
    state["_loaded"] = None  # workers get the model through the shared key, or load their own
    return state

  def acquire(self) -> Any:
    """The model: the launcher's when this process has it, else loaded here (once per process)."""
    return self._shared.acquire(self._load)

  def choose(self, local_dir: str) -> EngineChoice:
    """The engine and precision for this machine (``model.engines.choice``)."""
    return engines.choose_here(local_dir, self.engine, self.precision, self.mixed_precision, self.tta)

  def _load(self) -> Any:
    local_dir = local_copy(self.model_dir)
    choice = self.choose(local_dir)
    _LOG.info("Loading model %s on %s (%s)", self.model_dir, choice.describe(), choice.reason)
    return engines.load(local_dir, choice, self.spec, self.threads, self.tta)


def class_id_beyond(class_ids: ArrayLike, num_classes: int) -> Optional[int]:
  """The largest of ``class_ids`` (an array, or its maximum) when it is ``num_classes`` or more, else None.

  A model may only emit the ids its card lists; the model check at start-up and every inference batch ask this.
  """
  if not np.size(class_ids):
    return None
  top = int(np.max(class_ids))
  return top if top >= num_classes else None
