"""Measured rows: reading and checking a CSV of measured layer latency and energy.

A CSV of measured rows, one per layer instance, keyed by shape and bits::

  # comments start with '#'
  op,kernel,stride,groups,cin,cout,in_h,in_w,out_h,out_w,w_bits,a_bits,latency_ms,energy_uj
  conv,3,1,1,16,16,8,8,8,8,8,8,0.054,1.21
  conv,3,1,16,16,16,8,8,8,8,8,8,0.011,
  linear,1,1,1,64,10,1,1,1,1,8,8,0.004,0.09

A row's ``energy_uj`` may be empty, and a file may omit that column entirely. ``op`` is
``conv`` or ``linear``; a depthwise convolution is a conv with groups = cin, as in
:class:`~hwcost.layer_spec.LayerSpec`, and convolutions use 'SAME' padding (out = ⌈in/stride⌉).
Everything is checked when the file is read, and a mistake raises
:class:`~hwcost.cost_model.CostTableError` as ``FILE:ROW: FIELD: what was expected, got X``, ROW
being the 1-based line in the file. :mod:`hwcost.lut` turns the rows into a cost model.

.. note::
  Departures from research/hwcost.md §5.3, on purpose: square kernels and strides (``kernel``,
  ``stride``), the ``conv``/``linear`` vocabulary of :class:`~hwcost.layer_spec.LayerSpec`, no
  ``o_bits``, ``fused``, ``latency_std_ms``, ``n_samples`` or ``source`` columns (cite sources
  in comments), and a fixed 1% tolerance for duplicates.
"""

import csv
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from hwcost.cost_model import CostTableError
from hwcost.layer_spec import LayerSpec
from hwcost.target_file import Pair

KEY_COLUMNS = (
  "op", "kernel", "stride", "groups", "cin", "cout", "in_h", "in_w", "out_h", "out_w",
  "w_bits", "a_bits",
)  # fmt: skip
"""Columns that identify a row; two rows with the same key are duplicates."""

COLUMNS = (*KEY_COLUMNS, "latency_ms", "energy_uj")
"""Every column of a measured CSV, in its usual order (``energy_uj`` may be omitted)."""

MEASURED_METRICS = ("latency_ms", "energy_uj")
"""The metrics measured rows provide; all others come from the fallback."""

MAX_BITS = 16
DUPLICATE_TOLERANCE = 0.01
"""Duplicate rows whose values differ by more than this fraction of their mean are an error."""

_SHAPE_COLUMNS = KEY_COLUMNS[1:10]
_OPS = ("conv", "linear")


@dataclass(frozen=True)
class MeasuredRow:
  """One measured layer (duplicates merged).

  Attributes:
    spec: the layer; its name is ``FILE:ROW``.
    w_bits: weight bits.
    a_bits: activation bits.
    values: ``latency_ms`` and, if measured, ``energy_uj`` (means over merged duplicates).
    lines: the file's 1-based lines this row was merged from.
  """

  spec: LayerSpec
  w_bits: int
  a_bits: int
  values: Mapping[str, float]
  lines: tuple[int, ...]

  @property
  def key(self) -> tuple:
    return layer_key(self.spec, (self.w_bits, self.a_bits))


@dataclass(frozen=True)
class MeasuredRows:
  """The checked rows of one measured CSV.

  Attributes:
    path: the file, as the caller gave it (messages and provenance quote it).
    rows: the rows in file order, duplicates merged into their first occurrence.
  """

  path: str
  rows: tuple[MeasuredRow, ...]

  def where(self, row: MeasuredRow) -> str:
    """``FILE:ROW`` of a row's first line."""
    return f"{self.path}:{row.lines[0]}"


def read_measured_csv(path: str | os.PathLike) -> MeasuredRows:
  """Reads and checks a CSV of measured rows.

  Args:
    path: the CSV file; messages quote it as given.

  Returns:
    The :class:`MeasuredRows`; duplicate keys whose values agree within 1% are merged by their
    mean.

  Raises:
    CostTableError: the file is unreadable or empty, a column is missing or unknown, a field is
      not a positive int (shapes) or positive number (``latency_ms``, ``energy_uj``), ``op`` is
      not conv or linear, bits are outside 1..16, a shape cannot be (out ≠ ⌈in/stride⌉ for conv;
      a linear row with a kernel, stride, groups or spatial size other than 1; groups not
      dividing cin and cout), or duplicate rows disagree by more than 1%. The message is
      ``FILE:ROW: FIELD: ...``, e.g. ``rows.csv:7: out_h: expected ceil(16/2) = 8 ('SAME'
      padding), got 16``.

  Example:
    >>> rows = read_measured_csv("tests/hwcost/fixtures/two_width_rows.csv")  # doctest: +SKIP
    >>> rows.rows[0].values, rows.where(rows.rows[0])
    ({'latency_ms': 0.08, 'energy_uj': 0.2}, 'tests/hwcost/fixtures/two_width_rows.csv:3')
  """
  where = str(path)
  checker = _RowChecker(where)
  columns, groups = None, {}
  last = 1
  for line, text in enumerate(_read_lines(where), 1):
    if not text.strip() or text.lstrip().startswith("#"):
      continue
    last = line
    fields = [f.strip() for f in next(csv.reader([text]))]
    if columns is None:
      columns = checker.header(line, fields)
      continue
    row = checker.row(line, columns, fields)
    group = groups.setdefault(row.key, [])
    checker.agrees(row, group)
    group.append(row)
  if not groups:
    checker.fail(last, "(file)", "expected a header line and at least one row, got none")
  return MeasuredRows(path=where, rows=tuple(_merge(group) for group in groups.values()))


def _read_lines(where: str) -> list[str]:
  try:
    with open(where, encoding="utf-8", newline="") as f:
      return f.read().splitlines()
  except FileNotFoundError:
    raise CostTableError(f"{where}: no such measured-rows file") from None
  except (OSError, UnicodeDecodeError) as e:
    why = getattr(e, "strerror", None) or str(e)
    raise CostTableError(f"{where}: cannot read measured-rows file ({why})") from None


class _RowChecker:
  """Checks one CSV, raising at the first problem with ``FILE:ROW: FIELD: message``."""

  def __init__(self, where: str):
    self.where = where

  def fail(self, line: int, field: str, message: str):
    raise CostTableError(f"{self.where}:{line}: {field}: {message}")

  def header(self, line: int, fields: list[str]) -> tuple[str, ...]:
    allowed = f"{', '.join(COLUMNS)} (energy_uj optional)"
    for i, name in enumerate(fields):
      if name not in COLUMNS:
        self.fail(
          line, name or f"column {i + 1}", f"unknown column; expected {allowed}, got {name!r}"
        )
      if name in fields[:i]:
        self.fail(line, name, f"column given twice; expected {allowed}, got {','.join(fields)}")
    for name in COLUMNS[:-1]:
      if name not in fields:
        self.fail(line, name, f"missing column; expected {allowed}, got {','.join(fields)}")
    return tuple(fields)

  def row(self, line: int, columns: tuple[str, ...], fields: list[str]) -> MeasuredRow:
    if len(fields) != len(columns):
      self.fail(
        line, "(row)", f"expected {len(columns)} fields ({','.join(columns)}), got {len(fields)}"
      )
    raw = dict(zip(columns, fields, strict=True))
    if raw["op"] not in _OPS:
      self.fail(line, "op", f"expected one of {', '.join(_OPS)}, got {raw['op']!r}")
    ints = {name: self.positive_int(line, name, raw[name]) for name in _SHAPE_COLUMNS}
    bits = {name: self.bits(line, name, raw[name]) for name in ("w_bits", "a_bits")}
    values = {"latency_ms": self.positive(line, "latency_ms", raw["latency_ms"])}
    if raw.get("energy_uj", ""):
      values["energy_uj"] = self.positive(line, "energy_uj", raw["energy_uj"])
    self.shape(line, raw["op"], ints)
    spec = LayerSpec(
      f"{self.where}:{line}",
      raw["op"],
      ints["kernel"],
      ints["stride"],
      ints["cin"],
      ints["cout"],
      (ints["in_h"], ints["in_w"]),
      (ints["out_h"], ints["out_w"]),
      groups=ints["groups"],
    )
    return MeasuredRow(spec, bits["w_bits"], bits["a_bits"], values, (line,))

  def positive_int(self, line: int, field: str, text: str) -> int:
    try:
      value = int(text)
    except ValueError:
      value = None
    if value is None or value <= 0:
      self.fail(line, field, f"expected a positive int, got {text!r}")
    return value

  def bits(self, line: int, field: str, text: str) -> int:
    value = text.isdigit() and int(text)
    if not value or value > MAX_BITS:
      self.fail(line, field, f"expected an int bit-width in 1..{MAX_BITS}, got {text!r}")
    return value

  def positive(self, line: int, field: str, text: str) -> float:
    try:
      value = float(text)
    except ValueError:
      value = math.nan
    if not (math.isfinite(value) and value > 0):
      self.fail(line, field, f"expected a positive number, got {text!r}")
    return value

  def shape(self, line: int, op: str, ints: dict[str, int]):
    groups = ints["groups"]
    if op == "linear":
      for field in ("kernel", "stride", "groups", "in_h", "in_w", "out_h", "out_w"):
        if ints[field] != 1:
          self.fail(line, field, f"expected 1 for a linear row, got {ints[field]}")
    for field in ("out_h", "out_w"):
      size = ints[field.replace("out", "in")]
      expected = math.ceil(size / ints["stride"])
      if ints[field] != expected:
        self.fail(
          line,
          field,
          f"expected ceil({size}/{ints['stride']}) = {expected} ('SAME' padding), "
          f"got {ints[field]}",
        )
    if ints["cin"] % groups or ints["cout"] % groups:
      self.fail(
        line,
        "groups",
        f"expected a divisor of cin={ints['cin']} and cout={ints['cout']}, got {groups}",
      )

  def agrees(self, row: MeasuredRow, group: list[MeasuredRow]):
    """Checks ``row`` against earlier rows with its key: within 1% of their mean."""
    for metric, value in row.values.items():
      for other in group:
        theirs = other.values.get(metric)
        if theirs is not None and abs(value - theirs) > DUPLICATE_TOLERANCE * (value + theirs) / 2:
          self.fail(
            row.lines[0],
            metric,
            f"expected within {DUPLICATE_TOLERANCE:.0%} of row "
            f"{other.lines[0]} (same key), which has {theirs:g}, got {value:g}",
          )


def _merge(group: list[MeasuredRow]) -> MeasuredRow:
  """One row from duplicates that agree: each value is the mean of the rows that have it."""
  values = {}
  for metric in MEASURED_METRICS:
    present = [row.values[metric] for row in group if metric in row.values]
    if present:
      values[metric] = float(np.mean(present))
  first = group[0]
  lines = tuple(row.lines[0] for row in group)
  return MeasuredRow(first.spec, first.w_bits, first.a_bits, values, lines)


def layer_key(spec: LayerSpec, pair: Pair) -> tuple:
  """The key of a layer at a pair: what an exact match compares (dilation is not a column)."""
  return (
    spec.op,
    spec.kernel,
    spec.stride,
    spec.groups,
    spec.cin,
    spec.cout,
    *spec.in_hw,
    *spec.out_hw,
    *pair,
  )
