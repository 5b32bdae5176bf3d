"""Importing a public per-layer cost table into this project's measured-row CSV.

One format so far, ``apq-bitfusion`` (alias ``haq-bitfusion``): the BitFusion latency / energy
lookup table MIT HAN Lab published with APQ (Wang et al., CVPR 2020; the successor of HAQ on the
same BitFusion simulator), ``lut/BitFusion_new.b1.dict`` in github.com/mit-han-lab/apq. It is a
JSON object (``json.load`` in the repository's ``utils/latency_predictor.py``)::

  {"(96, 456, 14, 1, 1, 0, 1)-W4A4": {"energy": 0.10688197403091196, "latency": 0.062192},
   "(488, 488, 14, 3, 1, 1, 488)-W4A4": {"energy": 0.16564197301964795, "latency": 0.089792},
   ...,
   "head": {"energy": 0.5061844841862639, "latency": 0.295904},
   "tail": {"energy": 0.15180756309769594, "latency": 0.081608}}

A layer's key is ``"(cin, cout, input_size, kernel, stride, padding, groups)-W{w}A{a}"``: the
tuple order is the one ``latency_predictor.py`` comments and builds (``in_channels,
out_channels, input_size, kernel_size, stride, padding, groups``), the input is square, the
suffix gives weight then activation bits. ``groups == cin`` is a depthwise convolution.
``head`` and ``tail`` are the network's fixed first and last layers as totals without a shape
(the predictor adds them to every network); they are skipped and reported, never rows.

Units. The table itself carries none. APQ's ``test.py`` prints the predictor's sums of these
values as ``"Latency: {:.2f}ms"`` and ``"Energy: {:.2f}mJ"``, and its README's model table and
``--constraint=12.80`` (ms) use the same units. So ``latency`` is ms (taken as is) and
``energy`` is mJ (× 1000 → µJ). ``.b1`` is batch 1 (the predictor's default ``batch=1``), so the
values are per inference, as measured rows are.

Every key is checked: a key that is not a layer of that form, a shape this project cannot cost
(a padding other than 'SAME', i.e. kernel // 2 for an odd kernel; groups not dividing the
channels), bits outside 1..16, or a value that is not ``{"latency": ms, "energy": mJ}`` with
positive numbers raises :class:`~hwcost.cost_model.CostTableError` naming the file, the key and
what was expected. Pickles are refused, not loaded: this format is JSON.
"""

import functools
import json
import math
import numbers
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from hwcost.cost_model import CostTableError
from hwcost.layer_spec import LayerSpec
from hwcost.measured_rows import COLUMNS, MAX_BITS, layer_key

APQ_KEY_FIELDS = ("cin", "cout", "input_size", "kernel", "stride", "padding", "groups")
"""The order of the shape tuple in an apq-bitfusion key."""

APQ_NON_LAYER_KEYS = ("head", "tail")
"""apq-bitfusion entries that are whole-network totals without a shape: skipped."""

MJ_TO_UJ = 1000.0

_APQ_KEY = re.compile(r"\((?P<shape>[^()]*)\)-W(?P<w>[0-9]+)A(?P<a>[0-9]+)")
_DIGITS = re.compile(r"[0-9]+")
_APQ_EXAMPLE = "'(96, 456, 14, 1, 1, 0, 1)-W4A4'"
_PICKLE_PROTOCOL_2_PLUS = b"\x80"


@dataclass(frozen=True)
class ImportedRow:
  """One layer of an imported table, in this project's units.

  Attributes:
    key: the source's key, as written there.
    spec: the layer ('SAME' padding; its name is the key).
    w_bits: weight bits.
    a_bits: activation bits.
    latency_ms: latency in ms.
    energy_uj: energy in µJ, or None when the source has none.
  """

  key: str
  spec: LayerSpec
  w_bits: int
  a_bits: int
  latency_ms: float
  energy_uj: float | None


@dataclass(frozen=True)
class ImportedTable:
  """The checked layers of one public table.

  Attributes:
    path: the source file, as the caller gave it.
    format: the format it was read as, e.g. ``"apq-bitfusion"``.
    rows: the layers, in the source's order.
    skipped: keys that are known non-layer entries (e.g. ``head``, ``tail``).
  """

  path: str
  format: str
  rows: tuple[ImportedRow, ...]
  skipped: tuple[str, ...]


def read_apq_bitfusion(path: str | os.PathLike) -> ImportedTable:
  """Reads APQ's BitFusion lookup table (JSON) into layers at ms and µJ.

  Args:
    path: the ``.dict`` JSON file, e.g. ``lut/BitFusion_new.b1.dict``.

  Returns:
    The :class:`ImportedTable`: latency as published (ms), energy × 1000 (mJ → µJ).

  Raises:
    CostTableError: the file is missing, unreadable, a pickle, not JSON, not an object of
      layers, has no layer, gives a key twice, or a key or value is not of the documented form
      (see the module docstring); two keys that name the same layer and bits are an error too.
      The message is ``FILE: key 'KEY': what was expected, got X``.
  """
  where = str(path)
  doc = _load_json(where)
  if not isinstance(doc, dict):
    raise CostTableError(
      f"{where}: expected a JSON object of layer keys such as {_APQ_EXAMPLE}, "
      f"got a {type(doc).__name__}"
    )
  rows, skipped, seen = [], [], {}
  for key, value in doc.items():
    if key in APQ_NON_LAYER_KEYS:
      skipped.append(key)
      continue
    row = _apq_row(where, key, value)
    identity = layer_key(row.spec, (row.w_bits, row.a_bits))
    if identity in seen:
      raise CostTableError(
        f"{where}: key {key!r}: names the same layer and bits as key {seen[identity]!r}; "
        "expected each layer once"
      )
    seen[identity] = key
    rows.append(row)
  if not rows:
    raise CostTableError(
      f"{where}: expected at least one layer key such as {_APQ_EXAMPLE}, got none"
    )
  return ImportedTable(path=where, format="apq-bitfusion", rows=tuple(rows), skipped=tuple(skipped))


IMPORT_FORMATS: dict[str, Callable[[str | os.PathLike], ImportedTable]] = {
  "apq-bitfusion": read_apq_bitfusion,
  "haq-bitfusion": read_apq_bitfusion,
}
"""Format name -> reader. ``haq-bitfusion`` names the same APQ table (HAQ's own repository
ships a per-layer-index ``.npy`` with no shapes, which cannot become measured rows)."""


def import_table(path: str | os.PathLike, fmt: str) -> ImportedTable:
  """Reads a public cost table of format ``fmt`` (a key of :data:`IMPORT_FORMATS`).

  Raises:
    CostTableError: ``fmt`` is unknown, or the reader's errors.
  """
  reader = IMPORT_FORMATS.get(fmt)
  if reader is None:
    raise CostTableError(
      f"--format {fmt!r}: unknown table format; expected one of {', '.join(IMPORT_FORMATS)}"
    )
  return reader(path)


def measured_rows_csv(table: ImportedTable) -> str:
  """The measured-row CSV text of an imported table (format in :mod:`hwcost.measured_rows`).

  Comment lines name the source, its format and the unit conversion. Values are written with
  ``repr``, so reading the CSV back gives exactly the imported floats.
  """
  source = table.path.replace("\n", " ")
  lines = [
    f"# Imported from {source} (format {table.format}) by hwcost.importers.",
    "# latency_ms: the source's latency (ms); energy_uj: the source's energy (mJ) x 1000.",
  ]
  if table.skipped:
    skipped = ", ".join(table.skipped)
    lines.append(f"# Skipped non-layer entries (totals without a shape): {skipped}")
  lines.append(",".join(COLUMNS))
  for row in table.rows:
    spec = row.spec
    energy = "" if row.energy_uj is None else repr(row.energy_uj)
    fields = (
      spec.op, spec.kernel, spec.stride, spec.groups, spec.cin, spec.cout, *spec.in_hw,
      *spec.out_hw, row.w_bits, row.a_bits, repr(row.latency_ms), energy,
    )  # fmt: skip
    lines.append(",".join(str(f) for f in fields))
  return "\n".join(lines) + "\n"


def _load_json(where: str):
  try:
    with open(where, "rb") as f:
      data = f.read()
  except FileNotFoundError:
    raise CostTableError(f"{where}: no such cost-table file") from None
  except OSError as e:
    raise CostTableError(f"{where}: cannot read cost-table file ({e.strerror})") from None
  if data.startswith(_PICKLE_PROTOCOL_2_PLUS):
    raise CostTableError(
      f"{where}: looks like a Python pickle; expected the JSON text this format is published "
      "as (pickles are never loaded: unpickling can run code)"
    )
  try:
    return json.loads(data.decode("utf-8"), object_pairs_hook=_unique_keys)
  except UnicodeDecodeError as e:
    raise CostTableError(f"{where}: expected UTF-8 JSON text ({e.reason})") from None
  except json.JSONDecodeError as e:
    raise CostTableError(
      f"{where}: JSON syntax error at line {e.lineno}, column {e.colno}: {e.msg}"
    ) from None
  except _DuplicateKey as e:
    raise CostTableError(f"{where}: key {e.key!r}: given twice; expected each key once") from None


class _DuplicateKey(Exception):
  def __init__(self, key: str):
    super().__init__(key)
    self.key = key


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
  """``json`` keeps the last of repeated keys silently; a cost table must not."""
  out = {}
  for key, value in pairs:
    if key in out:
      raise _DuplicateKey(key)
    out[key] = value
  return out


def _apq_row(where: str, key: str, value) -> ImportedRow:
  """One checked layer from an apq-bitfusion key and its value."""
  fail = functools.partial(_fail_key, where, key)
  shape, w_bits, a_bits = _apq_key(fail, key)
  latency_ms = _positive(fail, value, "latency", "ms")
  energy_mj = _positive(fail, value, "energy", "mJ") if "energy" in value else None
  size, stride = shape["input_size"], shape["stride"]
  out = -(-size // stride)  # 'SAME': ceil(size / stride)
  spec = LayerSpec(
    key, "conv", shape["kernel"], stride, shape["cin"], shape["cout"], (size, size), (out, out),
    groups=shape["groups"],
  )  # fmt: skip
  energy_uj = None if energy_mj is None else energy_mj * MJ_TO_UJ
  return ImportedRow(key, spec, w_bits, a_bits, latency_ms, energy_uj)


def _fail_key(where: str, key: str, message: str) -> NoReturn:
  raise CostTableError(f"{where}: key {key!r}: {message}")


def _apq_key(fail, key: str) -> tuple[dict[str, int], int, int]:
  """``"(cin, cout, input_size, kernel, stride, padding, groups)-W{w}A{a}"`` -> (shape, w, a)."""
  match = _APQ_KEY.fullmatch(key)
  if match is None:
    fail(
      f"expected '({', '.join(APQ_KEY_FIELDS)})-W{{w_bits}}A{{a_bits}}', e.g. {_APQ_EXAMPLE}, "
      f"or one of {', '.join(APQ_NON_LAYER_KEYS)}"
    )
  parts = [p.strip() for p in match["shape"].split(",")]
  if len(parts) != len(APQ_KEY_FIELDS) or not all(_DIGITS.fullmatch(p) for p in parts):
    fail(f"expected {len(APQ_KEY_FIELDS)} non-negative ints ({', '.join(APQ_KEY_FIELDS)})")
  shape = dict(zip(APQ_KEY_FIELDS, (int(p) for p in parts), strict=True))
  for field in APQ_KEY_FIELDS:
    if field != "padding" and shape[field] < 1:
      fail(f"{field}: expected a positive int, got {shape[field]}")
  kernel, padding, groups = shape["kernel"], shape["padding"], shape["groups"]
  if kernel % 2 == 0 or padding != kernel // 2:
    fail(
      f"padding: expected kernel // 2 = {kernel // 2} with an odd kernel ('SAME' padding, the "
      f"only padding this project costs), got padding {padding} with kernel {kernel}"
    )
  if shape["cin"] % groups or shape["cout"] % groups:
    fail(f"groups: expected a divisor of cin={shape['cin']} and cout={shape['cout']}, got {groups}")
  bits = {"w_bits": int(match["w"]), "a_bits": int(match["a"])}
  for name, b in bits.items():
    if not 1 <= b <= MAX_BITS:
      fail(f"{name}: expected 1..{MAX_BITS}, got {b}")
  return shape, bits["w_bits"], bits["a_bits"]


def _positive(fail, value, name: str, unit: str) -> float:
  """``value[name]`` of an apq-bitfusion ``{"latency": ms, "energy": mJ}``, checked positive."""
  if not isinstance(value, dict):
    fail(f'expected {{"latency": ms, "energy": mJ}}, got {value!r}')
  unknown = [field for field in value if field not in ("latency", "energy")]
  if unknown:
    fail(f"{unknown[0]!r}: unknown field; expected latency (ms) and energy (mJ)")
  if name not in value:
    fail(f"{name}: missing; expected a positive number ({unit})")
  number = value[name]
  ok = isinstance(number, numbers.Real) and not isinstance(number, bool)
  if not (ok and math.isfinite(number) and number > 0):
    fail(f"{name}: expected a positive number ({unit}), got {number!r}")
  return float(number)
