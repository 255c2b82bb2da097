"""model.quantize's accuracy gate: its verdict on the int8 measurements, and the text that shows it.

``judge`` decides from the class-id agreement with TensorFlow fp32 and, with
truth masks, the mean IoU drop; ``format_table`` is the fp32/int8 table a
written model prints, ``failure_block`` what a refused one prints.
"""

from typing import Any


def judge(measured: dict[str, Any], agreement_min: float, miou_drop_max: float) -> dict[str, Any]:
  """The gate's verdict on the int8 numbers: what passed, what failed, and why."""
  agreement = measured["agreement"]["openvino int8"]
  checks = {"agreement": agreement >= agreement_min}
  drop = None
  if measured["mean_iou"] is not None:
    drop = round(measured["mean_iou"]["tensorflow fp32"] - measured["mean_iou"]["openvino int8"], 6)
    checks["mean_iou"] = drop <= miou_drop_max
  return {
    "agreement_min": agreement_min,
    "miou_drop_max": miou_drop_max,
    "passed": all(checks.values()),
    "checks": checks,
    "miou_drop": drop,
  }


def format_table(block: dict[str, Any], measured: dict[str, Any]) -> str:
  """fp32 against int8, one line per measure, and where it was measured."""
  agreement = measured["agreement"]
  mean_iou = measured["mean_iou"] or {}
  speed = (block.get("speed") or {}).get("images_per_s") or {}

  def cell(value: Any, digits: int) -> str:
    return f"{value:>14.{digits}f}" if isinstance(value, (int, float)) else f"{'-':>14}"

  lines = [
    f"{'':<34}{'TF fp32':>14}{'OpenVINO fp32':>14}{'OpenVINO int8':>14}",
    f"{'class-id agreement with TF fp32':<34}{cell(1.0, 6)}{cell(agreement['openvino fp32'], 6)}"
    f"{cell(agreement['openvino int8'], 6)}",
    f"{'mean IoU against truth masks':<34}{cell(mean_iou.get('tensorflow fp32'), 4)}"
    f"{cell(mean_iou.get('openvino fp32'), 4)}{cell(mean_iou.get('openvino int8'), 4)}",
  ]
  if speed:
    size = block["speed"]["size"]
    label = f"images/s, batch 1, {size}x{size}"
    lines.append(f"{label:<34}{cell(None, 0)}{cell(speed.get('fp32'), 2)}{cell(speed.get('int8'), 2)}")
  gate = block["gate"]
  verdict = gate.get("status", "passed" if gate["passed"] else "failed")
  lines.append(
    f"gate {verdict}: agreement >= {gate['agreement_min']}"
    + (f", mean IoU drop {gate['miou_drop']:+.4f} <= {gate['miou_drop_max']}" if gate["miou_drop"] is not None else "")
  )
  lines.append(f"measured on {block['evaluation']['images']} {block['evaluation']['what']}")
  return "\n".join(lines)


def failure_block(block: dict[str, Any], measured: dict[str, Any]) -> str:
  """The refusal: each check of the gate with its number, its bound and ok or FAIL."""
  gate = block["gate"]
  lines = ["model.quantize: int8 accuracy gate failed; nothing written (--force writes it anyway)"]
  agreement = measured["agreement"]["openvino int8"]
  mark = "ok" if gate["checks"]["agreement"] else "FAIL"
  lines.append(f"  agreement with TF fp32: {agreement:.6f} (needs >= {gate['agreement_min']})  {mark}")
  if gate["miou_drop"] is not None:
    mean_iou = measured["mean_iou"]
    mark = "ok" if gate["checks"]["mean_iou"] else "FAIL"
    lines.append(
      f"  mean IoU fp32 {mean_iou['tensorflow fp32']:.4f}, int8 {mean_iou['openvino int8']:.4f}: "
      f"drop {gate['miou_drop']:.4f} (needs <= {gate['miou_drop_max']})  {mark}"
    )
  else:
    lines.append("  mean IoU: not measured (no --truth_data)")
  lines.append(f"  measured on {block['evaluation']['images']} {block['evaluation']['what']}")
  return "\n".join(lines)
