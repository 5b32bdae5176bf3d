"""The ``tiny`` chain space: stem → L choice layers → global pool → classifier.

Each choice layer picks one candidate op (conv3x3, conv5x5, depthwise-separable 3x3/5x5, skip
where the shape allows) and, for that op, one weight and one activation bit-width. The stem and
the classifier are fixed at 8 bits. It is small enough for tests and the quickstart on a CPU.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from hwcost import LayerSpec
from search_spaces.base import Choice, Probs
from search_spaces.candidates import CANDIDATE_OPS, build_op, op_fits
from search_spaces.ops import QAvgPool, QConv, QDense

FIXED_BITS = 8


class TinySpace:
  """A chain of choice layers with given widths and strides.

  Args:
    input_shape: ``(H, W, C)`` of one sample.
    num_classes: classifier outputs.
    stem_channels: output channels of the fixed 3×3 stem.
    channels: output channels of each choice layer (``L`` entries).
    strides: stride of each choice layer (1 or 2).
    ops: candidate op names, a subset of ``CANDIDATE_OPS``.
  """

  name = "tiny"

  def __init__(
    self,
    input_shape: Sequence[int],
    num_classes: int,
    stem_channels: int,
    channels: Sequence[int],
    strides: Sequence[int],
    ops: Sequence[str],
  ):
    if len(channels) != len(strides):
      raise ValueError("channels and strides must have the same length")
    unknown = [op for op in ops if op not in CANDIDATE_OPS]
    if unknown:
      raise ValueError(f"unknown op {unknown[0]!r}; known: {', '.join(CANDIDATE_OPS)}")
    self.input_shape = tuple(input_shape)
    self.num_classes = num_classes
    self.stem_channels = stem_channels
    self.channels, self.strides, self.op_names = tuple(channels), tuple(strides), tuple(ops)
    self.choice_names = tuple(f"layer{i}" for i in range(len(channels)))
    # (cin, cout, stride, in_hw) of every choice point
    hw, cin, self.shapes = tuple(self.input_shape[:2]), stem_channels, []
    for cout, s in zip(self.channels, self.strides, strict=True):
      self.shapes.append((cin, cout, s, hw))
      hw, cin = tuple(-(-d // s) for d in hw), cout

  def op_mask(self) -> list[list[bool]]:
    """``(L, O)``: whether op o fits choice point l (skip needs an unchanged shape)."""
    return [[op_fits(op, cin, cout, s) for op in self.op_names] for cin, cout, s, _ in self.shapes]

  def build(
    self,
    w_bits: Sequence[int],
    a_bits: Sequence[int],
    rngs: nnx.Rngs,
    choices: Sequence[Choice] | None = None,
  ) -> "TinyNet":
    return TinyNet(self, tuple(w_bits), tuple(a_bits), rngs, choices)

  def candidate_layers(self, net: "TinyNet") -> list[list[list[LayerSpec] | None]]:
    """``L × O`` lists of the LayerSpecs of each candidate (None where it does not fit)."""
    table = []
    for l, (ops, idx) in enumerate(zip(net.layers, net.op_index, strict=True)):
      row: list[list[LayerSpec] | None] = [None] * len(self.op_names)
      for op, o in zip(ops, idx, strict=True):
        prefix = f"{self.choice_names[l]}.{self.op_names[o]}"
        row[o] = [conv.layer_spec(prefix) for conv in op.convs]
      table.append(row)
    return table

  def fixed_layers(self, net: "TinyNet") -> list[LayerSpec]:
    """LayerSpecs of the layers that every SubNet has (stem, classifier), at 8/8 bits."""
    return [net.stem.layer_spec("stem"), net.head.layer_spec("head.fc")]


class TinyNet(nnx.Module):
  """Supernet or SubNet of a :class:`TinySpace`.

  ``__call__(x, probs)``: ``x`` is ``(N, H, W, C)`` float in [0, 1]; ``probs`` a
  :class:`Probs` over the ``O`` ops of the space (``None`` for a SubNet: every weight is 1).
  Returns logits ``(N, num_classes)``.
  """

  def __init__(
    self, space: TinySpace, w_bits, a_bits, rngs: nnx.Rngs, choices: Sequence[Choice] | None
  ):
    fixed = (FIXED_BITS,)
    h, w, c = space.input_shape
    self.stem = QConv(c, space.stem_channels, 3, 1, (h, w), fixed, fixed, rngs=rngs, name="conv3x3")
    mask = space.op_mask()
    layers, op_index = [], []
    for l, (cin, cout, s, hw) in enumerate(space.shapes):
      if choices is None:
        idx = tuple(o for o, fits in enumerate(mask[l]) if fits)
        wb, ab = w_bits, a_bits
      else:
        idx = (space.op_names.index(choices[l].op),)
        wb, ab = (choices[l].w_bits,), (choices[l].a_bits,)
      layers.append(
        nnx.List([build_op(space.op_names[o], cin, cout, s, hw, wb, ab, rngs) for o in idx])
      )
      op_index.append(idx)
    self.layers = nnx.List(layers)
    self.op_index = tuple(op_index)  # static: global op index of each built op
    self.pool = QAvgPool(FIXED_BITS)
    self.head = QDense(space.channels[-1], space.num_classes, rngs=rngs, bits=FIXED_BITS)

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
    return self.head(self.pool(x))

  def calibrate(self, x: jax.Array) -> None:
    """LSQ-initialises every activation step from one batch (eager; uniform mixing)."""

    def run(conv, h):
      conv.calibrate(h)
      return conv(
        h,
        jnp.full(len(conv.w_bits), 1 / len(conv.w_bits)),
        jnp.full(len(conv.a_bits), 1 / len(conv.a_bits)),
      )

    x = run(self.stem, x)
    for ops in self.layers:
      outs = []
      for op in ops:
        h = x
        for conv in op.convs:
          h = run(conv, h)
        outs.append(h)
      x = sum(outs) / len(outs)
    self.pool.calibrate(x)
    self.head.calibrate(self.pool(x))

  def inherit(
    self, supernet: "TinyNet", choices: Sequence[Choice], op_names: Sequence[str]
  ) -> None:
    """Copies the chosen ops' weights and step sizes from ``supernet`` (self is the SubNet)."""
    self.stem.inherit(supernet.stem, 0, 0)
    for l, choice in enumerate(choices):
      o = op_names.index(choice.op)
      src_op = supernet.layers[l][supernet.op_index[l].index(o)]
      (dst_op,) = self.layers[l]
      for dst, src in zip(dst_op.convs, src_op.convs, strict=True):
        dst.inherit(src, src.w_bits.index(choice.w_bits), src.a_bits.index(choice.a_bits))
    self.pool.a_steps[...] = supernet.pool.a_steps[...]
    for name in ("kernel", "bias", "w_steps", "a_steps"):
      getattr(self.head, name)[...] = getattr(supernet.head, name)[...]

  def quantized_layers(self, op_names: Sequence[str]) -> list[tuple[str, nnx.Module]]:
    """The SubNet's quantized modules in execution order, named: QConv…, QAvgPool, QDense."""
    named = [("stem", self.stem)]
    for l, (ops, idx) in enumerate(zip(self.layers, self.op_index, strict=True)):
      (op,), (o,) = ops, idx
      for conv in op.convs:
        named.append((f"layer{l}.{op_names[o]}.{conv.name}", conv))
    return [*named, ("pool", self.pool), ("head.fc", self.head)]
