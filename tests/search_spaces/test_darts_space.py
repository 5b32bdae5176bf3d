"""The PC-DARTS space: shapes, the batched cell against a per-edge reference, the derivation
rule, the final network and the structural counts at the reference's settings."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from quant import QScale, mix_activation, mix_weight
from search_spaces.base import Choice, Probs
from search_spaces.darts import (
  DARTS_OPS,
  DartsSpace,
  edge_offset,
  edge_softmax,
  node_slots,
  run_preprocess,
  structural_counts,
)
from search_spaces.darts import DartsSpaceError as ConfigError
from search_spaces.darts_final import build_final
from search_spaces.darts_genotype import Genotype, derive_genotype

BITS = (2, 4)
TINY = dict(cells=3, init_channels=8, partial_channels=4)  # cell 0 normal, cells 1, 2 reduce


def tiny_space(**kw) -> DartsSpace:
  return DartsSpace((8, 8, 3), 10, **{**TINY, **kw})


def random_probs(space: DartsSpace, seed: int, bits=BITS) -> Probs:
  rng = np.random.default_rng(seed)
  num_l, num_o = len(space.choice_names), len(space.op_names)

  def soft(*shape):
    return jax.nn.softmax(jnp.asarray(rng.normal(size=shape), jnp.float32), axis=-1)

  return Probs(soft(num_l, num_o), soft(num_l, num_o, len(bits)), soft(num_l, num_o, len(bits)))


def images(n: int = 4, seed: int = 0) -> jax.Array:
  return jax.random.uniform(jax.random.key(seed), (n, 8, 8, 3))


@nnx.jit
def forward(net, x, probs):
  return net(x, probs)


def test_search_network_shapes_and_calibration():
  space = tiny_space()
  net = space.build(BITS, BITS, nnx.Rngs(0))
  x = images()
  net.calibrate(x)
  steps = jax.tree.leaves(nnx.state(net.cells[0].stage0.sep.dw_act[0]))[0]
  assert steps.shape == (2 * 4 * 2, 2)  # (S·T edges × 2 sep ops, bits)
  assert not np.allclose(steps, 1.0)  # set from the data
  logits = forward(net, x, random_probs(space, 0))
  assert logits.shape == (4, 10)
  assert np.isfinite(np.asarray(logits)).all()


def test_space_structure():
  space = tiny_space()
  assert space.name == "darts"
  assert len(space.choice_names) == 3 * 14 and space.choice_names[17] == "cell1.edge3"
  assert space.reduction_cells == (1, 2)
  rows = space.op_logit_rows()
  assert rows[:14] == tuple(range(14)) and rows[14:28] == tuple(range(14, 28))
  assert np.asarray(space.op_mask()).all() and np.asarray(space.op_mask()).shape == (42, 8)
  assert [edge_offset(j) for j in range(5)] == [0, 2, 5, 9, 14]
  real, edge = node_slots(4)
  assert edge.tolist() == [[4, -1, -1], [7, 8, -1], [11, 12, 13]]
  assert real.max() == 5


def test_candidate_and_fixed_layer_shapes():
  space = tiny_space()
  net = nnx.eval_shape(lambda: space.build(BITS, BITS, nnx.Rngs(0)))
  table = space.candidate_layers(net)
  assert len(table) == 42 and all(len(row) == 8 for row in table)
  ops = list(DARTS_OPS)
  # cell 0 (normal, C=8, c=2, 8×8), edge 0: sep 5×5 = dw, pw, dw, pw on the partial channels
  dw1, pw1, dw2, _ = table[0][ops.index("sep_conv_5x5")]
  assert (dw1.kernel, dw1.stride, dw1.cin, dw1.groups, dw1.in_hw) == (5, 1, 2, 2, (8, 8))
  assert (pw1.kernel, pw1.cin, pw1.cout, dw2.stride) == (1, 2, 2, 1)
  assert table[0][ops.index("skip_connect")] == [] and table[0][ops.index("none")] == []
  # cell 1 (reduction, C=16, c=4): edge 0 leaves an input (stride 2), edge 4 leaves node 0
  dil, _ = table[14][ops.index("dil_conv_3x3")]
  assert (dil.stride, dil.dilation, dil.cin, dil.out_hw) == (2, 2, 4, (4, 4))
  fr1, fr2 = table[14][ops.index("skip_connect")]
  assert (fr1.stride, fr1.cin, fr1.cout, fr2.out_hw) == (2, 4, 2, (4, 4))
  assert table[14 + 4][ops.index("skip_connect")] == []
  fixed = space.fixed_layers(net)
  assert fixed[0].name == "stem" and fixed[0].cout == 24 and fixed[-1].op == "linear"
  assert fixed[-1].cin == 4 * 32  # 4 nodes × C of the last cell
  # cell 2 follows a reduction: its pre0 is a factorized reduce (two stride-2 convs)
  assert [s.name for s in fixed if s.name.startswith("cell2.pre0")] == [
    "cell2.pre0.conv1",
    "cell2.pre0.conv2",
  ]


def test_structural_counts_at_reference_settings():
  counts = structural_counts(DartsSpace((32, 32, 3), 10), (2, 4), (2, 4))
  assert counts == {
    "weights": 299_578,  # the reference's count, exactly
    "lsq_steps": 30_735,
    "arch_logits": 252,  # α 2×14×8 + β 2×14, as the reference
    "precision_logits": 3_584,  # 112 choice points × 8 ops × (2 + 2)
    "precision_logits_used": 1_856,  # (112 × 4 conv ops + 16 stride-2 skips) × 4
    "quantized_convs": 1_394,  # the reference's MixActivConv2d count
    "fixed_layers": 2,  # stem and classifier (fixed 8-bit; fp32 in the reference)
  }


@pytest.mark.parametrize(
  ("kwargs", "match"),
  [
    (dict(ops=("none", "conv9x9")), "space.ops: unknown op 'conv9x9'"),
    (dict(ops=("none",)), "at least one of them other than 'none'"),
    (dict(init_channels=6), "space.init_channels=6 must be divisible by"),
    (dict(init_channels=4), "must be even"),
    (dict(cells=0), "space.cells: expected a positive int"),
  ],
)
def test_bad_space_arguments(kwargs, match):
  with pytest.raises(ConfigError, match=match):
    tiny_space(**kwargs)


def test_bad_input_size():
  with pytest.raises(ConfigError, match=r"input shape \(10, 10, 3\): .* divisible by 4"):
    DartsSpace((10, 10, 3), 10, **TINY)


# --- the batched cell against a plain per-edge PC-DARTS cell --------------------------------


def _bn(x):
  mean = x.mean(axis=(0, 1, 2))
  return (x - mean) / jnp.sqrt(jnp.square(x - mean).mean(axis=(0, 1, 2)) + 1e-5)


def _qconv(x, kernel, w_steps, a_steps, wp, ap, *, stride=1, dilation=1, groups=1):
  """One quantized conv as ``search_spaces.ops.QConv`` computes it (HWIO kernel)."""
  xq = mix_activation(x, a_steps, ap, BITS)
  wq = mix_weight(kernel, w_steps, wp, BITS)
  pad = dilation * (kernel.shape[0] - 1) // 2
  return jax.lax.conv_general_dilated(
    xq, wq, (stride, stride), ((pad, pad), (pad, pad)), rhs_dilation=(dilation, dilation),
    dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups,
  )  # fmt: skip


def _dwpw(stack, g, op_index, x, wp, ap, stride, dilation):
  n_ops = len(stack.kernels)
  m = g * n_ops + op_index
  for r in range(stack.repeats):
    x = jax.nn.relu(x)
    qk = stack.dw[r][op_index]
    x = _qconv(
      x, qk.kernel[...][g][:, :, None, :], qk.steps[...][g], stack.dw_act[r].steps[...][m], wp,
      ap, stride=stride if r == 0 else 1, dilation=dilation, groups=x.shape[-1],
    )  # fmt: skip
    pw = stack.pw[r]
    x = _qconv(
      x, pw.kernel[...][m][None, None], pw.steps[...][m], stack.pw_act[r].steps[...][m], wp, ap
    )
    x = _bn(x)
  return x


def _edge_op(stage, g, op, x, wp, ap):
  """Op ``op`` of group ``g`` of an ``EdgeStage`` on one edge's partial channels."""
  s = stage.stride
  pad = ((0, 0), (1, 1), (1, 1), (0, 0))
  if op in stage.sep_ops:
    return _dwpw(stage.sep, g, stage.sep_ops.index(op), x, wp, ap, s, 1)
  if op in stage.dil_ops:
    return _dwpw(stage.dil, g, stage.dil_ops.index(op), x, wp, ap, s, 2)
  if op == "max_pool_3x3":
    return _bn(jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, s, s, 1), pad))
  if op == "avg_pool_3x3":
    total = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 3, 3, 1), (1, s, s, 1), pad)
    count = jax.lax.reduce_window(
      jnp.ones_like(x), 0.0, jax.lax.add, (1, 3, 3, 1), (1, s, s, 1), pad
    )
    return _bn(total / count)
  if op == "skip_connect" and s == 1:
    return x
  if op == "skip_connect":
    fr, r = stage.reduce, jax.nn.relu(x)
    halves = [
      _qconv(
        h,
        fr.conv.kernel[...][2 * g + k][None, None],
        fr.conv.steps[...][2 * g + k],
        fr.act.steps[...][2 * g + k],
        wp,
        ap,
      )  # fmt: skip
      for k, h in enumerate((r[:, ::2, ::2], r[:, 1::2, 1::2]))
    ]
    return _bn(jnp.concatenate(halves, axis=-1))
  assert op == "none"
  return jnp.zeros_like(x[:, ::s, ::s])


def reference_cell(cell, s0, s1, probs, beta, op_names):
  """PC-DARTS's cell, one edge and one op at a time (Xu et al. 2020, ``MixedOp`` / ``Cell``)."""
  states = list(run_preprocess(cell.pre0, cell.pre1, s0, s1))
  c, k, n = cell.c, cell.k, cell.nodes
  real, _ = node_slots(n)
  for j in range(n):
    mixed, bypass = 0.0, 0.0
    for i in range(j + 2):
      e = edge_offset(j) + i
      x = states[i]
      stage, g = (cell.stage0, i * n + j) if i < 2 else (cell.inner, int(real[j - 1, i - 2]))
      for o, op in enumerate(op_names):
        y = _edge_op(stage, g, op, x[..., :c], probs.w[e, o], probs.a[e, o])
        mixed = mixed + beta[e] * probs.op[e, o] * y
      rest = x[..., c:]
      if stage.stride == 2:
        rest = jax.lax.reduce_window(
          rest, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID"
        )
      bypass = bypass + beta[e] * rest
    node = jnp.concatenate([mixed, bypass], axis=-1)
    *lead, ch = node.shape
    states.append(node.reshape(*lead, k, ch // k).swapaxes(-1, -2).reshape(*lead, ch))
  return jnp.concatenate(states[2:], axis=-1)


@pytest.mark.parametrize("cell_index", [0, 1])  # a normal cell and a reduction cell
def test_batched_cell_matches_per_edge_reference(cell_index):
  space = tiny_space()
  net = space.build(BITS, BITS, nnx.Rngs(1))
  net.calibrate(images(4, 1))
  cell = net.cells[cell_index]
  plan = space.plans[cell_index]
  rng = np.random.default_rng(cell_index)
  s0 = jnp.asarray(rng.normal(size=(4, *plan.hw_prev_prev, plan.c_prev_prev)), jnp.float32)
  s1 = jnp.asarray(rng.normal(size=(4, *plan.hw, plan.c_prev)), jnp.float32)
  probs = random_probs(space, 7)
  rows = slice(cell_index * 14, (cell_index + 1) * 14)
  probs = Probs(probs.op[rows], probs.w[rows], probs.a[rows])
  beta = edge_softmax(jnp.asarray(rng.normal(size=14), jnp.float32), 4)
  got = nnx.jit(lambda cell, *a: cell(*a))(cell, s0, s1, probs, beta)
  want = jax.jit(lambda *a: reference_cell(cell, *a, space.op_names))(s0, s1, probs, beta)
  assert got.shape == want.shape == (4, *plan.out_hw, 4 * plan.channels)
  # float summation order differs, so an element can round to the next quantization level
  close = np.isclose(np.asarray(got), np.asarray(want), rtol=1e-3, atol=1e-3)
  assert close.mean() > 0.999, f"{(~close).sum()} of {close.size} elements differ"


def _copy_shared(src: nnx.Module, dst: nnx.Module) -> None:
  """Copies every variable that both networks have at the same path."""
  src_flat = dict(nnx.to_flat_state(nnx.state(src)))
  updates = {p: v for p, v in nnx.to_flat_state(nnx.state(dst)) if p in src_flat}
  for path, var in updates.items():
    var.set_value(src_flat[path].get_value())
  nnx.update(dst, nnx.from_flat_state(list(updates.items())))


def test_one_hot_op_equals_network_of_that_op_alone():
  """Probabilities concentrated on skip_connect (identity on normal edges, a factorized reduce
  on stride-2 edges) give the output of a space whose only op is skip_connect."""
  full = tiny_space()
  alone = tiny_space(ops=("skip_connect",))
  big = full.build(BITS, BITS, nnx.Rngs(2))
  small = alone.build(BITS, BITS, nnx.Rngs(3))
  x = images(4, 2)
  big.calibrate(x)
  _copy_shared(big, small)
  probs = random_probs(full, 3)
  o = full.op_names.index("skip_connect")
  one_hot = Probs(jax.nn.one_hot(jnp.full((42,), o), 8), probs.w, probs.a)
  only = Probs(jnp.ones((42, 1)), probs.w[:, o : o + 1], probs.a[:, o : o + 1])
  np.testing.assert_allclose(forward(big, x, one_hot), forward(small, x, only), atol=1e-5)


def test_network_of_choices_runs_its_one_hot_relaxation():
  space = tiny_space(nodes=2)
  ops = ["sep_conv_3x3", "dil_conv_5x5", "max_pool_3x3", "skip_connect", "none"]
  choices = [Choice(ops[l % 5], BITS[l % 2], BITS[(l // 2) % 2]) for l in range(15)]
  net = space.build(BITS, BITS, nnx.Rngs(0), choices)
  x = images()
  o = np.asarray([space.op_names.index(c.op) for c in choices])
  w = np.asarray([BITS.index(c.w_bits) for c in choices])
  a = np.asarray([BITS.index(c.a_bits) for c in choices])
  one_hot = Probs(
    jax.nn.one_hot(o, 8),
    jnp.broadcast_to(jax.nn.one_hot(w, 2)[:, None], (15, 8, 2)),
    jnp.broadcast_to(jax.nn.one_hot(a, 2)[:, None], (15, 8, 2)),
  )
  got = nnx.jit(lambda n, x: n(x))(net, x)
  np.testing.assert_allclose(got, forward(net, x, one_hot), atol=1e-6)
  with pytest.raises(ConfigError, match=r"choice cell0.edge0: bits \(8, 2\) not among"):
    space.build(BITS, BITS, nnx.Rngs(0), [Choice("sep_conv_3x3", 8, 2)] * 15)


# --- derivation and the final network -------------------------------------------------------


def hand_made_logits(space):
  """Cell-type-shared op probabilities with known winners; bits that differ by cell."""
  ops = list(space.op_names)
  num_l, num_o = len(space.choice_names), len(ops)
  table = np.full((28, num_o), 0.01)
  table[:, ops.index("none")] = 0.5  # 'none' is never derived, however strong
  for e in range(28):
    table[e, ops.index("sep_conv_3x3")] = 0.1 + 0.01 * e  # later edges slightly stronger
  table[0, ops.index("max_pool_3x3")] = 0.9  # normal edge 0 (node 0 from s0): max pool
  table[14 + 1, ops.index("skip_connect")] = 0.9  # reduction edge 1 (node 0 from s1)
  table[14 + 4, ops.index("dil_conv_5x5")] = 0.95  # reduction edge 4 (node 1 from node 0)
  op_probs = table[np.asarray(space.op_logit_rows())]
  w_logits = np.zeros((num_l, num_o, 2))
  a_logits = np.zeros((num_l, num_o, 2))
  w_logits[:, :, 1] = 1.0  # 4-bit weights and activations everywhere...
  a_logits[:, :, 1] = 0.5
  a_logits[0 * 14 + 8, ops.index("sep_conv_3x3"), 0] = 3.0  # ...but normal edge 8 (one cell)
  # reduction cells 1 and 2 disagree on edge 4; the sum of log-softmaxes decides: 2 bits
  a_logits[1 * 14 + 4, ops.index("dil_conv_5x5")] = [4.0, 0.0]
  a_logits[2 * 14 + 4, ops.index("dil_conv_5x5")] = [0.0, 1.0]
  return op_probs, w_logits, a_logits


def test_derive_genotype_rule():
  space = tiny_space()
  net = space.build(BITS, BITS, nnx.Rngs(0))
  edge = np.zeros((2, 14), np.float32)
  edge[0, 2] = 5.0  # normal node 1: the edge from s0 dominates
  net.edge_logits[...] = jnp.asarray(edge)
  genotype = derive_genotype(net, *hand_made_logits(space), BITS, BITS)
  normal = genotype.normal
  assert normal[0] == ("max_pool_3x3", 0, None, None)  # strongest, no bits
  assert normal[1] == ("sep_conv_3x3", 1, 4, 4)
  assert normal[2][:2] == ("sep_conv_3x3", 0)  # β wins over the later, stronger edge 4
  assert normal[3][:2] == ("sep_conv_3x3", 2)  # then edge 4 (from node 0) beats edge 3
  # node 2 (edges 5..8): the later edges are stronger
  assert normal[4:6] == (("sep_conv_3x3", 3, 4, 2), ("sep_conv_3x3", 2, 4, 4))
  assert genotype.reduce[0] == ("skip_connect", 1, 4, 4)  # a factorized reduce: bits
  assert genotype.reduce[1] == ("sep_conv_3x3", 0, 4, 4)
  assert genotype.reduce[2] == ("dil_conv_5x5", 2, 4, 2)
  assert genotype.normal_concat == genotype.reduce_concat == (2, 3, 4, 5)
  back = Genotype.from_dict(json.loads(json.dumps(genotype.to_dict())))
  assert back == genotype


@pytest.mark.parametrize(
  ("edit", "match"),
  [
    (lambda d: d.pop("reduce"), "g.json: missing field 'reduce'"),
    (
      lambda d: d["normal"][3].update({"from": 4}),
      r"g.json.normal\[3\].from: expected an int in 0..2",
    ),
    (lambda d: d["normal"][0].update({"op": "conv"}), r"g.json.normal\[0\].op: unknown op 'conv'"),
    (lambda d: d["normal"][1].update({"w_bits": None}), r"normal\[1\].w_bits: expected an int"),
    (lambda d: d["normal"][0].update({"w_bits": 4}), r"normal\[0\]: max_pool_3x3 .* must be null"),
    (lambda d: d["reduce_concat"].append(9), r"reduce_concat: expected state indices in 0..5"),
  ],
)
def test_genotype_errors(edit, match):
  genes = [("max_pool_3x3", 0, None, None), ("sep_conv_3x3", 1, 4, 2)] * 4
  data = Genotype(tuple(genes), (2, 3, 4, 5), tuple(genes), (2, 3, 4, 5)).to_dict()
  edit(data)
  with pytest.raises(ConfigError, match=match):
    Genotype.from_dict(data, "g.json")


def test_final_network_from_genotype():
  space = tiny_space()
  net = space.build(BITS, BITS, nnx.Rngs(0))
  genotype = derive_genotype(net, *hand_made_logits(space), BITS, BITS)
  final = build_final(genotype, (8, 8, 3), 10, nnx.Rngs(0), cells=3, init_channels=8)
  x = images()
  final.calibrate(x)
  stats = jax.tree.leaves(jax.tree.map(np.array, nnx.state(final, nnx.BatchStat)))
  train_logits = nnx.jit(lambda m, x: m(x))(final, x)  # updates the running statistics
  assert train_logits.shape == (4, 10) and np.isfinite(np.asarray(train_logits)).all()
  after = jax.tree.leaves(nnx.state(final, nnx.BatchStat))
  assert any(not np.allclose(a, b) for a, b in zip(stats, after, strict=True))
  final.eval()
  eval_logits = nnx.jit(lambda m, x: m(x))(final, x)
  assert not np.allclose(eval_logits, train_logits)  # running, not batch, statistics
  # the genotype's bits reach the convs: the reduction cell's dil_conv_5x5 runs at (4, 2)
  op = final.cells[1].ops[2]
  assert (op.module.dw[0][0].w_bits, op.module.dw_act[0].a_bits) == ((4,), (2,))


def test_final_network_without_running_statistics_holds_params_and_steps_only():
  genes = (("sep_conv_3x3", 0, 4, 4), ("skip_connect", 1, 4, 4))
  genotype = Genotype(genes, (2,), genes, (2,))
  final = nnx.eval_shape(
    lambda: build_final(genotype, (8, 8, 3), 10, nnx.Rngs(0), cells=3, running_stats=False)
  )
  nnx.split(final, QScale, nnx.Param)  # exhaustive: no BatchStat
  assert not jax.tree.leaves(nnx.state(final, nnx.BatchStat))
