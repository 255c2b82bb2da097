"""Gives Beam's RunInference back the ``resource`` module, so a plain run logs no false memory warning.

``apache_beam.ml.inference.base`` imports ``resource`` in the same ``try`` as
its ModelManager, which needs torch; without torch the whole import fails,
``resource`` is left None, and every model load logs "Resource module is not
available for current platform, memory usage cannot be fetched." twice on the
root logger and records a model size of 0. ``resource`` is there on every
POSIX platform: handing it to Beam removes the warning at its cause and makes
Beam's model-size metric real. Call it where the model handler's module is
imported, so that worker processes get it too.
"""


def restore_beam_memory_probe() -> None:
  try:
    import resource
  except ImportError:  # Windows: Beam's warning is then true
    return
  from apache_beam.ml.inference import base

  if getattr(base, "resource", None) is None:
    base.resource = resource
