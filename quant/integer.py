"""Integer conversion of learned quantizers: codes, scales and int4 packing (numpy only).

The codes here are exactly what the fake quantizers in :mod:`quant.lsq` compute before they
multiply by the step: ``clip(round_half_even(x / s), Q_n, Q_p)``.
"""

import numpy as np

from quant.lsq import act_qrange, weight_qrange


def weight_codes(w: np.ndarray, step: np.ndarray, bits: int) -> np.ndarray:
  """Per-output-channel signed codes of a kernel (output channels last), dtype int8."""
  if bits > 8:
    raise ValueError(f"weight codes of {bits} bits do not fit int8")
  qn, qp = weight_qrange(bits)
  q = np.round(np.asarray(w, np.float32) / np.asarray(step, np.float32))
  return np.clip(q, qn, qp).astype(np.int8)


def act_codes(x: np.ndarray, step: float, bits: int) -> np.ndarray:
  """Unsigned activation codes, dtype uint8 (an 8-bit container for any bits ≤ 8)."""
  if bits > 8:
    raise ValueError(f"activation codes of {bits} bits do not fit uint8")
  qn, qp = act_qrange(bits)
  q = np.round(np.asarray(x, np.float32) / np.float32(step))
  return np.clip(q, qn, qp).astype(np.uint8)


def pack_int4(codes: np.ndarray) -> np.ndarray:
  """Packs signed 4-bit codes two per byte, low nibble first (ONNX and TFLite INT4 order).

  Args:
    codes: integer array with values in [−8, 7], any shape; flattened in C order.

  Returns:
    ``(ceil(n/2),)`` uint8; an odd count is padded with a zero high nibble.
  """
  flat = np.asarray(codes).reshape(-1).astype(np.int16)
  if flat.size and (flat.min() < -8 or flat.max() > 7):
    raise ValueError("int4 codes must lie in [-8, 7]")
  nibbles = (flat & 0xF).astype(np.uint8)
  if nibbles.size % 2:
    nibbles = np.append(nibbles, np.uint8(0))
  return (nibbles[0::2] | (nibbles[1::2] << 4)).astype(np.uint8)


def unpack_int4(packed: np.ndarray, count: int) -> np.ndarray:
  """Inverse of :func:`pack_int4`: the first ``count`` signed codes as int8."""
  packed = np.asarray(packed, np.uint8).reshape(-1)
  if count > 2 * packed.size:
    raise ValueError(
      f"{packed.size} packed bytes hold at most {2 * packed.size} codes, not {count}"
    )
  nibbles = np.empty(packed.size * 2, np.uint8)
  nibbles[0::2] = packed & 0xF
  nibbles[1::2] = packed >> 4
  signed = nibbles.astype(np.int8)
  signed[signed > 7] -= 16
  return signed[:count]
