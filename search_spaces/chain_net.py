"""The chain network every chain space builds: its layout, its space methods, its module.

A chain space is

  stem → choice point 0 → … → choice point L−1 → [1×1 head conv] → global average pool → linear

where each choice point picks one candidate op and, for that op, one weight and one activation
bit-width; the stem, the optional head conv and the classifier are fixed at 8 bits. The
``tiny`` and ``mbconv`` spaces and user chain spaces (``search_spaces.chain``) differ only in
the :class:`ChainLayout` they declare: :class:`ChainNet` is the supernet and the SubNet of all.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from hwcost import LayerSpec
from search_spaces.base import Choice, Probs
from search_spaces.candidates import build_chain_op, has_residual, op_fits
from search_spaces.ops import QAvgPool, QConv, QDense

FIXED_BITS = 8


def _ceil_div(size: int, stride: int) -> int:
  return -(-size // stride)


@dataclass(frozen=True)
class ChainPoint:
  """One choice point of a chain.

  Attributes:
    name: choice name (``layer3``, ``stage1.block0``).
    cin, cout: input and output channels.
    stride: 1 or 2.
    in_hw: input ``(H, W)``.
    candidates: the op names offered here (those that do not fit the shape are masked).
  """

  name: str
  cin: int
  cout: int
  stride: int
  in_hw: tuple[int, int]
  candidates: tuple[str, ...]

  @property
  def out_hw(self) -> tuple[int, int]:
    return tuple(_ceil_div(d, self.stride) for d in self.in_hw)


@dataclass(frozen=True)
class ChainLayout:
  """The shapes of a chain space: stem, choice points, optional head conv, classifier."""

  input_shape: tuple[int, int, int]
  num_classes: int
  stem_channels: int
  points: tuple[ChainPoint, ...]
  stem_kernel: int = 3
  stem_stride: int = 1
  head_channels: int | None = None

  @classmethod
  def plan(
    cls,
    input_shape: Sequence[int],
    num_classes: int,
    *,
    stem_channels: int,
    layers: Sequence[tuple[str, int, int, Sequence[str]]],
    stem_kernel: int = 3,
    stem_stride: int = 1,
    head_channels: int | None = None,
  ) -> "ChainLayout":
    """Chains ``layers`` — ``(name, cout, stride, candidates)`` each — after the stem."""
    h, w, _ = input_shape
    hw, cin, points = (_ceil_div(h, stem_stride), _ceil_div(w, stem_stride)), stem_channels, []
    for name, cout, stride, candidates in layers:
      points.append(ChainPoint(name, cin, cout, stride, hw, tuple(candidates)))
      hw, cin = points[-1].out_hw, cout
    return cls(
      tuple(input_shape),
      num_classes,
      stem_channels,
      tuple(points),
      stem_kernel,
      stem_stride,
      head_channels,
    )

  @property
  def op_names(self) -> tuple[str, ...]:
    """The union of the points' candidates, in order of first appearance."""
    return tuple(dict.fromkeys(op for p in self.points for op in p.candidates))

  def op_mask(self) -> list[list[bool]]:
    """``(L, O)``: op o is offered at point l and fits its shape (skip needs cin == cout, s 1)."""
    return [
      [op in p.candidates and op_fits(op, p.cin, p.cout, p.stride) for op in self.op_names]
      for p in self.points
    ]

  @property
  def features(self) -> tuple[int, tuple[int, int]]:
    """Channels and ``(H, W)`` after the last choice point (the head conv's input)."""
    if not self.points:
      h, w, _ = self.input_shape
      return self.stem_channels, (_ceil_div(h, self.stem_stride), _ceil_div(w, self.stem_stride))
    return self.points[-1].cout, self.points[-1].out_hw


class ChainSpaceBase:
  """The search-space methods every chain space shares; subclasses declare a layout.

  Attributes:
    layout: the :class:`ChainLayout`.
    input_shape, num_classes: of the data.
    choice_names: ``L`` choice point names, in forward order.
    op_names: ``O`` candidate op names (the union over choice points).
  """

  name: str

  def __init__(self, layout: ChainLayout):
    self.layout = layout
    self.input_shape, self.num_classes = layout.input_shape, layout.num_classes
    self.choice_names = tuple(p.name for p in layout.points)
    self.op_names = layout.op_names

  def op_mask(self) -> list[list[bool]]:
    """``(L, O)``: whether op o is a candidate at choice point l."""
    return self.layout.op_mask()

  def build(
    self,
    w_bits: Sequence[int],
    a_bits: Sequence[int],
    rngs: nnx.Rngs,
    choices: Sequence[Choice] | None = None,
  ) -> "ChainNet":
    """The supernet (``choices`` None) or the fixed SubNet of ``choices``."""
    return ChainNet(self.layout, tuple(w_bits), tuple(a_bits), rngs, choices)

  def candidate_layers(self, net: "ChainNet") -> list[list[list[LayerSpec] | None]]:
    """``L × O`` lists of the LayerSpecs of each candidate (None where it is not offered)."""
    table = []
    for l, (ops, idx) in enumerate(zip(net.layers, net.op_index, strict=True)):
      row: list[list[LayerSpec] | None] = [None] * len(self.op_names)
      for op, o in zip(ops, idx, strict=True):
        prefix = f"{self.choice_names[l]}.{self.op_names[o]}"
        row[o] = [conv.layer_spec(prefix) for conv in op.convs]
      table.append(row)
    return table

  def fixed_layers(self, net: "ChainNet") -> list[LayerSpec]:
    """LayerSpecs of the layers every SubNet has (stem, head conv, classifier), at 8/8 bits."""
    head_conv = [] if net.head_conv is None else [net.head_conv.layer_spec("head")]
    return [net.stem.layer_spec("stem"), *head_conv, net.head.layer_spec("head.fc")]


class ChainNet(nnx.Module):
  """Supernet or SubNet of a chain space.

  ``__call__(x, probs)``: ``x`` is ``(N, H, W, C)`` float in [0, 1]; ``probs`` a
  :class:`Probs` over the ``O`` ops of the space (``None`` for a SubNet: every weight is 1).
  Returns logits ``(N, num_classes)``. A choice point's output is Σ_o p_o · op_o(x) over the
  ops built there.

  Attributes:
    layers: per choice point, the built ops (all offered ones, or the chosen one).
    op_index: per choice point, the global op index of each built op (static).
    head_conv: the fixed 1×1 head conv, or None.
  """

  def __init__(
    self,
    layout: ChainLayout,
    w_bits: Sequence[int],
    a_bits: Sequence[int],
    rngs: nnx.Rngs,
    choices: Sequence[Choice] | None = None,
  ):
    fixed = (FIXED_BITS,)
    h, w, c = layout.input_shape
    k = layout.stem_kernel
    stem_args = (c, layout.stem_channels, k, layout.stem_stride, (h, w), fixed, fixed)
    self.stem = QConv(*stem_args, rngs=rngs, name=f"conv{k}x{k}")
    if choices is not None and len(choices) != len(layout.points):
      raise ValueError(f"expected {len(layout.points)} choices, got {len(choices)}")
    layers, op_index = [], []
    for l, point in enumerate(layout.points):
      choice = None if choices is None else choices[l]
      idx = _built_ops(layout, l, choice)
      wb, ab = (w_bits, a_bits) if choice is None else ((choice.w_bits,), (choice.a_bits,))
      shape = (point.cin, point.cout, point.stride, point.in_hw)
      layers.append(
        nnx.List([build_chain_op(layout.op_names[o], *shape, wb, ab, rngs) for o in idx])
      )
      op_index.append(idx)
    self.layers = nnx.List(layers)
    self.op_index = tuple(op_index)  # static: the global op index of each built op
    self.choice_names = tuple(p.name for p in layout.points)
    channels, hw = layout.features
    head_conv = None
    if layout.head_channels is not None:
      head_conv = QConv(
        channels, layout.head_channels, 1, 1, hw, fixed, fixed, rngs=rngs, name="conv1x1"
      )
      channels = layout.head_channels
    self.head_conv = head_conv
    self.pool = QAvgPool(FIXED_BITS)
    self.head = QDense(channels, layout.num_classes, rngs=rngs, bits=FIXED_BITS)

  def __call__(self, x: jax.Array, probs: Probs | None = None) -> jax.Array:
    one = jnp.ones((1,))
    x = self.stem(x, one, one)
    for l, (ops, idx) in enumerate(zip(self.layers, self.op_index, strict=True)):
      if probs is None:
        (op,) = ops
        x = op(x, one, one)
      else:
        x = sum(
          probs.op[l, o] * op(x, probs.w[l, o], probs.a[l, o])
          for op, o in zip(ops, idx, strict=True)
        )
    if self.head_conv is not None:
      x = self.head_conv(x, one, one)
    return self.head(self.pool(x))

  def calibrate(self, x: jax.Array) -> None:
    """LSQ-initialises every activation step from one batch (eager; uniform mixing)."""
    x = _calibrated(self.stem, x)
    for ops in self.layers:
      outs = []
      for op in ops:
        h = x
        for conv in op.convs:
          h = _calibrated(conv, h)
        if has_residual(op):  # the first conv's steps are calibrated by now
          n_a = len(op.convs[0].a_bits)
          h = op.skip(x, jnp.full(n_a, 1 / n_a)) + h
        outs.append(h)
      x = sum(outs) / len(outs)
    if self.head_conv is not None:
      x = _calibrated(self.head_conv, x)
    self.pool.calibrate(x)
    self.head.calibrate(self.pool(x))

  def inherit(
    self, supernet: "ChainNet", choices: Sequence[Choice], op_names: Sequence[str]
  ) -> None:
    """Copies the chosen ops' weights and step sizes from ``supernet`` (self is the SubNet)."""
    self.stem.inherit(supernet.stem, 0, 0)
    for l, choice in enumerate(choices):
      o = op_names.index(choice.op)
      src_op = supernet.layers[l][supernet.op_index[l].index(o)]
      (dst_op,) = self.layers[l]
      for dst, src in zip(dst_op.convs, src_op.convs, strict=True):
        dst.inherit(src, src.w_bits.index(choice.w_bits), src.a_bits.index(choice.a_bits))
    if self.head_conv is not None:
      self.head_conv.inherit(supernet.head_conv, 0, 0)
    self.pool.a_steps[...] = supernet.pool.a_steps[...]
    for name in ("kernel", "bias", "w_steps", "a_steps"):
      getattr(self.head, name)[...] = getattr(supernet.head, name)[...]

  def quantized_layers(self, op_names: Sequence[str]) -> list[tuple[str, nnx.Module]]:
    """The SubNet's quantized modules in execution order, named: QConv…, QAvgPool, QDense.

    After the convs of an op with a residual add comes ``("<point>.<op>.add",
    ResidualAdd(skip="<point>.<op>.<first conv>"))``: add that conv's input (the block input)
    to the last conv's output.
    """
    named = [("stem", self.stem)]
    for l, (ops, idx) in enumerate(zip(self.layers, self.op_index, strict=True)):
      (op,), (o,) = ops, idx
      prefix = f"{self.choice_names[l]}.{op_names[o]}"
      named += [(f"{prefix}.{conv.name}", conv) for conv in op.convs]
      if has_residual(op):
        named.append((f"{prefix}.add", ResidualAdd(skip=f"{prefix}.{op.convs[0].name}")))
    if self.head_conv is not None:
      named.append(("head.conv1x1", self.head_conv))
    return [*named, ("pool", self.pool), ("head.fc", self.head)]


@dataclass(frozen=True)
class ResidualAdd:
  """A residual add in :meth:`ChainNet.quantized_layers`: the previous layer's output plus the
  input of the earlier layer named ``skip`` (the float sum that the next quantizer reads)."""

  skip: str


def _built_ops(layout: ChainLayout, l: int, choice: Choice | None) -> tuple[int, ...]:
  """Global indices of the ops built at point l: every offered op, or the chosen one."""
  mask = layout.op_mask()[l]
  if choice is None:
    return tuple(o for o, offered in enumerate(mask) if offered)
  if choice.op not in layout.op_names or not mask[layout.op_names.index(choice.op)]:
    point = layout.points[l]
    raise ValueError(f"{point.name}: {choice.op!r} is not a candidate of this choice point")
  return (layout.op_names.index(choice.op),)


def _calibrated(conv: QConv, x: jax.Array) -> jax.Array:
  """Calibrates ``conv``'s input steps on ``x``; returns its output under uniform bit mixing."""
  conv.calibrate(x)
  n_w, n_a = len(conv.w_bits), len(conv.a_bits)
  return conv(x, jnp.full(n_w, 1 / n_w), jnp.full(n_a, 1 / n_a))
