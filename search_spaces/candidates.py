"""Candidate ops of chain spaces, built from the quantized primitives in ``ops``.

Every candidate maps ``(N, H, W, cin)`` to ``(N, ceil(H/s), ceil(W/s), cout)`` and exposes
``convs``: its quantized convolutions in execution order (for costing and export). All convs
inside one op share the op's weight-bit and activation-bit choice (∇QDARTS, EdMIPS).
"""

from collections.abc import Callable, Sequence

import jax
from flax import nnx

from search_spaces.ops import QConv


class ConvOp(nnx.Module):
  """One k×k convolution + ReLU."""

  def __init__(self, cin, cout, stride, in_hw, w_bits, a_bits, *, kernel: int, rngs: nnx.Rngs):
    self.convs = nnx.List(
      [
        QConv(
          cin, cout, kernel, stride, in_hw, w_bits, a_bits, rngs=rngs, name=f"conv{kernel}x{kernel}"
        )
      ]
    )

  def __call__(self, x: jax.Array, w_probs: jax.Array, a_probs: jax.Array) -> jax.Array:
    for conv in self.convs:
      x = conv(x, w_probs, a_probs)
    return x


class SepConvOp(ConvOp):
  """Depthwise k×k (stride s) + ReLU, then pointwise 1×1 + ReLU (MobileNet-style)."""

  def __init__(self, cin, cout, stride, in_hw, w_bits, a_bits, *, kernel: int, rngs: nnx.Rngs):
    dw = QConv(
      cin,
      cin,
      kernel,
      stride,
      in_hw,
      w_bits,
      a_bits,
      rngs=rngs,
      groups=cin,
      name=f"dw{kernel}x{kernel}",
    )
    pw = QConv(cin, cout, 1, 1, dw.out_hw, w_bits, a_bits, rngs=rngs, name="pw1x1")
    self.convs = nnx.List([dw, pw])


class SkipOp(nnx.Module):
  """Identity; only a candidate where the shape does not change. Computes nothing."""

  def __init__(self):
    self.convs = nnx.List([])

  def __call__(self, x: jax.Array, w_probs: jax.Array, a_probs: jax.Array) -> jax.Array:
    del w_probs, a_probs
    return x


OpBuilder = Callable[..., nnx.Module]

CANDIDATE_OPS: dict[str, OpBuilder] = {
  "conv3x3": lambda *a, rngs: ConvOp(*a, kernel=3, rngs=rngs),
  "conv5x5": lambda *a, rngs: ConvOp(*a, kernel=5, rngs=rngs),
  "dwsep3x3": lambda *a, rngs: SepConvOp(*a, kernel=3, rngs=rngs),
  "dwsep5x5": lambda *a, rngs: SepConvOp(*a, kernel=5, rngs=rngs),
  "skip": lambda *a, rngs: SkipOp(),
}


def op_fits(op: str, cin: int, cout: int, stride: int) -> bool:
  """Whether candidate ``op`` can sit at a choice point of this shape."""
  return op != "skip" or (cin == cout and stride == 1)


def build_op(
  op: str,
  cin: int,
  cout: int,
  stride: int,
  in_hw: tuple[int, int],
  w_bits: Sequence[int],
  a_bits: Sequence[int],
  rngs: nnx.Rngs,
) -> nnx.Module:
  return CANDIDATE_OPS[op](cin, cout, stride, in_hw, tuple(w_bits), tuple(a_bits), rngs=rngs)
