"""Quantizable primitives that candidate ops are built from.

Every primitive quantizes its *input* with an unsigned LSQ quantizer and its kernel with a
per-output-channel LSQ quantizer, each mixed over candidate bit-widths (``quant.mixing``).
A fixed SubNet uses the same modules with one candidate bit-width and probability 1, so the
search and the fine-tuning run one implementation.

Layout: activations NHWC, kernels HWIO (``(kh, kw, cin/groups, cout)``).
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hwcost import LayerSpec
from quant import (
  QScale,
  init_act_step,
  init_weight_step,
  mix_activation,
  mix_weight,
  round_ste,
)


def fixed_bias(
  bias: jax.Array, w_steps: jax.Array, a_steps: jax.Array, n_w: int, n_a: int
) -> jax.Array:
  """The bias as the integer model holds it, once the bits are fixed.

  A deployed layer adds an int32 bias on the accumulator's grid s_a·s_w[c], so a fixed SubNet
  trains with b̂ = s_a·s_w·round_ste(b / (s_a·s_w)); at 2-bit weights that grid is coarse
  enough to change predictions if ignored. The supernet, whose steps are mixtures, keeps the
  float bias.
  """
  if n_w != 1 or n_a != 1:
    return bias
  grid = a_steps[0] * w_steps[0]
  return round_ste(bias / grid) * grid


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """Explicit (low, high) padding of XLA's "SAME" rule: out = ceil(size / stride)."""
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


class QConv(nnx.Module):
  """Conv2D (+ bias, optional ReLU) with mixed-precision weights and input activations.

  Args:
    cin, cout: channels; ``groups == cin == cout`` is a depthwise conv.
    kernel, stride: square kernel size and stride; padding follows XLA's SAME rule.
    in_hw: spatial size of the input (fixed by the space; needed for padding and costing).
    w_bits, a_bits: candidate bit-widths (a 1-tuple for a fixed SubNet).
  """

  def __init__(
    self,
    cin: int,
    cout: int,
    kernel: int,
    stride: int,
    in_hw: tuple[int, int],
    w_bits: Sequence[int],
    a_bits: Sequence[int],
    *,
    rngs: nnx.Rngs,
    groups: int = 1,
    relu: bool = True,
    name: str = "conv",
  ):
    fan_in = kernel * kernel * (cin // groups)
    shape = (kernel, kernel, cin // groups, cout)
    kernel_init = jax.random.normal(rngs.params(), shape) * np.sqrt(2.0 / fan_in)
    self.kernel = nnx.Param(kernel_init)
    self.bias = nnx.Param(jnp.zeros((cout,)))
    self.w_bits, self.a_bits = tuple(w_bits), tuple(a_bits)
    self.w_steps = QScale(
      jnp.asarray(np.stack([init_weight_step(np.asarray(kernel_init), b) for b in self.w_bits]))
    )  # (Bw, cout)
    self.a_steps = QScale(jnp.ones((len(self.a_bits),)))  # (Ba,), set by calibrate()
    self.cin, self.cout, self.k, self.stride, self.groups = cin, cout, kernel, stride, groups
    self.in_hw, self.relu, self.name = tuple(in_hw), relu, name
    self.padding = tuple(same_padding(s, kernel, stride) for s in self.in_hw)

  @property
  def out_hw(self) -> tuple[int, int]:
    return tuple(-(-s // self.stride) for s in self.in_hw)

  def __call__(self, x: jax.Array, w_probs: jax.Array, a_probs: jax.Array) -> jax.Array:
    """``x``: ``(N, H, W, cin)``; ``w_probs``: ``(Bw,)``; ``a_probs``: ``(Ba,)``."""
    xq = mix_activation(x, self.a_steps[...], a_probs, self.a_bits)
    wq = mix_weight(self.kernel[...], self.w_steps[...], w_probs, self.w_bits)
    y = jax.lax.conv_general_dilated(
      xq,
      wq,
      (self.stride, self.stride),
      self.padding,
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=self.groups,
    )
    y = y + fixed_bias(
      self.bias[...], self.w_steps[...], self.a_steps[...], len(self.w_bits), len(self.a_bits)
    )
    return jax.nn.relu(y) if self.relu else y

  def calibrate(self, x: jax.Array) -> None:
    """Sets the LSQ initial activation steps from a batch of inputs (eager, at setup)."""
    self.a_steps[...] = jnp.asarray([init_act_step(np.asarray(x), b) for b in self.a_bits])

  def inherit(self, src: "QConv", w_index: int, a_index: int) -> None:
    """Copies ``src``'s parameters, keeping the step sizes of one bit-width pair."""
    self.kernel[...] = src.kernel[...]
    self.bias[...] = src.bias[...]
    self.w_steps[...] = src.w_steps[...][w_index : w_index + 1]
    self.a_steps[...] = src.a_steps[...][a_index : a_index + 1]

  def layer_spec(self, prefix: str) -> LayerSpec:
    return LayerSpec(
      name=f"{prefix}.{self.name}",
      op="conv",
      kernel=self.k,
      stride=self.stride,
      cin=self.cin,
      cout=self.cout,
      in_hw=self.in_hw,
      out_hw=self.out_hw,
      groups=self.groups,
    )


class QAvgPool(nnx.Module):
  """Global average pool of an ``a_bits`` quantized input: ``(N, H, W, C)`` → ``(N, C)``."""

  def __init__(self, a_bits: int = 8):
    self.a_bits = (a_bits,)
    self.a_steps = QScale(jnp.ones((1,)))

  def __call__(self, x: jax.Array) -> jax.Array:
    xq = mix_activation(x, self.a_steps[...], jnp.ones((1,)), self.a_bits)
    return xq.mean(axis=(1, 2))

  def calibrate(self, x: jax.Array) -> None:
    self.a_steps[...] = jnp.asarray([init_act_step(np.asarray(x), self.a_bits[0])])


class QDense(nnx.Module):
  """Fully connected classifier with fixed ``bits`` weights and input: ``(N, cin)`` → logits."""

  def __init__(self, cin: int, cout: int, *, rngs: nnx.Rngs, bits: int = 8):
    kernel_init = jax.random.normal(rngs.params(), (cin, cout)) * np.sqrt(1.0 / cin)
    self.kernel = nnx.Param(kernel_init)
    self.bias = nnx.Param(jnp.zeros((cout,)))
    self.bits = (bits,)
    self.w_steps = QScale(jnp.asarray(init_weight_step(np.asarray(kernel_init), bits)[None]))
    self.a_steps = QScale(jnp.ones((1,)))
    self.cin, self.cout = cin, cout

  def __call__(self, x: jax.Array) -> jax.Array:
    one = jnp.ones((1,))
    xq = mix_activation(x, self.a_steps[...], one, self.bits)
    wq = mix_weight(self.kernel[...], self.w_steps[...], one, self.bits)
    return xq @ wq + fixed_bias(self.bias[...], self.w_steps[...], self.a_steps[...], 1, 1)

  def calibrate(self, x: jax.Array) -> None:
    self.a_steps[...] = jnp.asarray([init_act_step(np.asarray(x), self.bits[0])])

  def layer_spec(self, name: str) -> LayerSpec:
    return LayerSpec(
      name=name,
      op="linear",
      kernel=1,
      stride=1,
      cin=self.cin,
      cout=self.cout,
      in_hw=(1, 1),
      out_hw=(1, 1),
    )
