"""Candidate ops of chain spaces, built from the quantized primitives in ``ops``.

Every candidate maps ``(N, H, W, cin)`` to ``(N, ceil(H/s), ceil(W/s), cout)`` and exposes
``convs``: its quantized convolutions in execution order (for costing and export). All convs
inside one op share the op's weight-bit and activation-bit choice (∇QDARTS, EdMIPS). An op
with ``residual = True`` adds its input to the output of its last conv (:func:`has_residual`);
the others are plain chains of their convs.

Names known to the chain builders (:func:`build_chain_op`): the fixed ``CANDIDATE_OPS`` and
the inverted-residual family ``mb{k}x{k}_e{e}`` (:class:`MBConvOp`, odd k, expansion e ≥ 1).
"""

import re
from collections.abc import Callable, Sequence

import jax
from flax import nnx

from quant import mix_activation
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


class MBConvOp(nnx.Module):
  """Inverted residual block (MobileNetV2, as searched by FBNet and ProxylessNAS).

  1×1 expand to ``e·cin`` + ReLU (omitted when ``e == 1``), k×k depthwise (stride s) + ReLU,
  1×1 project to ``cout`` without ReLU, and ``y = Q(x) + project(…)`` when ``residual``
  (stride 1 and ``cin == cout``), Q(x) being the block input as the first conv quantizes it
  (:meth:`skip`).

  .. note:: Every quantized layer here quantizes its input with an *unsigned* quantizer, so
    the negative part of the linear bottleneck (and of the residual sum) is cut to 0 where the
    next layer reads it; MobileNetV2 keeps it signed.
  """

  def __init__(
    self,
    cin,
    cout,
    stride,
    in_hw,
    w_bits,
    a_bits,
    *,
    kernel: int,
    expansion: int,
    rngs: nnx.Rngs,
  ):
    hidden = cin * expansion
    convs = []
    if expansion != 1:
      convs.append(QConv(cin, hidden, 1, 1, in_hw, w_bits, a_bits, rngs=rngs, name="expand1x1"))
    dw = QConv(
      hidden,
      hidden,
      kernel,
      stride,
      in_hw,
      w_bits,
      a_bits,
      rngs=rngs,
      groups=hidden,
      name=f"dw{kernel}x{kernel}",
    )
    project = QConv(
      hidden, cout, 1, 1, dw.out_hw, w_bits, a_bits, rngs=rngs, relu=False, name="project1x1"
    )
    self.convs = nnx.List([*convs, dw, project])
    self.residual = stride == 1 and cin == cout  # static: the exporter looks for it

  def __call__(self, x: jax.Array, w_probs: jax.Array, a_probs: jax.Array) -> jax.Array:
    """``x``: ``(N, H, W, cin)`` → ``(N, ceil(H/s), ceil(W/s), cout)``."""
    h = x
    for conv in self.convs:
      h = conv(h, w_probs, a_probs)
    return self.skip(x, a_probs) + h if self.residual else h

  def skip(self, x: jax.Array, a_probs: jax.Array) -> jax.Array:
    """What the residual add adds: the block input as the first conv quantizes it.

    A deployed model holds the block input only as those activation codes (an integer runtime
    has no float copy of it), so training adds the same quantized tensor, not the float ``x``:
    the fake-quant model and the exported one then compute the same sum.
    """
    first = self.convs[0]
    return mix_activation(x, first.a_steps[...], a_probs, first.a_bits)


_MBCONV_NAME = re.compile(r"mb(\d+)x(\d+)_e(\d+)")


def mbconv_name(kernel: int, expansion: int) -> str:
  """The candidate name of an inverted residual block: ``mb{k}x{k}_e{e}``."""
  return f"mb{kernel}x{kernel}_e{expansion}"


def parse_mbconv_name(op: str) -> tuple[int, int] | None:
  """``(kernel, expansion)`` of a valid ``mb{k}x{k}_e{e}`` name (odd k ≥ 1, e ≥ 1), else None."""
  match = _MBCONV_NAME.fullmatch(op)
  if match is None:
    return None
  kh, kw, expansion = (int(g) for g in match.groups())
  if kh != kw or kh % 2 == 0 or expansion < 1 or op != mbconv_name(kh, expansion):
    return None  # the last test rejects leading zeros ("mb03x03_e3")
  return kh, expansion


def is_chain_op(op: str) -> bool:
  """Whether :func:`build_chain_op` can build ``op``."""
  return op in CANDIDATE_OPS or parse_mbconv_name(op) is not None


def has_residual(op: nnx.Module) -> bool:
  """Whether a built candidate adds its input to its output (a graph that is not a chain)."""
  return bool(getattr(op, "residual", False))


def build_chain_op(
  op: str,
  cin: int,
  cout: int,
  stride: int,
  in_hw: tuple[int, int],
  w_bits: Sequence[int],
  a_bits: Sequence[int],
  rngs: nnx.Rngs,
) -> nnx.Module:
  """Builds any op :func:`is_chain_op` accepts (``CANDIDATE_OPS`` or ``mb{k}x{k}_e{e}``)."""
  parsed = parse_mbconv_name(op)
  if parsed is None:
    return build_op(op, cin, cout, stride, in_hw, w_bits, a_bits, rngs)
  kernel, expansion = parsed
  return MBConvOp(
    cin,
    cout,
    stride,
    tuple(in_hw),
    tuple(w_bits),
    tuple(a_bits),
    kernel=kernel,
    expansion=expansion,
    rngs=rngs,
  )
