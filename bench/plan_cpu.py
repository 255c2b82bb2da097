"""CPU workers in the capacity plan: the engine ``--engine auto`` runs on each Compute Engine family, its images/s per
vCPU, the cost per million images and the cheapest family. An estimate, labelled so wherever it is shown.

Rates are measured per instruction-set class (``bench.plan_costs.CPU_RATES``, or the "engine_ceiling" rows of
``docs/PERFORMANCE.json`` when a bench run wrote them) on 2-vCPU machines and divided by their vCPUs: that assumes
linear scaling with vCPUs, which is how Dataflow runs the pipeline (one SDK process per vCPU, one engine thread each:
``--engine_threads`` defaults to 1 there). A class with no measurement of its own takes the AVX2-only machine's
figures as a floor (its wider vector units only add). The engine per family is ``model.engines.choice.choose`` for
a CPU with that family's flags, so the table follows the rule the workers apply.

Cost per million images = (vCPU-hour price + GB of memory per vCPU x GB-hour price) / images per vCPU-hour x 1e6,
at Dataflow's list prices, which name one vCPU and one memory rate for every family; Compute Engine's own
per-family price differences are not applied (Dataflow bills its rates, not the VM's), nor is the boot disk.
"""

from typing import Optional

from bench.plan_catalogue import CPU_FAMILIES, CPU_PLATFORM_SOURCE, FEATURE_CLASSES, PlanError, machine_shape
from bench.plan_costs import DEFAULT_MODEL_FLOPS_PER_PIXEL, PERFORMANCE_JSON, RATE_PIXELS, cpu_rates
from model.engines.choice import choose
from model.engines.cpu import CpuFeatures

ENGINES = (("tensorflow", "fp32"), ("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8"))
SHORT = {"tensorflow": "TF", "openvino": "OV"}
FLOOR_CLASS = "avx2"  # the class whose measurement stands in for classes measured nowhere


def features_of(family: str) -> CpuFeatures:
  """The CPU features a worker of this family reports (its class's flags)."""
  processor, cls, _ = CPU_FAMILIES[family]
  return CpuFeatures(processor, frozenset(FEATURE_CLASSES[cls][1]))


def auto_choice(family: str):
  """What ``--engine auto --precision auto`` resolves to on a CPU worker of this family (OpenVINO installed)."""
  # has_int8 does not matter: auto never picks int8 (it needs an int8 model that passed its accuracy gate).
  return choose("auto", "auto", features=features_of(family), gpu=False, has_openvino=True, has_int8=False)


def parse_cpu_rates(items) -> dict:
  """['c3=20', 'n2d=6.1'] -> {'c3': 20.0, 'n2d': 6.1}; PlanError names the bad item."""
  rates = {}
  for item in items or ():
    family, _, value = str(item).partition("=")
    family = family.strip().lower()
    try:
      rate = float(value)
    except ValueError:
      rate = 0.0
    if family not in CPU_FAMILIES or rate <= 0:
      raise PlanError(
        f"--cpu_rate {item!r}: give FAMILY=IMAGES_PER_VCPU_S with a rate above 0 and a family among "
        f"{', '.join(CPU_FAMILIES)}"
      )
    rates[family] = rate
  return rates


def _class_rate(rates: dict, cls: str, engine: str, precision: str):
  """(images/s per vCPU at 512x512, source key, floor?) or (None, why, False)."""
  if precision == "bf16" and not features_of_class(cls).bf16:
    return None, "no bf16 instructions", False
  own = rates.get(cls)
  entry = own.get((engine, precision)) if own else rates.get(FLOOR_CLASS, {}).get((engine, precision))
  if not entry:
    return None, "not measured", False
  return entry[0] / entry[1], entry[2], not own


def features_of_class(cls: str) -> CpuFeatures:
  return CpuFeatures(FEATURE_CLASSES[cls][0], frozenset(FEATURE_CLASSES[cls][1]))


def cpu_table(
  prices: dict,
  pixels: int = RATE_PIXELS,
  flops_per_pixel: Optional[float] = None,
  user_rates: Optional[dict] = None,
  vcpus: int = 8,
  bench_json: str = PERFORMANCE_JSON,
) -> dict:
  """The CPU-worker table for images of ``pixels`` (a dict; every rate and cost an estimate)."""
  user_rates = user_rates or {}
  scale = RATE_PIXELS / pixels * DEFAULT_MODEL_FLOPS_PER_PIXEL / (flops_per_pixel or DEFAULT_MODEL_FLOPS_PER_PIXEL)
  rates, sources = cpu_rates(bench_json)
  used = set()
  classes = []
  for cls, (label, _) in FEATURE_CLASSES.items():
    row = {"class": cls, "features": label, "images_per_vcpu_s": {}, "basis": {}}
    for engine, precision in ENGINES:
      rate, basis, floor = _class_rate(rates, cls, engine, precision)
      name = f"{engine} {precision}"
      row["images_per_vcpu_s"][name] = rate * scale if rate else None
      row["basis"][name] = (f"AVX2 floor: {basis}" if floor else f"measured: {basis}") if rate else basis
      used.update([basis] if rate else [])
    classes.append(row)
  by_class = {row["class"]: row for row in classes}
  families = []
  for family, (processor, cls, dataflow) in CPU_FAMILIES.items():
    choice = auto_choice(family)
    name = choice.describe()
    rate, basis = by_class[cls]["images_per_vcpu_s"].get(name), by_class[cls]["basis"].get(name)
    if rate is None:  # bf16 where only fp32 was measured: bf16 hardware taken to be no slower than fp32
      rate = by_class[cls]["images_per_vcpu_s"]["openvino fp32"]
      basis = f"bf16 not measured, openvino fp32 as floor ({by_class[cls]['basis']['openvino fp32']})"
    if family in user_rates:
      rate, basis = user_rates[family], "--cpu_rate"
    gb_per_vcpu = machine_shape(f"{family}-standard-{vcpus}")[1] / vcpus
    per_vcpu_hour = prices["vcpu_hour"] + gb_per_vcpu * prices["gb_hour"]
    families.append(
      {
        "family": family,
        "cpu": processor,
        "features": FEATURE_CLASSES[cls][0],
        "dataflow": dataflow,
        "engine": name,
        "images_per_vcpu_s": rate,
        "usd_per_million_images": per_vcpu_hour / (rate * 3600) * 1e6,
        "basis": basis,
      }
    )
  eligible = [row for row in families if row["dataflow"] == "yes"]
  best = min(eligible, key=lambda row: row["usd_per_million_images"])
  return {
    "estimate": True,
    "pixels_per_image": pixels,
    "classes": classes,
    "families": families,
    "recommended": dict(
      best,
      machine_type=f"{best['family']}-standard-{vcpus}",
      close=[
        row["family"]
        for row in eligible
        if row is not best and row["usd_per_million_images"] <= 1.05 * best["usd_per_million_images"]
      ],
    ),
    "sources": {
      "rates": {key: text for key, text in sources.items() if key in used},
      "platforms": CPU_PLATFORM_SOURCE,
      "scaling": (
        "per vCPU = the 2-vCPU machine's rate / 2: linear in vCPUs, as Dataflow runs one SDK process per vCPU with "
        "one engine thread (--engine_threads defaults to 1 there); the AMD EPYC AVX2 figures stand in for every "
        "AVX2-only family and are the floor for classes measured nowhere"
      ),
      "cost": (
        "(vCPU-hour + memory per vCPU x GB-hour) / images per vCPU-hour, Dataflow list prices (one rate for every "
        "family; Compute Engine's per-family prices not applied), model alone: decoding and disk not included"
      ),
    },
  }


def _rate(value) -> str:
  return f"{value:8.2f}" if value else f"{'n/m':>8}"


def render_cpu_table(table: dict, width: int, height: int) -> str:
  lines = [
    f"CPU workers (estimate): the model alone on {width}x{height} images, images/s per vCPU",
    f"  {'class':<12}{'features':<28}" + "".join(f"{SHORT[e]} {p}".rjust(9) for e, p in ENGINES),
  ]
  for row in table["classes"]:
    rates = row["images_per_vcpu_s"]
    lines.append(
      f"  {row['class']:<12}{row['features']:<28}"
      + "".join(_rate(rates[f"{e} {p}"]).rjust(9) for e, p in ENGINES)
      + ("   (not measured: the AVX2 figures as a floor)" if any("floor" in b for b in row["basis"].values()) else "")
    )
  lines.append("  n/m: not measured, or not possible (bf16 without bf16 instructions)")
  lines.append(
    f"  {'family':<7}{'CPU':<33}{'features':<28}{'Dataflow':<9}{'--engine auto':<15}"
    f"{'img/s/vCPU':>11}{'$/M images':>12}  basis"
  )
  for row in table["families"]:
    lines.append(
      f"  {row['family']:<7}{row['cpu']:<33}{row['features']:<28}{row['dataflow']:<9}{row['engine']:<15}"
      f"{row['images_per_vcpu_s']:>11.2f}{row['usd_per_million_images']:>12.2f}  {row['basis']}"
    )
  best = table["recommended"]
  lines += [
    f"  recommended  {best['family']} (--machine_type={best['machine_type']}, {best['engine']}): the cheapest per "
    f"million images among the Dataflow families, ${best['usd_per_million_images']:.2f} (estimate)"
    + (f"; within 5 %: {', '.join(best['close'])}" if best["close"] else ""),
    "  sources      " + "; ".join(f"{key}: {text}" for key, text in table["sources"]["rates"].items()),
    f"               {table['sources']['scaling']}",
    f"               {table['sources']['cost']}",
    f"               {table['sources']['platforms']}",
  ]
  return "\n".join(lines)
