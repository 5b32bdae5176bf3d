"""User-declared chain spaces: a YAML file of choice layers and their candidate ops.

The space is a chain (``search_spaces.chain_net``): a fixed stem, one choice point per layer,
an optional fixed 1×1 head conv, global average pooling and a linear classifier; the fixed
layers run at 8 bits. A file declares the stem, the choice layers and their candidates::

  schema_version: 1            # required; the version of this format
  name: my_chain               # required; shown in reports
  stem: {channels: 16, kernel: 3, stride: 1}   # fixed 8-bit conv + ReLU
  layers:                      # required, at least one; each is a choice point
    - {channels: 16, stride: 1, candidates: [conv3x3, dwsep3x3, skip]}
    - {channels: 32, stride: 2, candidates: [conv3x3, conv5x5, mb3x3_e3]}
    - {channels: 32, repeat: 2, candidates: [mb3x3_e3, mb5x5_e6, skip]}
  head: {channels: 64}         # optional fixed 8-bit 1×1 conv + ReLU before the pool

Fields:

- ``stem``: ``channels`` (required, ≥ 1), ``kernel`` (odd, default 3), ``stride`` (1 or 2,
  default 1).
- ``layers[i]``: ``channels`` (required, ≥ 1), ``candidates`` (required, a non-empty list
  without repeats), ``stride`` (1 or 2, default 1), ``repeat`` (≥ 1, default 1: the layer is
  repeated; the copies after the first have stride 1 and keep the channels). Choice points
  are named ``layer{i}`` (``layer{i}.{j}`` for the copies of a repeated layer).
- ``head``: ``channels`` (required, ≥ 1).

Candidates: ``conv3x3``, ``conv5x5`` (conv + ReLU), ``dwsep3x3``, ``dwsep5x5`` (depthwise +
ReLU, pointwise + ReLU), ``skip`` (identity) and the inverted residual blocks ``mb{k}x{k}_e{e}``
(odd kernel k, expansion e ≥ 1, e.g. ``mb3x3_e3``; see ``candidates.MBConvOp``). ``skip``
needs an unchanged shape (stride 1, channels equal to the layer's input channels); in a
repeated layer it is offered only at the copies where it fits. The space's op names are the
union of the layers' candidates, in order of first appearance; a candidate is masked at the
choice points that do not list it.

Errors: a file that cannot be read, or breaks the format, raises :class:`SpaceFileError`
(a ``ValueError``) whose message names the file, the field (``layers[1].candidates[2]``) and
what was expected, e.g. ``space.yaml: layers[1].stride: expected 1 or 2, got 3``.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from search_spaces.candidates import CANDIDATE_OPS, is_chain_op, op_fits
from search_spaces.chain_net import ChainLayout, ChainSpaceBase

SCHEMA_VERSION = 1


class SpaceFileError(ValueError):
  """A chain space file cannot be read or breaks the format.

  Attributes:
    source: the file (or ``<dict>`` for an in-memory document).
    field: the offending field (``layers[1].candidates[2]``), or "" for the whole file.
  """

  def __init__(self, source: str, field: str, problem: str):
    self.source, self.field = source, field
    super().__init__(f"{source}: {field}: {problem}" if field else f"{source}: {problem}")


@dataclass(frozen=True)
class DeclaredLayer:
  """One ``layers[i]`` entry of a chain space file, validated."""

  channels: int
  stride: int
  candidates: tuple[str, ...]
  repeat: int = 1


class ChainSpace(ChainSpaceBase):
  """A user-declared chain (see the module docstring for the file format).

  Args:
    input_shape: ``(H, W, C)`` of one sample.
    num_classes: classifier outputs.
    chain_name: the file's ``name`` (for reports).
    stem_channels, stem_kernel, stem_stride: the fixed stem conv.
    layers: the declared layers, in order.
    head_channels: channels of the fixed 1×1 head conv, or None for none.
  """

  name = "chain"

  def __init__(
    self,
    input_shape: Sequence[int],
    num_classes: int,
    *,
    chain_name: str,
    stem_channels: int,
    layers: Sequence[DeclaredLayer],
    stem_kernel: int = 3,
    stem_stride: int = 1,
    head_channels: int | None = None,
  ):
    self.chain_name, self.declared = chain_name, tuple(layers)
    super().__init__(
      ChainLayout.plan(
        input_shape,
        num_classes,
        stem_channels=stem_channels,
        layers=_expand(self.declared),
        stem_kernel=stem_kernel,
        stem_stride=stem_stride,
        head_channels=head_channels,
      )
    )


def _expand(layers: Sequence[DeclaredLayer]) -> list[tuple[str, int, int, tuple[str, ...]]]:
  """``(name, cout, stride, candidates)`` of every choice point, repeats unrolled."""
  points = []
  for i, layer in enumerate(layers):
    for j in range(layer.repeat):
      name = f"layer{i}" if layer.repeat == 1 else f"layer{i}.{j}"
      points.append((name, layer.channels, layer.stride if j == 0 else 1, layer.candidates))
  return points


def load_chain_space(path: str | Path, input_shape: Sequence[int], num_classes: int) -> ChainSpace:
  """Reads and validates a chain space file (format in the module docstring).

  Raises:
    SpaceFileError: naming the file and field, for a missing or unreadable file, invalid
      YAML, or any breach of the format.
  """
  path = Path(path)
  try:
    doc = yaml.safe_load(path.read_text())
  except FileNotFoundError as e:
    raise SpaceFileError(str(path), "", "chain space file not found") from e
  except (OSError, UnicodeDecodeError) as e:
    raise SpaceFileError(str(path), "", f"cannot read the file ({e})") from e
  except yaml.YAMLError as e:
    mark = getattr(e, "problem_mark", None)
    where = f"line {mark.line + 1}" if mark else ""
    raise SpaceFileError(str(path), where, f"not valid YAML ({getattr(e, 'problem', e)})") from e
  return parse_chain_space(doc, input_shape, num_classes, source=str(path))


def parse_chain_space(
  doc: Any, input_shape: Sequence[int], num_classes: int, *, source: str = "<dict>"
) -> ChainSpace:
  """Validates a parsed chain space document (e.g. a config section) and builds the space.

  Raises:
    SpaceFileError: naming ``source`` and the field.
  """
  top = _fields(doc, "", source, ("schema_version", "name", "stem", "layers"), ("head",))
  version = top["schema_version"]
  if not _is_int(version) or version != SCHEMA_VERSION:
    raise SpaceFileError(
      source,
      "schema_version",
      f"expected {SCHEMA_VERSION} (the version this qdarts reads), got {version!r}",
    )
  if not isinstance(top["name"], str) or not top["name"].strip():
    raise SpaceFileError(source, "name", f"expected a non-empty string, got {top['name']!r}")
  stem = _fields(top["stem"], "stem", source, ("channels",), ("kernel", "stride"))
  stem_channels = _int(stem["channels"], source, "stem.channels", "positive")
  head_channels = None
  if "head" in top:
    head = _fields(top["head"], "head", source, ("channels",))
    head_channels = _int(head["channels"], source, "head.channels", "positive")
  return ChainSpace(
    input_shape,
    num_classes,
    chain_name=top["name"],
    stem_channels=stem_channels,
    layers=_declared_layers(top["layers"], stem_channels, source),
    stem_kernel=_int(stem.get("kernel", 3), source, "stem.kernel", "odd"),
    stem_stride=_int(stem.get("stride", 1), source, "stem.stride", "stride"),
    head_channels=head_channels,
  )


_INT_RULES = {
  "positive": ("a positive integer", lambda v: v >= 1),
  "odd": ("an odd positive integer", lambda v: v >= 1 and v % 2 == 1),
  "stride": ("1 or 2", lambda v: v in (1, 2)),
}
_KNOWN_CANDIDATES = ", ".join(CANDIDATE_OPS) + ", mb{k}x{k}_e{e} (odd k, e >= 1, e.g. mb3x3_e3)"


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _int(value: Any, source: str, field: str, rule: str) -> int:
  expected, ok = _INT_RULES[rule]
  if not _is_int(value) or not ok(value):
    raise SpaceFileError(source, field, f"expected {expected}, got {value!r}")
  return value


def _fields(
  raw: Any, where: str, source: str, required: Sequence[str], optional: Sequence[str] = ()
) -> Mapping[str, Any]:
  """``raw`` as a mapping, after checking it has every required key and no unknown one."""
  allowed = (*required, *optional)
  if not isinstance(raw, Mapping):
    raise SpaceFileError(
      source, where, f"expected a mapping with keys {', '.join(allowed)}, got {raw!r}"
    )
  for key in raw:
    if key not in allowed:
      raise SpaceFileError(source, _join(where, key), f"unknown key; allowed: {', '.join(allowed)}")
  for key in required:
    if key not in raw:
      raise SpaceFileError(source, _join(where, key), "missing field (it is required)")
  return raw


def _join(where: str, key: Any) -> str:
  return f"{where}.{key}" if where else str(key)


def _declared_layers(raw: Any, cin: int, source: str) -> list[DeclaredLayer]:
  """The validated ``layers`` list; ``cin`` is the stem's output channels."""
  if not isinstance(raw, list) or not raw:
    raise SpaceFileError(source, "layers", f"expected a non-empty list of layers, got {raw!r}")
  layers = []
  for i, entry in enumerate(raw):
    where = f"layers[{i}]"
    fields = _fields(entry, where, source, ("channels", "candidates"), ("stride", "repeat"))
    layer = DeclaredLayer(
      channels=_int(fields["channels"], source, f"{where}.channels", "positive"),
      stride=_int(fields.get("stride", 1), source, f"{where}.stride", "stride"),
      candidates=_candidates(fields["candidates"], f"{where}.candidates", source),
      repeat=_int(fields.get("repeat", 1), source, f"{where}.repeat", "positive"),
    )
    _check_fit(layer, cin, where, source)
    layers.append(layer)
    cin = layer.channels
  return layers


def _candidates(raw: Any, where: str, source: str) -> tuple[str, ...]:
  if not isinstance(raw, list) or not raw:
    raise SpaceFileError(
      source, where, f"expected a non-empty list of candidate op names, got {raw!r}"
    )
  for j, op in enumerate(raw):
    if not isinstance(op, str) or not is_chain_op(op):
      raise SpaceFileError(
        source, f"{where}[{j}]", f"unknown candidate {op!r}; known: {_KNOWN_CANDIDATES}"
      )
    if op in raw[:j]:
      raise SpaceFileError(source, f"{where}[{j}]", f"{op!r} is listed twice")
  return tuple(raw)


def _check_fit(layer: DeclaredLayer, cin: int, where: str, source: str) -> None:
  """Every candidate fits some choice point of the layer, and every point has a candidate.

  Only ``skip`` can fail to fit (it needs an unchanged shape), and only the layer's first
  choice point can change the shape.
  """
  shape = f"maps {cin}→{layer.channels} channels at stride {layer.stride}"
  if (
    "skip" in layer.candidates
    and layer.repeat == 1
    and not op_fits("skip", cin, layer.channels, layer.stride)
  ):
    raise SpaceFileError(
      source,
      f"{where}.candidates[{layer.candidates.index('skip')}]",
      f"'skip' needs an unchanged shape (stride 1 and {cin} output channels, as its input), "
      f"but this layer {shape}",
    )
  if not any(op_fits(op, cin, layer.channels, layer.stride) for op in layer.candidates):
    raise SpaceFileError(
      source,
      where,
      f"no candidate fits the layer's first choice point, which {shape} ('skip' needs an "
      "unchanged shape); add one that changes it, such as conv3x3",
    )
