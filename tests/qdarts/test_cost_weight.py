"""Raising the cost weight lowers the exact cost of the derived SubNet."""

import itertools

import jax
import pytest

from qdarts import pipeline
from qdarts.config import load_config
from qdarts.derive import derive_choices, subnet_costs
from qdarts.search import run_search
from qdarts.supernet import masked_logits, merge_supernet, split_supernet

WEIGHTS = (0.0, 1.0, 10.0)


def derived_cost(quickstart_path, overrides, weight):
  cfg = load_config(quickstart_path, [*overrides, f"cost.weight={weight}"])
  setup = pipeline.prepare(cfg)
  setup.supernet.net.calibrate(setup.data.x_weight[:128])
  graphdef, groups = split_supernet(setup.supernet)
  outcome = run_search(cfg, setup.data, graphdef, groups, setup.objective)
  logits = jax.device_get(masked_logits(merge_supernet(graphdef, outcome.groups)))
  choices = derive_choices(logits, setup.space.op_names, cfg.quant.w_bits, cfg.quant.a_bits)
  costs = subnet_costs(
    choices, setup.candidate_layers, setup.fixed_layers, setup.space.op_names, setup.cost_model
  )
  return costs["total"]["bops"]


@pytest.mark.parametrize("sampler", ["gumbel"])
def test_cost_is_non_increasing_in_the_cost_weight(quickstart_path, sampler):
  overrides = [
    "data.dataset=synthetic",
    "data.batch_size=32",
    "space.stem_channels=4",
    "space.channels=[8,8,8]",
    "space.strides=[1,2,1]",
    "space.ops=[conv3x3,conv5x5,dwsep3x3,skip]",
    "search.epochs=6",
    "search.warmup_epochs=2",
    "search.arch_lr=0.01",
    f"search.sampler={sampler}",
  ]
  costs = [derived_cost(quickstart_path, overrides, w) for w in WEIGHTS]
  print("derived bops by cost weight", dict(zip(WEIGHTS, costs, strict=True)))
  assert all(a >= b for a, b in itertools.pairwise(costs)), costs
  assert costs[-1] < costs[0], costs
