"""LSQ fake quantization with learnable step sizes (Esser et al., 2020).

Weights are quantized symmetrically per output channel (signed, narrow range, zero point 0);
activations are quantized unsigned with one learnable step per quantizer (zero point 0), which
is the range of the post-ReLU tensors that every quantized layer in qdarts receives.

References:
  Esser et al., `Learned Step Size Quantization <https://arxiv.org/abs/1902.08153>`_, ICLR 2020.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from quant.ste import round_ste, scale_grad


def weight_qrange(bits: int) -> tuple[int, int]:
  """Signed narrow range (−Q_N, Q_P) = (−(2^(b−1)−1), 2^(b−1)−1); 2 bits is ternary.

  The narrow range keeps the grid symmetric (TFLite's int8 weight convention, −127..127) so
  that int4 codes fit −7..7 and int2 codes −1..1.
  """
  if bits < 2:
    raise ValueError(f"weight bits must be >= 2, got {bits}")
  qp = 2 ** (bits - 1) - 1
  return -qp, qp


def act_qrange(bits: int) -> tuple[int, int]:
  """Unsigned range (0, 2^b − 1) of a post-ReLU activation quantizer."""
  if bits < 1:
    raise ValueError(f"activation bits must be >= 1, got {bits}")
  return 0, 2**bits - 1


def lsq_quantize(x: jax.Array, step: jax.Array, qn: int, qp: int, grad_scale: float) -> jax.Array:
  """Fake-quantizes ``x`` on the grid ``step``·{qn..qp} with LSQ gradients.

  .. math::
    \\hat{x} = s \\cdot \\operatorname{round}(\\operatorname{clip}(x / s, Q_n, Q_p))

  With the straight-through round, ∂x̂/∂s = round(x/s) − x/s inside the range and Q_n or Q_p
  outside it; the step's gradient is further multiplied by ``grad_scale`` = 1/√(N·Q_P).

  Args:
    x: values, any shape.
    step: step sizes, broadcastable to ``x`` (a scalar, or ``(C,)`` over the last axis).
    qn, qp: integer range of the codes.
    grad_scale: LSQ's g; N is the number of elements that share one step.

  Returns:
    The fake-quantized values, shape and dtype of ``x``.
  """
  s = scale_grad(step, grad_scale)
  return round_ste(jnp.clip(x / s, qn, qp)) * s


def quantize_weight(w: jax.Array, step: jax.Array, bits: int) -> jax.Array:
  """Per-output-channel symmetric LSQ fake quantization of a kernel.

  Args:
    w: kernel with output channels last: ``(kh, kw, cin/groups, cout)`` (HWIO) or
      ``(cin, cout)``.
    step: ``(cout,)`` positive step sizes.
    bits: weight bit-width (static).
  """
  qn, qp = weight_qrange(bits)
  n = w.size // w.shape[-1]
  return lsq_quantize(w, step, qn, qp, 1.0 / math.sqrt(n * qp))


def quantize_activation(x: jax.Array, step: jax.Array, bits: int) -> jax.Array:
  """Unsigned LSQ fake quantization of an activation batch.

  Args:
    x: ``(batch, ...)`` non-negative activations (values below 0 are clipped to 0).
    step: scalar step size.
    bits: activation bit-width (static).
  """
  qn, qp = act_qrange(bits)
  n = max(1, x.size // x.shape[0])
  return lsq_quantize(x, step, qn, qp, 1.0 / math.sqrt(n * qp))


def init_weight_step(w: np.ndarray, bits: int) -> np.ndarray:
  """LSQ initial step per output channel: 2·mean|w| / √Q_P, shape ``(cout,)``."""
  _, qp = weight_qrange(bits)
  w = np.asarray(w, np.float32)
  mean_abs = np.abs(w.reshape(-1, w.shape[-1])).mean(axis=0)
  return np.maximum(2.0 * mean_abs / math.sqrt(qp), 1e-6).astype(np.float32)


def init_act_step(x: np.ndarray, bits: int) -> np.float32:
  """LSQ initial activation step: 2·mean|x| / √Q_P (a scalar)."""
  _, qp = act_qrange(bits)
  return np.float32(max(2.0 * float(np.abs(np.asarray(x)).mean()) / math.sqrt(qp), 1e-4))
