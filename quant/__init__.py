"""Fake quantization with learnable step sizes, bit-width mixing and integer conversion.

Knows nothing of the sibling packages (search_spaces, hwcost, qdarts).
"""

from quant.integer import act_codes, pack_int4, unpack_int4, weight_codes
from quant.lsq import (
  act_qrange,
  init_act_step,
  init_weight_step,
  lsq_quantize,
  quantize_activation,
  quantize_weight,
  weight_qrange,
)
from quant.mixing import expected_bits, mix_activation, mix_weight
from quant.params import QScale
from quant.ste import round_ste, scale_grad

__all__ = [
  "QScale",
  "act_codes",
  "act_qrange",
  "expected_bits",
  "init_act_step",
  "init_weight_step",
  "lsq_quantize",
  "mix_activation",
  "mix_weight",
  "pack_int4",
  "quantize_activation",
  "quantize_weight",
  "round_ste",
  "scale_grad",
  "unpack_int4",
  "weight_codes",
  "weight_qrange",
]
