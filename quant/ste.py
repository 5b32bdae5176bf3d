"""Straight-through estimators."""

import jax
import jax.numpy as jnp


def round_ste(x: jax.Array) -> jax.Array:
  """Rounds half to even in the forward pass; identity gradient in the backward pass.

  .. math:: \\operatorname{round}_{ste}(x) = x + \\operatorname{sg}(\\operatorname{round}(x) - x)

  ``jnp.round`` rounds half to even, as ONNX ``QuantizeLinear`` does, so fake-quantized values
  and exported integer codes agree on ties.
  """
  return x + jax.lax.stop_gradient(jnp.round(x) - x)


def scale_grad(x: jax.Array, scale: float | jax.Array) -> jax.Array:
  """Returns ``x`` bit-exactly, with its gradient multiplied by ``scale`` (LSQ's g).

  Written as sg(x) + (x·g − sg(x·g)) rather than x·g + sg(x − x·g): the latter can be one
  float32 ulp off ``x``, and then a fake quantizer rounds a tie the other way from the
  exported codes.
  """
  scaled = x * scale
  return jax.lax.stop_gradient(x) + (scaled - jax.lax.stop_gradient(scaled))
