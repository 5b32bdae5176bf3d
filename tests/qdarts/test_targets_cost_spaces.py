"""Every built-in target costs every candidate op of every search space at every bit pair the
search can take: finite everywhere, and positive wherever an op has quantized layers."""

import numpy as np
import pytest
from flax import nnx

from hwcost import build_cost_tables
from qdarts.config import SpaceConfig
from qdarts.spaces import search_space
from qdarts.targets import builtin_targets, resolve_target

BITS = (2, 4, 8)
SPACES = {
  "tiny": (SpaceConfig(), (8, 8, 1)),
  "mbconv": (
    SpaceConfig(name="mbconv", stem_channels=8, channels=(8, 16), strides=(1, 2), repeats=(2, 1)),
    (16, 16, 1),
  ),
  "chain": (SpaceConfig(name="chain", file="configs/spaces/example_chain.yaml"), (8, 8, 1)),
  "darts": (SpaceConfig(name="darts", cells=3, init_channels=8), (16, 16, 3)),
}


@pytest.fixture(scope="module")
def spaces_and_layers():
  built = {}
  for name, (cfg, shape) in SPACES.items():
    space = search_space(cfg, shape, 10)
    net = space.build(BITS, BITS, nnx.Rngs(0))
    built[name] = (space, space.candidate_layers(net), space.fixed_layers(net))
  return built


@pytest.mark.parametrize("target", sorted(builtin_targets()))
@pytest.mark.parametrize("space_name", sorted(SPACES))
def test_target_costs_every_op_of_the_space(target, space_name, spaces_and_layers):
  space, candidates, fixed = spaces_and_layers[space_name]
  model = resolve_target(target)
  metrics = tuple(m for m in model.metrics if m != "act_bytes")
  tables = build_cost_tables(candidates, model, BITS, BITS, metrics)
  allowed = tables.op_mask[..., None, None] & tables.pair_mask
  assert allowed.any(axis=(1, 2, 3)).all(), "a choice point with nothing the target runs"
  values = tables.values[:, allowed]  # (M, number of allowed choices)
  assert np.isfinite(values).all()
  has_layers = np.array([[bool(ops) for ops in row] for row in candidates])
  quantized = allowed & has_layers[..., None, None]
  assert (tables.values[:, quantized] > 0).all(), f"{target} costs a quantized op at zero"
  for spec in fixed:  # stem, preprocessing, classifier: 8 bits
    assert all(v > 0 for v in model.cost(spec, 8, 8).values.values()), spec
