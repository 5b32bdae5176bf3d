"""Relaxed sampling of op and bit-width choices, and the temperature schedule.

Given logits z over K choices, a temperature τ and Gumbel noise g_k = −log(−log u_k):

* ``softmax``:     p = softmax(z)                      (the ∇QDARTS reference; τ unused)
* ``gumbel``:      p = softmax((z + g) / τ)            (Gumbel-softmax; the default)
* ``gumbel_hard``: p = onehot(argmax(z + g)) in the forward pass, with the gradient of
  ``gumbel`` in the backward pass (straight-through Gumbel-softmax).

References:
  Jang et al., `Categorical Reparameterization with Gumbel-Softmax
  <https://arxiv.org/abs/1611.01144>`_, ICLR 2017.
"""

import math
from typing import Literal

import jax
import jax.numpy as jnp

from search_spaces import Probs

Sampler = Literal["softmax", "gumbel", "gumbel_hard"]
MASKED_LOGIT = -1e9  # finite, so gradients through masked entries stay 0, never NaN


def relax(logits: jax.Array, key: jax.Array, tau: jax.Array, sampler: Sampler) -> jax.Array:
  """Relaxed one-hot samples over the last axis; same shape as ``logits``."""
  if sampler == "softmax":
    return jax.nn.softmax(logits, axis=-1)
  soft = jax.nn.softmax((logits + jax.random.gumbel(key, logits.shape)) / tau, axis=-1)
  if sampler == "gumbel":
    return soft
  hard = jax.nn.one_hot(jnp.argmax(soft, axis=-1), logits.shape[-1], dtype=soft.dtype)
  return _straight_through(hard, soft)


@jax.custom_vjp
def _straight_through(hard: jax.Array, soft: jax.Array) -> jax.Array:
  """Exactly ``hard`` in the forward pass (not ``hard + soft − sg(soft)``, which leaves
  0.99999994 where 1 is meant); the gradient goes to ``soft`` unchanged."""
  return hard


def _straight_through_fwd(hard, soft):
  return hard, None


def _straight_through_bwd(_, g):
  return jnp.zeros_like(g), g


_straight_through.defvjp(_straight_through_fwd, _straight_through_bwd)


def sample_probs(arch: dict, key: jax.Array, tau: jax.Array, sampler: Sampler) -> Probs:
  """Samples op, weight-bit and activation-bit probabilities from the logits in ``arch``.

  Args:
    arch: ``{"op": (L, O), "w": (L, O, Bw), "a": (L, O, Ba)}`` masked logits.
    key: PRNG key of this step.
    tau: scalar float32 temperature (traced: a new value does not recompile).
    sampler: one of ``softmax``, ``gumbel``, ``gumbel_hard``.
  """
  k_op, k_w, k_a = jax.random.split(key, 3)
  return Probs(
    op=relax(arch["op"], k_op, tau, sampler),
    w=relax(arch["w"], k_w, tau, sampler),
    a=relax(arch["a"], k_a, tau, sampler),
  )


def expected_probs(arch: dict) -> Probs:
  """The categorical distributions themselves, softmax of each logit group (no noise)."""
  return Probs(*(jax.nn.softmax(arch[k], axis=-1) for k in ("op", "w", "a")))


def temperature(
  epoch: float, warmup_epochs: int, epochs: int, tau_start: float, tau_end: float
) -> float:
  """Exponential decay τ_start → τ_end over the architecture epochs (constant in warm-up)."""
  span = max(epochs - warmup_epochs, 1)
  frac = min(max((epoch - warmup_epochs) / span, 0.0), 1.0)
  return tau_start * math.exp(frac * math.log(tau_end / tau_start))
