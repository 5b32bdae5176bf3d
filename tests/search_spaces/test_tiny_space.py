"""The tiny chain space: shapes, candidate masks, costing specs, inheritance, export order."""

import jax
import numpy as np
import pytest
from flax import nnx

from search_spaces import Choice, QAvgPool, QConv, QDense, TinySpace, same_padding
from search_spaces.base import Probs

OPS = ("conv3x3", "conv5x5", "dwsep3x3", "skip")


@pytest.fixture(scope="module")
def space():
  return TinySpace((8, 8, 1), 10, 4, (4, 8, 8), (1, 2, 1), OPS)


def test_same_padding_matches_xla():
  for size, k, s in [(8, 3, 1), (8, 3, 2), (8, 5, 2), (7, 3, 2), (4, 1, 1)]:
    lo, hi = same_padding(size, k, s)
    x = jax.numpy.ones((1, size, size, 1))
    w = jax.numpy.ones((k, k, 1, 1))
    ref = jax.lax.conv_general_dilated(
      x, w, (s, s), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    got = jax.lax.conv_general_dilated(
      x, w, (s, s), ((lo, hi), (lo, hi)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    np.testing.assert_array_equal(ref, got)


def test_skip_only_where_the_shape_is_unchanged(space):
  # layer0: 4→4 stride 1, layer1: 4→8 stride 2, layer2: 8→8 stride 1
  assert space.op_mask() == [[True] * 4, [True, True, True, False], [True] * 4]


def test_supernet_forward_shape_and_probs(space):
  net = space.build((2, 4, 8), (4, 8), nnx.Rngs(0))
  x = jax.random.uniform(jax.random.key(0), (5, 8, 8, 1))
  net.calibrate(x)
  probs = Probs(
    op=jax.numpy.full((3, 4), 0.25),
    w=jax.numpy.full((3, 4, 3), 1 / 3),
    a=jax.numpy.full((3, 4, 2), 0.5),
  )
  out = net(x, probs)
  assert out.shape == (5, 10)
  assert np.isfinite(np.asarray(out)).all()
  for conv in net.stem, net.layers[0][0].convs[0]:
    assert (np.asarray(conv.a_steps[...]) > 0).all()


def test_candidate_layers_describe_the_built_convs(space):
  net = space.build((2, 8), (8,), nnx.Rngs(0))
  table = space.candidate_layers(net)
  assert table[1][3] is None  # skip does not fit layer1
  assert table[0][3] == []  # skip computes nothing
  (conv,) = table[1][0]
  assert (conv.op, conv.kernel, conv.stride, conv.cin, conv.cout) == ("conv", 3, 2, 4, 8)
  assert (conv.in_hw, conv.out_hw) == ((8, 8), (4, 4))
  dw, pw = table[1][2]
  assert dw.groups == dw.cin == 4 and dw.stride == 2
  assert (pw.kernel, pw.cin, pw.cout, pw.in_hw) == (1, 4, 8, (4, 4))
  assert table[2][1][0].kernel == 5
  stem, head = space.fixed_layers(net)
  assert (stem.cin, stem.cout, head.op, head.cin, head.cout) == (1, 4, "linear", 8, 10)


def test_subnet_inherits_the_chosen_op_and_bit_steps(space):
  w_bits, a_bits = (2, 4, 8), (4, 8)
  supernet = space.build(w_bits, a_bits, nnx.Rngs(0))
  supernet.calibrate(jax.random.uniform(jax.random.key(0), (8, 8, 8, 1)))
  choices = [Choice("conv5x5", 4, 8), Choice("dwsep3x3", 2, 4), Choice("skip", 8, 8)]
  subnet = space.build(w_bits, a_bits, nnx.Rngs(1), choices)
  subnet.inherit(supernet, choices, OPS)
  src = supernet.layers[0][1].convs[0]  # conv5x5 of layer0
  dst = subnet.layers[0][0].convs[0]
  np.testing.assert_array_equal(dst.kernel[...], src.kernel[...])
  np.testing.assert_array_equal(dst.w_steps[...], src.w_steps[...][1:2])  # 4 bits
  np.testing.assert_array_equal(dst.a_steps[...], src.a_steps[...][1:2])  # 8 bits
  assert dst.w_bits == (4,) and dst.a_bits == (8,)
  names = [n for n, _ in subnet.quantized_layers(OPS)]
  assert names == [
    "stem",
    "layer0.conv5x5.conv5x5",
    "layer1.dwsep3x3.dw3x3",
    "layer1.dwsep3x3.pw1x1",
    "pool",
    "head.fc",
  ]
  kinds = [type(m) for _, m in subnet.quantized_layers(OPS)]
  assert kinds == [QConv, QConv, QConv, QConv, QAvgPool, QDense]
  assert subnet(jax.numpy.zeros((2, 8, 8, 1))).shape == (2, 10)
