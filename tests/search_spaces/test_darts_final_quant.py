"""The DARTS final network holds every tensor between ops on a grid, as an integer runtime does:
signed 8-bit cell states, pools on their input's grid, BN folded with its bias on the int32
accumulator grid in evaluation mode."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from search_spaces.darts_final import StateQuant, avg_pool_on_grid, build_final
from search_spaces.darts_genotype import Genotype
from search_spaces.darts_ops import BatchNorm

NORMAL = (("sep_conv_3x3", 0, 4, 4), ("avg_pool_3x3", 1, None, None))
NORMAL += (("dil_conv_3x3", 2, 2, 8), ("max_pool_3x3", 0, None, None))
REDUCE = (("skip_connect", 0, 8, 8), ("avg_pool_3x3", 1, None, None))
REDUCE += (("skip_connect", 2, None, None), ("dil_conv_5x5", 1, 8, 4))
GENOTYPE = Genotype(NORMAL, (2, 3), REDUCE, (2, 3))


def _on_grid(x: np.ndarray, step: float, lo: int, hi: int) -> bool:
  codes = np.asarray(x, np.float64) / float(step)
  return (
    np.allclose(codes, np.round(codes), atol=1e-3)
    and codes.min() >= lo - 1e-3
    and (codes.max() <= hi + 1e-3)
  )


def test_state_quant_is_signed_8_bit_lsq():
  q = StateQuant()
  x = jnp.linspace(-3.0, 3.0, 64).reshape(1, 4, 4, 4)
  y = q(x, calibrate=True)
  step = float(q.step[...])
  assert step == pytest.approx(2 * float(jnp.abs(x).mean()) / np.sqrt(127), rel=1e-6)
  expected = step * np.clip(np.round(np.asarray(x) / step), -128, 127)
  np.testing.assert_allclose(y, expected, rtol=0, atol=1e-6)
  assert float(y.min()) < 0  # signed: negative states survive


@pytest.mark.parametrize("stride", [1, 2])
def test_avg_pool_on_grid_is_tflites_integer_average(stride):
  rng = np.random.default_rng(0)
  step = 0.25
  codes = rng.integers(-128, 128, (2, 6, 6, 3)).astype(np.float32)
  y = np.asarray(avg_pool_on_grid(jnp.asarray(codes * step), jnp.float32(step), stride)) / step
  for n, i, j, c in np.ndindex(*y.shape):
    rows = range(max(i * stride - 1, 0), min(i * stride + 2, 6))
    cols = range(max(j * stride - 1, 0), min(j * stride + 2, 6))
    total = int(sum(codes[n, r, k, c] for r in rows for k in cols))
    count = len(rows) * len(cols)  # real pixels only
    half = count // 2
    expected = (total + half) // count if total > 0 else -((-total + half) // count)
    assert y[n, i, j, c] == expected, (n, i, j, c, total, count)


def test_eval_batch_norm_is_folded_with_its_bias_on_the_accumulator_grid():
  bn = BatchNorm((3,), affine=True, running=True)
  bn.mean[...] = jnp.array([0.3, -0.2, 0.1])
  bn.var[...] = jnp.array([0.5, 2.0, 0.05])
  bn.scale[...] = jnp.array([1.5, -0.7, 0.2])
  bn.bias[...] = jnp.array([0.11, 0.37, -0.05])
  bn.use_running_average = True
  x = jax.random.normal(jax.random.key(0), (2, 4, 4, 3))
  plain = (x - bn.mean[...]) / jnp.sqrt(bn.var[...] + 1e-5) * bn.scale[...] + bn.bias[...]
  np.testing.assert_allclose(bn(x), plain, rtol=1e-5, atol=1e-6)
  acc_step = jnp.array([0.01, 0.02, 0.04])
  f = bn.scale[...] / jnp.sqrt(bn.var[...] + 1e-5)
  bias = np.asarray(bn(jnp.zeros((1, 1, 1, 3)), acc_step)).reshape(3)
  grid = np.asarray(acc_step * jnp.abs(f))
  np.testing.assert_allclose(bias / grid, np.round(bias / grid), rtol=0, atol=1e-4)
  assert not np.allclose(bias, np.asarray(bn.bias[...] - bn.mean[...] * f))  # it was rounded


@pytest.fixture(scope="module")
def final_net():
  net = build_final(GENOTYPE, (8, 8, 3), 10, nnx.Rngs(0), cells=3, init_channels=4)
  x = jax.random.uniform(jax.random.key(1), (16, 8, 8, 3))
  net.calibrate(x)
  nnx.jit(lambda m, x: m(x))(net, x)  # one training step's running statistics
  net.eval()
  return net, x


def test_every_cell_state_is_on_a_signed_8_bit_grid(final_net):
  net, x = final_net

  @nnx.jit
  def states(net, x):
    s0 = s1 = net.stem_out(net.stem(x))
    out = [s1]
    for cell in net.cells:
      s0, s1 = s1, cell(s0, s1)
      out.append(s1)
    return out

  got = states(net, x)
  steps = [net.stem_out.step[...]] + [cell.node_out.step[...] for cell in net.cells]
  for i, (s, step) in enumerate(zip(got, steps, strict=True)):
    assert _on_grid(s, step, -128, 127), f"state {i} is not on its grid"
    assert float(jnp.min(s)) < 0, f"state {i}: the states are signed"


def test_op_outputs_have_their_own_quantizers(final_net):
  net, _ = final_net
  ops = [op for cell in net.cells for op in cell.ops]
  with_convs = [op for op in ops if op.module is not None]
  assert with_convs and all(isinstance(op.out, StateQuant) for op in with_convs)
  assert all(op.out is None for op in ops if op.module is None)  # pools, identity: input grid
