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
  """Returns ``x`` unchanged, with its gradient multiplied by ``scale`` (LSQ's g)."""
  return x * scale + jax.lax.stop_gradient(x - x * scale)
