"""quant imports one way: no sibling package (hwcost, search_spaces, qdarts)."""

import subprocess
import sys

import jax.numpy as jnp
from flax import nnx

import quant


def test_import_pulls_in_no_siblings():
  code = (
    "import sys, quant\n"
    "bad = [m for m in ('hwcost', 'search_spaces', 'qdarts') if m in sys.modules]\n"
    "print(','.join(bad))\n"
  )
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == ""


def test_public_names():
  assert sorted(quant.__all__) == sorted(
    [
      "QScale", "act_codes", "act_qrange", "expected_bits", "init_act_step", "init_weight_step",
      "lsq_quantize", "mix_activation", "mix_weight", "pack_int4", "quantize_activation",
      "quantize_weight", "round_ste", "scale_grad", "unpack_int4", "weight_codes",
      "weight_qrange",
    ]
  )  # fmt: skip
  assert all(hasattr(quant, name) for name in quant.__all__)


def test_qscale_is_a_param():
  assert issubclass(quant.QScale, nnx.Param)
  scale = quant.QScale(jnp.ones((4,), jnp.float32))
  assert isinstance(scale, nnx.Param)
  assert scale[...].shape == (4,)
