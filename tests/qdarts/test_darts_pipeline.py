"""`qdarts search` with the DARTS space: search, derive a genotype with bits, cost its final
network exactly, train that network from scratch, report (the cells drawn), no export yet."""

import json
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from qdarts import pipeline
from qdarts.config import load_config
from qdarts.derive import grouped_costs
from qdarts.errors import ConfigError
from qdarts.train_genotype import prepare_training, read_genotype, run_training
from search_spaces.darts_final import build_final, final_layer_specs
from search_spaces.darts_genotype import Genotype

TINY_DARTS = [
  "data.dataset=synthetic",
  "data.batch_size=32",
  "search.epochs=2",
  "search.warmup_epochs=1",
  "train.epochs=2",
  "space.name=darts",
  "space.cells=3",
  "space.init_channels=4",
  "space.nodes=2",
  "space.partial_channels=2",
  "train.cells=4",  # the final network is not the search network's size
  "train.init_channels=8",
  "quant.w_bits=[2,4]",
  "quant.a_bits=[4,8]",
]


@pytest.fixture(scope="module")
def darts_run(quickstart_path, tmp_path_factory):
  run_dir = tmp_path_factory.mktemp("darts_run")
  setup = pipeline.prepare(load_config(quickstart_path, TINY_DARTS))
  result = pipeline.run(setup, run_dir)
  return setup, result, run_dir


def test_darts_run_derives_a_genotype_with_bits_and_trains_its_final_network(darts_run):
  setup, result, run_dir = darts_run
  subnet = json.loads((run_dir / "subnet.json").read_text())
  genotype = Genotype.from_dict(subnet["genotype"])
  assert len(genotype.normal) == len(genotype.reduce) == 4  # two genes per node, 2 nodes
  assert subnet["final_network"] == {"cells": 4, "init_channels": 8, "stem_multiplier": 3}
  for kind in ("normal", "reduce"):
    for op, src, w, a in getattr(genotype, kind):
      assert op != "none"
      reduce_skip = op == "skip_connect" and kind == "reduce" and src < 2  # factorized reduce
      has_convs = op.startswith(("sep", "dil")) or reduce_skip
      assert (w in (2, 4) and a in (4, 8)) if has_convs else (w is None and a is None)
  assert [g["choice"] for g in result["subnet"]] == [g["choice"] for g in subnet["layers"]]
  # the final network was trained from scratch, epoch by epoch, and evaluated
  assert [row["epoch"] for row in result["finetune_history"]] == [1, 2]
  assert 0.0 <= result["accuracy"]["fake_quant"] <= 1.0
  assert "inherited_fake_quant" not in result["accuracy"]
  # exported: the graph in subnet.npz, every configured format verified against the integer model
  assert result["export_skipped"] is None and (run_dir / "subnet.npz").exists()
  assert (run_dir / "model.onnx").exists() and (run_dir / "c" / "manifest.json").exists()
  assert result["export_verification"]["onnx"]["max_logit_diff_lsb"] <= 1.0
  assert result["accuracy"]["prediction_agreement"] >= 0.99


def test_darts_cost_is_the_final_networks_exact_cost(darts_run):
  setup, result, run_dir = darts_run
  subnet = json.loads((run_dir / "subnet.json").read_text())
  genotype = Genotype.from_dict(subnet["genotype"])
  genes, fixed = final_layer_specs(genotype, (8, 8, 1), 4, cells=4, init_channels=8)
  expected = grouped_costs([(g.specs, g.w_bits, g.a_bits) for g in genes], fixed, setup.cost_model)
  assert result["cost"] == pytest.approx(expected["total"])
  # the search network's size would give another cost: the derived one is the final network's
  small, small_fixed = final_layer_specs(genotype, (8, 8, 1), 4, cells=3, init_channels=4)
  smaller = grouped_costs(
    [(g.specs, g.w_bits, g.a_bits) for g in small], small_fixed, setup.cost_model
  )
  assert smaller["total"]["bops"] < result["cost"]["bops"]
  per_gene = [layer["cost"]["bops"] for layer in subnet["layers"]]
  fixed_bops = sum(f["cost"]["bops"] for f in subnet["fixed_layers"])
  assert sum(per_gene) + fixed_bops == pytest.approx(result["cost"]["bops"])


def test_final_layer_specs_hold_every_weight_of_the_final_network():
  normal = (("sep_conv_3x3", 0, 4, 4), ("skip_connect", 1, None, None))
  normal += (("dil_conv_5x5", 2, 2, 4), ("max_pool_3x3", 0, None, None))
  reduce = (("skip_connect", 0, 4, 2), ("sep_conv_5x5", 1, 2, 2))
  reduce += (("avg_pool_3x3", 2, None, None), ("dil_conv_3x3", 1, 8, 8))
  genotype = Genotype(normal, (2, 3), reduce, (2, 3))
  genes, fixed = final_layer_specs(genotype, (8, 8, 3), 10, cells=4, init_channels=8)
  specs = [s for g in genes for s in g.specs] + fixed
  spec_weights = sum(s.kernel**2 * s.cin // s.groups * s.cout for s in specs)
  net = nnx.eval_shape(
    lambda: build_final(genotype, (8, 8, 3), 10, nnx.Rngs(0), cells=4, init_channels=8)
  )
  kernels = [
    v
    for path, v in jax.tree_util.tree_leaves_with_path(nnx.state(net, nnx.Param))
    if "kernel" in jax.tree_util.keystr(path)
  ]
  assert spec_weights == sum(int(np.prod(k.shape)) for k in kernels) == 19856
  assert [g.name for g in genes][:2] == ["normal.node0.from0", "normal.node0.from1"]
  assert not genes[1].specs and len(genes[4].specs) == 2 * 2  # reduce skip: 2 cells × 2 convs


def test_darts_report_draws_the_cells_and_lists_the_genes(darts_run):
  _, result, run_dir = darts_run
  report = (run_dir / "report.md").read_text()
  assert "plots/subnet.png" in report and (run_dir / "plots" / "subnet.png").stat().st_size > 0
  for gene in result["subnet"]:
    assert f"| {gene['choice']} | {gene['op']} |" in report


def test_darts_refuses_budget_terms_in_one_line(quickstart_path):
  cfg = load_config(quickstart_path, [*TINY_DARTS, "cost.form=budget", "cost.budget=1000000"])
  with pytest.raises(ConfigError, match=r"cost.form: 'budget' is not available for space darts"):
    pipeline.prepare(cfg)


def test_derive_reads_the_searched_logits(darts_run):
  setup, _, run_dir = darts_run
  subnet = json.loads((run_dir / "subnet.json").read_text())
  for layer in subnet["layers"]:
    p = layer["op_probabilities"]
    assert layer["op_probability"] == pytest.approx(p[layer["op"]])
    assert layer["op"] == max((o for o in p if o != "none"), key=p.get)


# ----- qdarts train: the genotype's final training as a run of its own ---------------------

TRAIN = ["train.epochs=2", "train.cells=3", "train.init_channels=4"]


class StopAfterFirstEpoch:
  """A reporter that interrupts the training after its first epoch (like Ctrl-C)."""

  def start(self, stage, total):
    pass

  def advance(self, stage, metrics):
    raise KeyboardInterrupt

  def finish(self, stage, summary):
    pass


def test_train_runs_a_genotype_and_resumes_to_the_same_result(darts_run, tmp_path):
  setup, _, run_dir = darts_run
  genotype = read_genotype(run_dir)  # the search run folder
  cfg = load_config(run_dir / "config.yaml", TRAIN)
  whole = run_training(prepare_training(cfg, genotype, setup.data), tmp_path / "whole")
  assert [row["epoch"] for row in whole["history"]] == [1, 2]
  assert whole["genotype"] == json.loads((run_dir / "subnet.json").read_text())["genotype"]
  genes, fixed = final_layer_specs(genotype, (8, 8, 1), 4, cells=3, init_channels=4)
  groups = [(g.specs, g.w_bits, g.a_bits) for g in genes]
  assert whole["cost"] == pytest.approx(grouped_costs(groups, fixed, setup.cost_model)["total"])

  cut = tmp_path / "cut"
  with pytest.raises(KeyboardInterrupt):
    run_training(prepare_training(cfg, genotype, setup.data), cut, StopAfterFirstEpoch())
  assert not (cut / "result.json").exists() and list((cut / "checkpoints").glob("*.npz"))
  resumed = run_training(prepare_training(cfg, genotype, setup.data), cut, resume=True)
  assert resumed["history"] == whole["history"]
  assert resumed["accuracy"] == whole["accuracy"]


def test_train_refuses_what_is_not_a_genotype_or_a_darts_config(
  darts_run, tmp_path, quickstart_path
):
  _, _, run_dir = darts_run
  bad = tmp_path / "bad.json"
  bad.write_text("{not json")
  with pytest.raises(ConfigError, match=r"bad.json: not a JSON file"):
    read_genotype(bad)
  chain = tmp_path / "subnet.json"
  chain.write_text(json.dumps({"space": "tiny", "layers": []}))
  with pytest.raises(ConfigError, match=r"a SubNet of space 'tiny', not a DARTS genotype"):
    read_genotype(chain)
  with pytest.raises(ConfigError, match=r"no such file"):
    read_genotype(tmp_path / "missing")
  with pytest.raises(ConfigError, match=r"space.name: `qdarts train` trains a DARTS genotype"):
    prepare_training(load_config(quickstart_path), read_genotype(run_dir))


def test_shipped_final_training_config_matches_the_paper():
  from importlib import resources

  cfg = load_config(Path(str(resources.files("qdarts.configs") / "cifar10_darts_train.yaml")))
  assert (cfg.space.name, cfg.data.dataset, cfg.train.cells, cfg.train.init_channels) == (
    "darts",
    "cifar10",
    20,
    36,
  )
  assert (cfg.train.epochs, cfg.train.optimizer, cfg.train.lr) == (600, "sgd", 0.025)
