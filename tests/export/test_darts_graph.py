"""A DARTS final network as a quantized DAG: extraction, the float fake-quant reference and the
integer model agree with the JAX network (every op kind, mixed 2/4/8-bit weights)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qdarts.export.from_darts import fold_batch_norm
from qdarts.export.graph_integer import (
  integer_graph_forward,
  integer_graph_trace,
  to_integer_graph,
)
from qdarts.export.graph_ir import (
  GAdd,
  GAvgPool,
  GConcat,
  GConv,
  GGlobalAvgPool,
  GLinear,
  GMaxPool,
  GRequant,
  Grid,
  conv2d,
  reference_forward,
  validate_graph,
)
from search_spaces.darts_ops import BatchNorm


def test_the_graph_uses_every_node_kind(darts_graph):
  graph, _ = darts_graph
  kinds = {type(n) for n in graph.nodes}
  assert kinds == {GConv, GRequant, GAdd, GConcat, GMaxPool, GAvgPool, GGlobalAvgPool, GLinear}
  convs = [n for n in graph.nodes if isinstance(n, GConv)]
  assert {c.dilation for c in convs} == {1, 2} and {c.offset for c in convs} == {0, 1}
  assert any(c.groups > 1 for c in convs) and {c.w_bits for c in convs} == {2, 4, 8}
  assert {(p.stride, type(p)) for p in graph.nodes if isinstance(p, GMaxPool | GAvgPool)} == {
    (2, GMaxPool),
    (1, GAvgPool),
  }
  assert "cell2.pre0.conv2" in {c.name for c in convs}  # factorized-reduce preprocess
  info = validate_graph(graph)
  assert info["head.fc"].shape == (10,) and info["cell2.out"].grid.signed


def test_jax_network_matches_the_reference_with_int32_biases(darts_net, darts_graph):
  """In eval mode the network computes its folded BNs with biases on the accumulator grid, so
  it is the int32-bias reference up to float32 arithmetic."""
  net, x = darts_net
  graph, _ = darts_graph
  jax_logits = np.asarray(jax.jit(lambda x: net(x))(jnp.asarray(x)))
  ref = reference_forward(graph, x, int32_bias=True)
  step = to_integer_graph(graph).logit_scale
  assert np.abs(jax_logits - ref).max() / step.min() < 0.01  # measured 3.2e-5 accumulator LSB
  assert (jax_logits.argmax(-1) == ref.argmax(-1)).all()


def test_integer_model_matches_the_reference_code_for_code(darts_graph):
  graph, x = darts_graph
  igraph = to_integer_graph(graph)
  codes = integer_graph_trace(igraph, x)
  _, values = reference_forward(graph, x, int32_bias=True, trace=True)
  info = validate_graph(graph)
  worst = 0
  for name, got in codes.items():
    if info[name].grid is None:
      continue
    lo, hi = info[name].grid.qrange()
    assert got.min() >= lo and got.max() <= hi, name
    expected = np.round(values[name] / np.float32(info[name].grid.step))
    worst = max(worst, int(np.abs(got - expected).max()))
  assert worst <= 1  # measured: 0 of 1,014,400 codes differ
  logits = integer_graph_forward(igraph, x)
  ref = reference_forward(graph, x, int32_bias=True)
  assert np.abs(logits - ref).max() / igraph.logit_scale.min() <= 1.0  # measured 2.6e-5


def test_integer_model_within_one_lsb_of_the_jax_network(darts_net, darts_graph):
  net, x = darts_net
  graph, _ = darts_graph
  igraph = to_integer_graph(graph)
  jax_logits = np.asarray(jax.jit(lambda x: net(x))(jnp.asarray(x)))
  gap = np.abs(integer_graph_forward(igraph, x) - jax_logits) / igraph.logit_scale
  assert gap.max() <= 1.0  # in accumulator LSBs of the classifier; measured 2.9e-5


def test_double_rounding_is_within_one_code_per_node(darts_graph):
  """Each node of the gemmlowp-rounding model, fed the single-rounding model's inputs, is
  within one code of it."""
  from qdarts.export.graph_integer import _int_forward  # noqa: PLC0415

  graph, x = darts_graph
  single = to_integer_graph(graph)
  codes = integer_graph_trace(single, x)
  for n in single.nodes[:-1]:
    got = _int_forward(n, [codes[i] for i in n.node.inputs], "double")
    assert np.abs(got.astype(np.int64) - codes[n.node.name]).max() <= 1, n.node.name


def test_batch_norm_folds_into_the_conv():
  rng = np.random.default_rng(0)
  bn = BatchNorm((4,), affine=True, running=True)
  bn.mean[...] = jnp.asarray(rng.normal(size=4), jnp.float32)
  bn.var[...] = jnp.asarray(rng.uniform(0.1, 2, size=4), jnp.float32)
  bn.scale[...] = jnp.asarray([1.3, -0.6, 0.4, 2.0], jnp.float32)  # one negative γ
  bn.bias[...] = jnp.asarray(rng.normal(size=4), jnp.float32)
  bn.use_running_average = True
  kernel = rng.normal(size=(1, 1, 3, 4)).astype(np.float32)
  w_step = np.full(4, 0.3, np.float32)
  x = rng.uniform(size=(2, 4, 4, 3)).astype(np.float32)
  codes = np.clip(np.round(kernel / w_step), -1, 1)  # 2-bit weights
  unfolded = np.asarray(bn(jnp.asarray(conv2d(x, codes * w_step, 1, ((0, 0), (0, 0)), 1, 1, 0))))
  weight, step, bias = fold_batch_norm(kernel, w_step, 2, bn)
  assert (step > 0).all() and np.array_equal(np.round(weight / step), codes * [1, -1, 1, 1])
  folded = conv2d(x, weight, 1, ((0, 0), (0, 0)), 1, 1, 0) + bias
  np.testing.assert_allclose(folded, unfolded, rtol=1e-5, atol=1e-5)


def _replace(graph, name, **changes):
  nodes = tuple(dataclasses.replace(n, **changes) if n.name == name else n for n in graph.nodes)
  return dataclasses.replace(graph, nodes=nodes)


@pytest.mark.parametrize(
  "name, changes, message",
  [
    ("cell0.out", dict(out=Grid(0.5, 8, True)), "cell0.out.*output's grid"),
    ("cell0.node1", dict(inputs=("cell0.node1", "input")), "no earlier node produces"),
    ("stem", dict(w_bits=9), "w_bits must be an int in 2..8"),
    ("cell1.node0.from1.max_pool_3x3", dict(stride=3), "stride must be 1 or 2"),
  ],
)
def test_invalid_graphs_name_the_node(darts_graph, name, changes, message):
  graph, _ = darts_graph
  with pytest.raises(ValueError, match=message):
    validate_graph(_replace(graph, name, **changes))


def test_a_node_with_the_same_op_twice_on_one_state():
  """Hand-written genotypes may repeat a gene; its nodes get distinct names, same numbers."""
  from flax import nnx  # noqa: PLC0415

  from qdarts.export.from_darts import graph_from_darts  # noqa: PLC0415
  from search_spaces.darts_final import build_final  # noqa: PLC0415
  from search_spaces.darts_genotype import Genotype  # noqa: PLC0415

  genes = (("sep_conv_3x3", 0, 4, 8), ("sep_conv_3x3", 0, 8, 8))
  genes += (("max_pool_3x3", 2, None, None), ("max_pool_3x3", 2, None, None))
  net = build_final(Genotype(genes, (2, 3), genes, (2, 3)), (8, 8, 3), 10, nnx.Rngs(0), cells=3,
                    init_channels=4)  # fmt: skip
  x = jax.random.uniform(jax.random.key(3), (8, 8, 8, 3))
  net.calibrate(x)
  net.eval()
  graph = graph_from_darts(net, (8, 8, 3), 10, {})
  names = {n.name for n in graph.nodes}
  assert {"cell0.node1.from2.max_pool_3x3", "cell0.node1.from2.max_pool_3x3.b"} <= names
  igraph = to_integer_graph(graph)
  gap = np.abs(integer_graph_forward(igraph, np.asarray(x)) - np.asarray(net(x)))
  assert (gap / igraph.logit_scale).max() <= 1.0  # measured 2.1e-5
