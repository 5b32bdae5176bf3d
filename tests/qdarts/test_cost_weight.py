"""The derived SubNet answers to the cost: its weight, and the target's tables."""

import itertools

import jax
import pytest

from qdarts import pipeline
from qdarts.config import load_config
from qdarts.derive import derive_choices, subnet_costs
from qdarts.search import run_search
from qdarts.supernet import masked_logits, merge_supernet, split_supernet

WEIGHTS = (0.0, 1.0, 10.0)


def search_and_derive(quickstart_path, overrides):
  """Searches (no fine-tuning) and returns the argmax SubNet's choices and the setup."""
  cfg = load_config(quickstart_path, overrides)
  setup = pipeline.prepare(cfg)
  setup.supernet.net.calibrate(setup.data.to_input(setup.data.x_weight[:128]))
  graphdef, groups = split_supernet(setup.supernet)
  outcome = run_search(cfg, setup.data, graphdef, groups, setup.objective)
  logits = jax.device_get(masked_logits(merge_supernet(graphdef, outcome.groups)))
  return derive_choices(logits, setup.space.op_names, cfg.quant.w_bits, cfg.quant.a_bits), setup


def derived_cost(quickstart_path, overrides, weight):
  choices, setup = search_and_derive(quickstart_path, [*overrides, f"cost.weight={weight}"])
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


def _target(tmp_path, name, conv_base, depthwise):
  """bitfusion45 with other conv and depthwise throughputs (MACs/cycle)."""
  from importlib import resources

  text = (resources.files("qdarts.configs.targets") / "bitfusion45.yaml").read_text()
  text = text.replace("name: bitfusion45", f"name: {name}")
  text = text.replace(
    "macs_per_cycle: {form: bitfusion, macs_per_cycle_8x8: 512}",
    f"macs_per_cycle: {{form: bitfusion, macs_per_cycle_8x8: {conv_base}}}",
    1,  # the conv class only; linear keeps its own
  )
  text = text.replace("    macs_per_cycle: 32\n", f"    macs_per_cycle: {depthwise}\n")
  path = tmp_path / f"{name}.yaml"
  path.write_text(text)
  return path


def test_the_derived_subnet_follows_the_target(quickstart_path, tmp_path):
  """Two targets that disagree on which op is cheap derive different ops."""
  overrides = [
    "data.dataset=synthetic",
    "data.batch_size=32",
    "space.stem_channels=8",
    "space.channels=[8,8]",
    "space.strides=[1,1]",
    "space.ops=[conv3x3,dwsep3x3]",
    "search.epochs=6",
    "search.warmup_epochs=2",
    "search.arch_lr=0.01",
    "cost.metric=latency_ms",
    "cost.weight=5.0",
  ]
  fast_depthwise = _target(tmp_path, "fast_dw", conv_base=1, depthwise=100000)
  slow_depthwise = _target(tmp_path, "slow_dw", conv_base=512, depthwise=0.01)
  ops = {}
  for path in (fast_depthwise, slow_depthwise):
    choices, _ = search_and_derive(quickstart_path, [*overrides, f"cost.target={path}"])
    ops[path.stem] = [c.op for c in choices]
  assert ops["fast_dw"] == ["dwsep3x3", "dwsep3x3"], ops
  assert ops["slow_dw"] == ["conv3x3", "conv3x3"], ops
