"""Bit-width mixing: the expectation of a quantized layer under a distribution over bits.

A convolution is bilinear, and the weight-bit and activation-bit samples are independent, so

.. math::
  \\mathbb{E}[\\operatorname{conv}(Q_{b_a}(x), Q_{b_w}(W))]
  = \\operatorname{conv}(\\textstyle\\sum_{b} r_b Q_b(x), \\sum_{b} q_b Q_b(W))

costs one convolution per op instead of one per bit pair (∇QDARTS; EdMIPS mixes the same way).
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from quant.lsq import quantize_activation, quantize_weight


def mix_weight(w: jax.Array, steps: jax.Array, probs: jax.Array, bits: Sequence[int]) -> jax.Array:
  """W̃ = Σ_b q_b · Q_b(W).

  Args:
    w: kernel, output channels last.
    steps: ``(Bw, cout)`` one step vector per candidate bit-width.
    probs: ``(Bw,)`` probabilities q_b (one-hot for a fixed SubNet).
    bits: the ``Bw`` candidate bit-widths, static.
  """
  if len(bits) == 1:
    return probs[0] * quantize_weight(w, steps[0], bits[0])
  return sum(probs[i] * quantize_weight(w, steps[i], b) for i, b in enumerate(bits))


def mix_activation(
  x: jax.Array, steps: jax.Array, probs: jax.Array, bits: Sequence[int]
) -> jax.Array:
  """x̃ = Σ_b r_b · Q_b(x).

  Args:
    x: ``(batch, ...)`` non-negative activations.
    steps: ``(Ba,)`` one step per candidate bit-width.
    probs: ``(Ba,)`` probabilities r_b.
    bits: the ``Ba`` candidate bit-widths, static.
  """
  if len(bits) == 1:
    return probs[0] * quantize_activation(x, steps[0], bits[0])
  return sum(probs[i] * quantize_activation(x, steps[i], b) for i, b in enumerate(bits))


def expected_bits(probs: jax.Array, bits: Sequence[int]) -> jax.Array:
  """Σ_b p_b·b over the last axis: the mean bit-width, for logging."""
  return jnp.tensordot(probs, jnp.asarray(bits, probs.dtype), axes=1)
