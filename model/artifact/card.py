"""Card fields every way of making a model directory writes the same way (export, wrap of Keras or ONNX)."""

import datetime

CARD_FORMAT = "deconvseg-model/1"


def color_name(channels: int) -> str:
  return {1: "grey", 3: "RGB"}.get(int(channels), "bands")


def created_now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
