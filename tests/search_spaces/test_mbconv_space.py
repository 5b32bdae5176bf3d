"""The mbconv chain space: shapes, masks, block layers, inheritance, and the chain-export rule."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from qdarts.export import reference_forward
from qdarts.export.from_subnet import chain_from_subnet
from quant import quantize_activation
from search_spaces import Choice, MBConvOp, MBConvSpace, Probs
from search_spaces.chain_net import ResidualAdd

OPS = ("mb3x3_e1", "mb3x3_e3", "mb5x5_e1", "mb5x5_e3", "skip")
W_BITS, A_BITS = (2, 4, 8), (4, 8)


@pytest.fixture(scope="module")
def space():
  # stage0: 4→4 stride 1, two blocks; stage1: 4→8 stride 2, then 8→8
  return MBConvSpace(
    (8, 8, 1),
    10,
    stem_channels=4,
    channels=(4, 8),
    strides=(1, 2),
    repeats=(2, 2),
    kernels=(3, 5),
    expansions=(1, 3),
    head_channels=6,
  )


@pytest.fixture(scope="module")
def calibrated_supernet(space):
  net = space.build(W_BITS, A_BITS, nnx.Rngs(0))
  net.calibrate(jax.random.uniform(jax.random.key(0), (8, 8, 8, 1)))
  return net


def test_names_and_skip_only_where_the_shape_is_unchanged(space):
  assert space.name == "mbconv"
  assert space.op_names == OPS
  assert space.choice_names == ("stage0.block0", "stage0.block1", "stage1.block0", "stage1.block1")
  assert space.op_mask() == [[True] * 5, [True] * 5, [True] * 4 + [False], [True] * 5]
  no_skip = MBConvSpace(
    (8, 8, 1), 10, stem_channels=4, channels=(8,), strides=(1,), repeats=(1,), allow_skip=False
  )
  assert no_skip.op_names == tuple(f"mb{k}x{k}_e{e}" for k in (3, 5, 7) for e in (1, 3, 6))


def test_candidate_layers_of_an_inverted_residual_block(space):
  net = space.build((8,), (8,), nnx.Rngs(0))
  table = space.candidate_layers(net)
  expand, dw, project = table[2][OPS.index("mb5x5_e3")]  # stage1.block0: 4→8, stride 2
  assert (expand.kernel, expand.cin, expand.cout, expand.groups, expand.stride) == (1, 4, 12, 1, 1)
  assert (dw.kernel, dw.cin, dw.cout, dw.groups, dw.stride) == (5, 12, 12, 12, 2)
  assert (dw.in_hw, dw.out_hw) == ((8, 8), (4, 4))
  assert (project.kernel, project.cin, project.cout, project.groups) == (1, 12, 8, 1)
  assert project.in_hw == (4, 4)
  assert expand.name == "stage1.block0.mb5x5_e3.expand1x1"
  dw1, project1 = table[2][OPS.index("mb3x3_e1")]  # e = 1: no expand conv
  assert (dw1.kernel, dw1.cin, dw1.groups, dw1.stride, project1.cout) == (3, 4, 4, 2, 8)
  assert table[2][OPS.index("skip")] is None and table[0][OPS.index("skip")] == []
  stem, head_conv, fc = space.fixed_layers(net)
  assert (stem.cin, stem.cout, stem.kernel) == (1, 4, 3)
  assert (head_conv.kernel, head_conv.cin, head_conv.cout, head_conv.in_hw) == (1, 8, 6, (4, 4))
  assert (fc.op, fc.cin, fc.cout) == ("linear", 6, 10)


def test_block_convs_and_residual_flag(space):
  net = space.build((8,), (8,), nnx.Rngs(0))
  residual_block = net.layers[0][OPS.index("mb3x3_e3")]
  strided_block = net.layers[2][OPS.index("mb3x3_e3")]
  assert isinstance(residual_block, MBConvOp)
  assert residual_block.residual and not strided_block.residual
  assert [c.relu for c in residual_block.convs] == [True, True, False]  # linear projection
  x = jax.random.uniform(jax.random.key(1), (2, 8, 8, 4))
  one = jnp.ones((1,))
  body = x
  for conv in residual_block.convs:
    body = conv(body, one, one)
  # the skip adds the block input as the first conv quantizes it (what an integer runtime holds)
  first = residual_block.convs[0]
  skip = quantize_activation(x, first.a_steps[0], 8)
  assert not np.allclose(skip, x)  # the test would not tell the two apart otherwise
  np.testing.assert_allclose(residual_block(x, one, one), skip + body, rtol=1e-6, atol=1e-6)


def _one_hot_probs(choices, op_names, n_ops):
  op = np.zeros((len(choices), n_ops), np.float32)
  w = np.zeros((len(choices), n_ops, len(W_BITS)), np.float32)
  a = np.zeros((len(choices), n_ops, len(A_BITS)), np.float32)
  for l, c in enumerate(choices):
    o = op_names.index(c.op)
    op[l, o], w[l, o, W_BITS.index(c.w_bits)], a[l, o, A_BITS.index(c.a_bits)] = 1, 1, 1
  return Probs(jnp.asarray(op), jnp.asarray(w), jnp.asarray(a))


def test_subnet_inherits_the_supernet_function(space, calibrated_supernet):
  """A SubNet equals the supernet run with one-hot probabilities on its choices."""
  choices = [
    Choice("mb3x3_e3", 4, 8),  # residual
    Choice("skip", 8, 8),
    Choice("mb5x5_e1", 2, 4),
    Choice("mb3x3_e3", 8, 4),  # residual
  ]
  subnet = space.build(W_BITS, A_BITS, nnx.Rngs(1), choices)
  x = jax.random.uniform(jax.random.key(2), (4, 8, 8, 1))
  before = np.asarray(subnet(x))
  subnet.inherit(calibrated_supernet, choices, space.op_names)
  expected = calibrated_supernet(x, _one_hot_probs(choices, space.op_names, len(OPS)))
  got = subnet(x)
  assert got.shape == (4, 10)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
  assert not np.allclose(before, expected, atol=1e-3)  # inheritance changed the function


def test_supernet_mixture_is_finite(space, calibrated_supernet):
  n = len(space.choice_names)
  probs = Probs(
    op=jnp.asarray(np.where(space.op_mask(), 0.2, 0.0), jnp.float32),
    w=jnp.full((n, len(OPS), len(W_BITS)), 1 / 3),
    a=jnp.full((n, len(OPS), len(A_BITS)), 0.5),
  )
  out = calibrated_supernet(jax.random.uniform(jax.random.key(3), (3, 8, 8, 1)), probs)
  assert out.shape == (3, 10) and np.isfinite(np.asarray(out)).all()


def test_a_residual_subnet_lists_its_add_after_the_block(space):
  choices = [Choice("skip", 8, 8), Choice("mb3x3_e3", 4, 4), Choice("mb3x3_e1", 4, 4)] + [
    Choice("skip", 8, 8)
  ]
  subnet = space.build(W_BITS, A_BITS, nnx.Rngs(0), choices)
  named = dict(subnet.quantized_layers(space.op_names))
  add = named["stage0.block1.mb3x3_e3.add"]
  assert isinstance(add, ResidualAdd) and add.skip == "stage0.block1.mb3x3_e3.expand1x1"
  names = list(named)
  assert (
    names.index("stage0.block1.mb3x3_e3.add")
    == names.index("stage0.block1.mb3x3_e3.project1x1") + 1
  )


def test_a_subnet_without_residual_exports_as_a_chain(space):
  choices = [Choice("skip", 8, 8), Choice("skip", 8, 8), Choice("mb3x3_e3", 4, 8)] + [
    Choice("skip", 8, 8)
  ]
  subnet = space.build(W_BITS, A_BITS, nnx.Rngs(0), choices)
  x = jax.random.uniform(jax.random.key(4), (16, 8, 8, 1))
  subnet.calibrate(x)
  named = subnet.quantized_layers(space.op_names)
  assert [n for n, _ in named] == [
    "stem",
    "stage1.block0.mb3x3_e3.expand1x1",
    "stage1.block0.mb3x3_e3.dw3x3",
    "stage1.block0.mb3x3_e3.project1x1",
    "head.conv1x1",
    "pool",
    "head.fc",
  ]
  chain = chain_from_subnet(named, (8, 8, 1), 10, {})
  assert [getattr(layer, "relu", None) for layer in chain.layers[1:4]] == [True, True, False]
  ref = reference_forward(chain, np.asarray(x), int32_bias=True)
  np.testing.assert_allclose(subnet(x), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


@pytest.mark.parametrize(
  ("kwargs", "message"),
  [
    ({"strides": (1, 3)}, "strides: every entry must be 1 or 2, got 3"),
    ({"repeats": (1,)}, "one entry per stage"),
    ({"kernels": (3, 4)}, "kernels: every entry must be odd and positive, got 4"),
    ({"expansions": (3, 3)}, "expansions: expected a non-empty list without repeats"),
    ({"channels": (4, 0)}, "channels: every entry must be positive, got 0"),
  ],
)
def test_bad_arguments_name_the_argument(kwargs, message):
  args = {"stem_channels": 4, "channels": (4, 8), "strides": (1, 2), "repeats": (1, 1)}
  with pytest.raises(ValueError, match=message):
    MBConvSpace((8, 8, 1), 10, **{**args, **kwargs})
