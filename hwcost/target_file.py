"""Reading and checking a hardware target file (YAML, ``schema_version: 1``).

A target file is a data sheet: every number carries its unit in its key and its source in a
comment or in ``sources``. It is checked completely when it is read, so a mistake surfaces before
a search starts, as a :class:`~hwcost.cost_model.CostTableError` naming the file, the dotted
field and what was expected::

  configs/targets/x.yaml: compute.conv.macs_per_cycle.a8w8: expected a positive number, got -3

The format (a subset of the design in ``research/hwcost.md`` §5.2)::

  schema_version: 1
  name: bitfusion45                    # short name, used in provenance
  description: "..."
  sources: ["citation", ...]           # at least one
  clock_mhz: 500
  static_power_mw: 30.5                # optional (default 0): E += P_static · t
  precision:
    supported: {w_bits: [2, 4, 8], a_bits: [2, 4, 8]}  # every combination, or
    # supported: [[8, 8], [4, 8]]      # a list of [w_bits, a_bits] pairs
    unsupported_policy: promote        # promote | error
  memory:
    bandwidth_bytes_per_cycle: 24
    energy_pj_per_byte: 167.5
    sram_kib: 112                      # optional, reported budgets
    flash_kib: 2048                    # optional
  compute:                             # op classes: conv, depthwise, linear (at least one)
    conv:
      macs_per_cycle: {a8w8: 512, a4w4: 2048}          # a grid over every supported pair, or
      # macs_per_cycle: {form: bitfusion, macs_per_cycle_8x8: 512}, or one number
      energy_pj_per_mac: {form: bitfusion, energy_pj_per_mac_8x8: 0.459}
      overhead_cycles: 0               # optional (default 0), per layer
      channel_granularity: {cin: 2, cout: 4}   # optional: channels processed in groups of g
  measured:                            # optional: measured rows (see hwcost.lut)
    file: bitfusion45_rows.csv         # a CSV, relative to this YAML file
    max_extrapolation: 2.0             # optional (default 2, >= 1): MACs factor beyond the rows

Grid keys are ``a{a_bits}w{w_bits}`` and must cover exactly the supported pairs. The closed form
``bitfusion`` is BitFusion's simulator law with p_max = 8 and p_min = 2 bits, f(b) =
⌊8 / max(b, 2)⌋: MACs/cycle = base·f(a)·f(w) and energy/MAC = base / (f(a)·f(w)).

``channel_granularity`` (optional, per op class) says the hardware processes channels in groups:
``cout: g`` pads the output channels to a multiple of g, ``cin: g`` the input channels each
output reads (C_in/groups, the reduction length). The roofline then computes
⌈C/g⌉·g channels (:func:`hwcost.roofline.padded_macs`). A depthwise layer reads one input
channel per group, so ``compute.depthwise`` takes ``cout`` only. The ceil is applied when the
cost tables are built; every search space fixes its channel counts, so it needs no gradient.

With ``measured``, :func:`hwcost.roofline.load_target` wraps the roofline model in a
:class:`~hwcost.lut.LutCostModel` over the CSV's rows (format in :mod:`hwcost.measured_rows`),
whose peak is the largest macs_per_cycle × clock_mhz × 10³ MACs/ms. This reader only checks that
the file can be read; :func:`hwcost.measured_rows.read_measured_csv` checks the rows.

.. note::
  Departures from §5.2, on purpose: the keys sit at the top level (no ``target:`` wrapper); op
  classes are ``compute.{conv, depthwise, linear}``; memory is one level (the off-chip interface
  every byte crosses once); the closed form is ``form: bitfusion`` with a ``*_8x8`` base; LUT
  rows are ``measured: {file, max_extrapolation}`` (not ``lut:`` with interpolation and
  calibration settings); channel multiples are ``channel_granularity: {cin, cout}`` (one int
  each, not per bit pair); constraints are not read yet.
"""

import math
import numbers
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

import yaml

from hwcost.cost_model import CostTableError

Pair = tuple[int, int]
"""A bit pair (w_bits, a_bits)."""

SCHEMA_VERSION = 1
OP_CLASSES = ("conv", "depthwise", "linear")
POLICIES = ("promote", "error")
FORMS = ("bitfusion",)
_GRID_KEY = re.compile(r"a([1-9][0-9]*)w([1-9][0-9]*)")
_TOP_REQUIRED = (
  "schema_version",
  "name",
  "description",
  "sources",
  "clock_mhz",
  "precision",
  "memory",
  "compute",
)
_TOP_OPTIONAL = ("static_power_mw", "measured")
GRANULARITY_KEYS = ("cin", "cout")


@dataclass(frozen=True)
class ChannelGranularity:
  """How many channels the hardware processes at once (1: no padding).

  Attributes:
    cin: input channels per group (C_in/groups, the reduction) are padded to a multiple of it.
    cout: output channels are padded to a multiple of it.
  """

  cin: int = 1
  cout: int = 1


@dataclass(frozen=True)
class OpClassSpec:
  """Throughput and energy of one op class, evaluated at every supported pair.

  Attributes:
    macs_per_cycle: (w_bits, a_bits) -> peak MACs per cycle (> 0).
    energy_pj_per_mac: (w_bits, a_bits) -> core energy per MAC in pJ (≥ 0).
    overhead_cycles: fixed cycles per layer (≥ 0): launch, pipeline fill and drain.
    channel_granularity: channel multiples the op class computes in (default: none).
  """

  macs_per_cycle: Mapping[Pair, float]
  energy_pj_per_mac: Mapping[Pair, float]
  overhead_cycles: float
  channel_granularity: ChannelGranularity = ChannelGranularity()


@dataclass(frozen=True)
class MemorySpec:
  """The memory every byte of a layer crosses once (one level).

  Attributes:
    bandwidth_bytes_per_cycle: bytes per clock cycle (> 0).
    energy_pj_per_byte: energy per byte moved, in pJ (≥ 0).
    sram_bytes: on-chip activation/working memory in bytes, or None (reported only).
    flash_bytes: parameter storage in bytes, or None (reported only).
  """

  bandwidth_bytes_per_cycle: float
  energy_pj_per_byte: float
  sram_bytes: float | None
  flash_bytes: float | None


@dataclass(frozen=True)
class MeasuredSpec:
  """Where a target's measured rows are.

  Attributes:
    file: the CSV's path, joined to the target file's directory (readable when checked).
    max_extrapolation: factor (≥ 1) beyond the rows' MACs range still extrapolated.
  """

  file: str
  max_extrapolation: float


@dataclass(frozen=True)
class TargetSpec:
  """A checked target file. ``supported`` is sorted; ``path`` is as the caller gave it;
  ``measured`` is None without a ``measured`` field."""

  path: str
  name: str
  description: str
  sources: tuple[str, ...]
  clock_mhz: float
  static_power_mw: float
  supported: tuple[Pair, ...]
  unsupported_policy: str
  memory: MemorySpec
  compute: Mapping[str, OpClassSpec]
  measured: MeasuredSpec | None = None


def grid_key(w_bits: int, a_bits: int) -> str:
  """The grid key of a pair, e.g. ``grid_key(4, 8) == "a8w4"``."""
  return f"a{a_bits}w{w_bits}"


def bitfusion_factor(bits: int) -> int:
  """BitFusion's speed-up at ``bits`` over 8 bits on one operand: ⌊8 / max(bits, 2)⌋."""
  return 8 // max(bits, 2)


def read_target_file(path: str | os.PathLike) -> TargetSpec:
  """Reads and checks a target file.

  Args:
    path: the YAML file; messages quote it as given.

  Returns:
    The checked :class:`TargetSpec`, closed forms evaluated at every supported pair.

  Raises:
    CostTableError: the file is missing or unreadable, is not valid YAML, or breaks the format
      (a missing, unknown, mistyped or out-of-range field), naming the file and the field.
  """
  where = str(path)
  doc = _load_yaml(where)
  return _Checker(where).target(doc)


class _UniqueKeyLoader(yaml.SafeLoader):
  """A safe loader that rejects a key given twice in one mapping (YAML keeps the last)."""

  def construct_mapping(self, node, deep=False):
    self.flatten_mapping(node)
    seen = set()
    for key_node, _ in node.value:
      key = self.construct_object(key_node, deep=True)
      if isinstance(key, numbers.Number | str) and key in seen:
        raise yaml.constructor.ConstructorError(
          None, None, f"duplicate key {key!r}", key_node.start_mark
        )
      seen.add(key if isinstance(key, numbers.Number | str) else id(key_node))
    return super().construct_mapping(node, deep=deep)


def _load_yaml(where: str):
  try:
    with open(where, encoding="utf-8") as f:
      text = f.read()
  except FileNotFoundError:
    raise CostTableError(f"{where}: no such target file") from None
  except OSError as e:
    raise CostTableError(f"{where}: cannot read target file ({e.strerror})") from None
  try:
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
  except yaml.YAMLError as e:
    mark = getattr(e, "problem_mark", None)
    at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(e, "problem", None) or str(e)
    raise CostTableError(f"{where}: YAML syntax error{at}: {problem}") from None


class _Checker:
  """Checks one parsed document, raising at the first problem with ``file: field: message``."""

  def __init__(self, where: str):
    self.where = where

  def fail(self, field: str, message: str):
    raise CostTableError(f"{self.where}: {field}: {message}")

  def mapping(self, value, field: str, required: tuple, optional: tuple = ()) -> dict:
    if not isinstance(value, dict):
      self.fail(
        field or "(top level)",
        f"expected a mapping with keys {', '.join(required + optional)}, got {_kind(value)}",
      )
    prefix = f"{field}." if field else ""
    for key in value:
      if key not in required + optional:
        self.fail(f"{prefix}{key}", f"unknown key (allowed: {', '.join(required + optional)})")
    for key in required:
      if key not in value:
        self.fail(f"{prefix}{key}", "missing required key")
    return value

  def number(self, value, field: str, *, positive: bool) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and (value > 0 if positive else value >= 0)
    if not ok:
      self.fail(
        field, f"expected a {'positive' if positive else 'non-negative'} number, got {value!r}"
      )
    return float(value)

  def text(self, value, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
      self.fail(field, f"expected a non-empty string, got {value!r}")
    return value

  def bits(self, value, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
      self.fail(field, f"expected a positive int bit-width, got {value!r}")
    return value

  def target(self, doc) -> TargetSpec:
    if doc is None:
      self.fail("(top level)", "the file is empty; expected a mapping with schema_version: 1")
    doc = self.mapping(doc, "", _TOP_REQUIRED, _TOP_OPTIONAL)
    if doc["schema_version"] != SCHEMA_VERSION or isinstance(doc["schema_version"], bool):
      self.fail("schema_version", f"expected {SCHEMA_VERSION}, got {doc['schema_version']!r}")
    sources = doc["sources"]
    if not isinstance(sources, list) or not sources:
      self.fail("sources", f"expected a non-empty list of citations, got {_kind(sources)}")
    supported, policy = self.precision(doc["precision"])
    return TargetSpec(
      path=self.where,
      name=self.text(doc["name"], "name"),
      description=self.text(doc["description"], "description"),
      sources=tuple(self.text(s, f"sources[{i}]") for i, s in enumerate(sources)),
      clock_mhz=self.number(doc["clock_mhz"], "clock_mhz", positive=True),
      static_power_mw=self.number(doc.get("static_power_mw", 0), "static_power_mw", positive=False),
      supported=supported,
      unsupported_policy=policy,
      memory=self.memory(doc["memory"]),
      compute=self.compute(doc["compute"], supported),
      measured=self.measured(doc["measured"]) if "measured" in doc else None,
    )

  def precision(self, value) -> tuple[tuple[Pair, ...], str]:
    value = self.mapping(value, "precision", ("supported", "unsupported_policy"))
    policy = value["unsupported_policy"]
    if policy not in POLICIES:
      self.fail(
        "precision.unsupported_policy", f"expected one of {', '.join(POLICIES)}, got {policy!r}"
      )
    supported = value["supported"]
    field = "precision.supported"
    if isinstance(supported, dict):
      supported = self.mapping(supported, field, ("w_bits", "a_bits"))
      lists = {}
      for key in ("w_bits", "a_bits"):
        bits = supported[key]
        if not isinstance(bits, list) or not bits:
          self.fail(f"{field}.{key}", f"expected a non-empty list of ints, got {_kind(bits)}")
        lists[key] = [self.bits(b, f"{field}.{key}[{i}]") for i, b in enumerate(bits)]
      pairs = {(w, a) for w in lists["w_bits"] for a in lists["a_bits"]}
    elif isinstance(supported, list) and supported:
      pairs = set()
      for i, pair in enumerate(supported):
        if not isinstance(pair, list) or len(pair) != 2:
          self.fail(f"{field}[{i}]", f"expected a [w_bits, a_bits] pair, got {pair!r}")
        pairs.add((self.bits(pair[0], f"{field}[{i}][0]"), self.bits(pair[1], f"{field}[{i}][1]")))
    else:
      self.fail(
        field,
        "expected {w_bits: [...], a_bits: [...]} or a non-empty list of "
        f"[w_bits, a_bits] pairs, got {_kind(supported)}",
      )
    return tuple(sorted(pairs)), policy

  def memory(self, value) -> MemorySpec:
    required = ("bandwidth_bytes_per_cycle", "energy_pj_per_byte")
    value = self.mapping(value, "memory", required, ("sram_kib", "flash_kib"))
    sizes = {
      key: self.number(value[key], f"memory.{key}", positive=True) * 1024 if key in value else None
      for key in ("sram_kib", "flash_kib")
    }
    return MemorySpec(
      bandwidth_bytes_per_cycle=self.number(
        value["bandwidth_bytes_per_cycle"], "memory.bandwidth_bytes_per_cycle", positive=True
      ),
      energy_pj_per_byte=self.number(
        value["energy_pj_per_byte"], "memory.energy_pj_per_byte", positive=False
      ),
      sram_bytes=sizes["sram_kib"],
      flash_bytes=sizes["flash_kib"],
    )

  def measured(self, value) -> MeasuredSpec:
    value = self.mapping(value, "measured", ("file",), ("max_extrapolation",))
    name = self.text(value["file"], "measured.file")
    file = os.path.join(os.path.dirname(self.where), name)
    try:
      with open(file, "rb"):
        pass
    except OSError as e:
      self.fail(
        "measured.file",
        f"expected a readable CSV of measured rows (relative to this file), got {name!r} "
        f"({file}: {e.strerror})",
      )
    factor = value.get("max_extrapolation", 2.0)
    factor = self.number(factor, "measured.max_extrapolation", positive=True)
    if factor < 1:
      self.fail("measured.max_extrapolation", f"expected a number >= 1, got {factor:g}")
    return MeasuredSpec(file=file, max_extrapolation=factor)

  def compute(self, value, supported: tuple[Pair, ...]) -> dict[str, OpClassSpec]:
    if isinstance(value, dict) and not value:
      self.fail("compute", f"expected at least one op class of {', '.join(OP_CLASSES)}")
    value = self.mapping(value, "compute", (), OP_CLASSES)
    out = {}
    for op_class, entry in value.items():
      field = f"compute.{op_class}"
      entry = self.mapping(
        entry,
        field,
        ("macs_per_cycle", "energy_pj_per_mac"),
        ("overhead_cycles", "channel_granularity"),
      )
      out[op_class] = OpClassSpec(
        macs_per_cycle=self.per_pair(
          entry["macs_per_cycle"], f"{field}.macs_per_cycle", supported, positive=True
        ),
        energy_pj_per_mac=self.per_pair(
          entry["energy_pj_per_mac"], f"{field}.energy_pj_per_mac", supported, positive=False
        ),
        overhead_cycles=self.number(
          entry.get("overhead_cycles", 0), f"{field}.overhead_cycles", positive=False
        ),
        channel_granularity=self.granularity(entry, field, op_class),
      )
    return out

  def granularity(self, entry: dict, op_field: str, op_class: str) -> ChannelGranularity:
    """The op class's ``channel_granularity: {cin: g, cout: g}`` (either may be left out; none
    without the key); depthwise takes ``cout`` only."""
    if "channel_granularity" not in entry:
      return ChannelGranularity()
    value, field = entry["channel_granularity"], f"{op_field}.channel_granularity"
    allowed = ("cout",) if op_class == "depthwise" else GRANULARITY_KEYS
    if isinstance(value, dict) and "cin" in value and op_class == "depthwise":
      self.fail(
        f"{field}.cin",
        "a depthwise layer reads one input channel per group, so only cout applies "
        "(its channels); give the granularity as cout",
      )
    if isinstance(value, dict) and not value:
      self.fail(field, f"expected at least one of {', '.join(allowed)}, got an empty mapping")
    value = self.mapping(value, field, (), allowed)
    sizes = {}
    for key, size in value.items():
      if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        self.fail(
          f"{field}.{key}",
          f"expected a positive int (channels the hardware processes at once), got {size!r}",
        )
      sizes[key] = size
    return ChannelGranularity(**sizes)

  def per_pair(self, value, field, supported, *, positive: bool) -> dict[Pair, float]:
    """One number for all pairs, a closed form, or a grid keyed ``a{a}w{w}``."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
      number = self.number(value, field, positive=positive)
      return {pair: number for pair in supported}
    if isinstance(value, dict) and "form" in value:
      return self.closed_form(value, field, supported, positive=positive)
    if isinstance(value, dict) and value:
      return self.grid(value, field, supported, positive=positive)
    self.fail(
      field,
      "expected a number, a grid {a8w8: ..., ...} or {form: bitfusion, ...}, "
      f"got {_kind(value)}",
    )

  def closed_form(self, value, field, supported, *, positive: bool) -> dict[Pair, float]:
    quantity = field.rsplit(".", 1)[-1]
    base_key = f"{quantity}_8x8"
    value = self.mapping(value, field, ("form", base_key))
    if value["form"] not in FORMS:
      self.fail(f"{field}.form", f"expected one of {', '.join(FORMS)}, got {value['form']!r}")
    base = self.number(value[base_key], f"{field}.{base_key}", positive=positive)
    too_wide = [grid_key(w, a) for w, a in supported if max(w, a) > 8]
    if too_wide:
      self.fail(
        f"{field}.form",
        f"bitfusion covers 2..8 bits, but {', '.join(too_wide)} are supported; give a grid instead",
      )
    speedup = {(w, a): bitfusion_factor(w) * bitfusion_factor(a) for w, a in supported}
    if quantity == "macs_per_cycle":
      return {pair: base * s for pair, s in speedup.items()}
    return {pair: base / s for pair, s in speedup.items()}

  def grid(self, value, field, supported, *, positive: bool) -> dict[Pair, float]:
    out = {}
    allowed = ", ".join(grid_key(w, a) for w, a in supported)
    for key, number in value.items():
      match = _GRID_KEY.fullmatch(key) if isinstance(key, str) else None
      if match is None:
        self.fail(f"{field}.{key}", "malformed grid key; expected a{a_bits}w{w_bits}, e.g. a8w8")
      pair = (int(match.group(2)), int(match.group(1)))
      if pair not in supported:
        self.fail(f"{field}.{key}", f"not a supported pair (precision.supported: {allowed})")
      out[pair] = self.number(number, f"{field}.{key}", positive=positive)
    missing = [grid_key(w, a) for w, a in supported if (w, a) not in out]
    if missing:
      self.fail(field, f"missing {', '.join(missing)} (a grid needs every supported pair)")
    return out


def _kind(value) -> str:
  """How a message describes an unexpected value."""
  if value is None:
    return "nothing"
  if isinstance(value, dict | list):
    return f"a {type(value).__name__} {value!r}"
  return repr(value)
