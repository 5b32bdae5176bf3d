"""`qdarts search` from config to exported model: the stages in order, each writing its artifact.

Everything that can fail on bad input (config, target, dataset, space) runs in
:func:`prepare`, before the run folder exists, so a rejected run leaves nothing on disk.
"""

import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import jax
import numpy as np
import yaml
from flax import nnx

from hwcost import CostModel, CostTables, build_cost_tables
from qdarts import report
from qdarts.config import Config, config_to_dict
from qdarts.data import Dataset, load_dataset
from qdarts.derive import derive_choices, subnet_costs
from qdarts.errors import ConfigError
from qdarts.export import export_onnx, run_onnx
from qdarts.export.from_subnet import chain_from_subnet
from qdarts.finetune import accuracy, finetune, predict_logits
from qdarts.objective import CostObjective, costliest_subnet
from qdarts.run_dir import atomic_write_json, atomic_write_text, file_digest
from qdarts.search import run_search
from qdarts.supernet import Supernet, masked_logits, merge_supernet, split_supernet
from qdarts.targets import resolve_target
from search_spaces import SPACES, Choice

CALIBRATION_BATCH = 256


class Reporter(Protocol):
  """Where progress goes (a rich display in the CLI, nothing in tests)."""

  def start(self, stage: str, total: int) -> None: ...

  def advance(self, stage: str, metrics: dict) -> None: ...

  def finish(self, stage: str, summary: str) -> None: ...


class SilentReporter:
  def start(self, stage, total):
    pass

  def advance(self, stage, metrics):
    pass

  def finish(self, stage, summary):
    pass


@dataclass
class Setup:
  """Everything built from the config before the run starts."""

  cfg: Config
  data: Dataset
  space: object
  cost_model: CostModel
  supernet: Supernet
  tables: CostTables
  candidate_layers: list
  fixed_layers: list
  objective: CostObjective


def prepare(cfg: Config) -> Setup:
  """Loads the target and data, builds the space, supernet and cost tables (no disk writes)."""
  cost_model = resolve_target(cfg.cost.target)
  if cfg.cost.metric not in cost_model.metrics:
    raise ConfigError(
      f"cost.metric: target {cost_model.name!r} provides "
      f"{', '.join(m for m in cost_model.metrics if m != 'act_bytes')}, "
      f"not {cfg.cost.metric!r}"
    )
  data = load_dataset(cfg.data, cfg.seed)
  s = cfg.space
  space = SPACES[s.name](
    data.input_shape, data.num_classes, s.stem_channels, s.channels, s.strides, s.ops
  )
  net = space.build(cfg.quant.w_bits, cfg.quant.a_bits, nnx.Rngs(cfg.seed))
  candidate_layers, fixed_layers = space.candidate_layers(net), space.fixed_layers(net)
  metric = cfg.cost.metric
  tables = build_cost_tables(
    candidate_layers, cost_model, cfg.quant.w_bits, cfg.quant.a_bits, (metric,)
  )
  _reject_unsupported_pairs(tables, cost_model, cfg)
  fixed_cost = sum(cost_model.cost(spec, 8, 8).values[metric] for spec in fixed_layers)
  table = tables.values[0]  # (L, O, Bw, Ba)
  objective = CostObjective.create(
    table=table,
    fixed_cost=float(fixed_cost),
    reference=costliest_subnet(table, tables.op_mask, fixed_cost),
    form=cfg.cost.form,
    weight=cfg.cost.weight,
    budget=cfg.cost.budget,
  )
  supernet = Supernet(net, tables.op_mask, len(cfg.quant.w_bits), len(cfg.quant.a_bits))
  return Setup(
    cfg, data, space, cost_model, supernet, tables, candidate_layers, fixed_layers, objective
  )


def _reject_unsupported_pairs(tables: CostTables, cost_model: CostModel, cfg: Config) -> None:
  """A bit pair the target cannot run must never be searched as if it were free.

  Weight and activation bits have separate logits, so a target that supports only some pairs
  is rejected here with the pairs to drop, rather than masked approximately.
  """
  unsupported = sorted(
    {
      (cfg.quant.w_bits[w], cfg.quant.a_bits[a])
      for _, _, w, a in np.argwhere(tables.op_mask[..., None, None] & ~tables.pair_mask)
    }
  )
  if unsupported:
    pairs = ", ".join(f"w{w}a{a}" for w, a in unsupported)
    raise ConfigError(
      f"quant: target {cost_model.name!r} does not support the bit pairs {pairs} "
      "(its unsupported_policy is error); choose quant.w_bits and quant.a_bits it supports"
    )


def run(setup: Setup, run_dir: Path, reporter: Reporter | None = None, writer=None) -> dict:
  """Runs search → derive → fine-tune → export → verify → report in ``run_dir``.

  Returns the result dict also written to ``result.json``.
  """
  reporter = reporter or SilentReporter()
  cfg, data, space = setup.cfg, setup.data, setup.space
  timings: dict[str, float] = {}
  atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False))

  # search
  t0 = time.perf_counter()
  setup.supernet.net.calibrate(data.x_weight[:CALIBRATION_BATCH])
  graphdef, groups = split_supernet(setup.supernet)
  reporter.start("search", cfg.search.epochs)

  def on_search_epoch(epoch, row):
    reporter.advance("search", row)
    if writer is not None:
      for k, v in row.items():
        if k != "epoch":
          writer.add_scalar(f"search/{k}", v, epoch + 1)

  outcome = run_search(cfg, data, graphdef, groups, setup.objective, on_search_epoch)
  timings["search_s"] = time.perf_counter() - t0
  reporter.finish("search", f"{timings['search_s']:.1f} s")

  # derive
  supernet = merge_supernet(graphdef, outcome.groups)
  logits = jax.device_get(masked_logits(supernet))
  choices = derive_choices(logits, space.op_names, cfg.quant.w_bits, cfg.quant.a_bits)
  costs = subnet_costs(
    choices, setup.candidate_layers, setup.fixed_layers, space.op_names, setup.cost_model
  )
  subnet_doc = _subnet_document(cfg, setup, choices, costs, logits)
  atomic_write_json(run_dir / "subnet.json", subnet_doc)

  # fine-tune
  t0 = time.perf_counter()
  subnet = space.build(cfg.quant.w_bits, cfg.quant.a_bits, nnx.Rngs(cfg.seed), choices)
  subnet.inherit(supernet.net, choices, space.op_names)
  inherited_acc = accuracy(predict_logits(subnet, data.x_test), data.y_test)
  reporter.start("fine-tune", cfg.train.epochs)

  def on_train_epoch(epoch, row):
    reporter.advance("fine-tune", row)
    if writer is not None:
      for k, v in row.items():
        if k != "epoch":
          writer.add_scalar(f"finetune/{k}", v, epoch + 1)

  subnet, train_history = finetune(
    subnet, data, cfg.train, cfg.data.batch_size, cfg.seed, on_train_epoch
  )
  fq_logits = predict_logits(subnet, data.x_test)
  fq_acc = accuracy(fq_logits, data.y_test)
  timings["finetune_s"] = time.perf_counter() - t0
  reporter.finish("fine-tune", f"fake-quant test accuracy {fq_acc:.4f}")

  # export and verify in ONNX Runtime
  t0 = time.perf_counter()
  chain = chain_from_subnet(
    subnet.quantized_layers(space.op_names),
    data.input_shape,
    data.num_classes,
    {"dataset": data.name, "config": cfg.name, "target": setup.cost_model.name},
  )
  onnx_path = export_onnx(chain, run_dir / "model.onnx")
  onnx_logits = run_onnx(onnx_path, np.asarray(data.x_test))
  onnx_acc = accuracy(onnx_logits, data.y_test)
  agreement = float((onnx_logits.argmax(-1) == fq_logits.argmax(-1)).mean())
  timings["export_s"] = time.perf_counter() - t0
  reporter.finish(
    "export",
    f"ONNX Runtime test accuracy {onnx_acc:.4f} "
    f"(agrees with fake-quant on {agreement:.2%} of samples)",
  )

  result = {
    "config": cfg.name,
    "dataset": data.name,
    "space": space.name,
    "target": setup.cost_model.name,
    "metric": cfg.cost.metric,
    "test_samples": int(len(data.y_test)),
    "accuracy": {
      "inherited_fake_quant": inherited_acc,
      "fake_quant": fq_acc,
      "onnx_runtime": onnx_acc,
      "prediction_agreement": agreement,
      "onnx_minus_fake_quant_pp": 100 * (onnx_acc - fq_acc),
    },
    "cost": costs["total"],
    "subnet": [
      {"choice": n, "op": c.op, "w_bits": c.w_bits, "a_bits": c.a_bits}
      for n, c in zip(space.choice_names, choices, strict=True)
    ],
    "timings_s": timings,
    "machine": {
      "platform": platform.platform(),
      "jax_backend": jax.default_backend(),
      "devices": [str(d) for d in jax.devices()],
    },
    "search_history": outcome.history,
    "finetune_history": train_history,
  }
  if writer is not None:
    writer.add_scalar("final/fake_quant_accuracy", fq_acc, 0)
    writer.add_scalar("final/onnx_accuracy", onnx_acc, 0)
    writer.add_scalar(f"final/{cfg.cost.metric}", costs["total"][cfg.cost.metric], 0)
    writer.flush()
  atomic_write_text(run_dir / "report.md", report.render_markdown(result, subnet_doc))
  result["artifacts"] = [
    file_digest(run_dir / name)
    for name in ("config.yaml", "subnet.json", "model.onnx", "report.md")
  ]
  atomic_write_json(run_dir / "result.json", result)
  return result


def _subnet_document(
  cfg: Config, setup: Setup, choices: list[Choice], costs: dict, logits: dict
) -> dict:
  """subnet.json: per choice point the op, bits, exact cost and the final probabilities."""
  space = setup.space
  p_op = np.asarray(jax.nn.softmax(logits["op"], -1))
  layers = []
  for l, (name, c) in enumerate(zip(space.choice_names, choices, strict=True)):
    o = space.op_names.index(c.op)
    layers.append(
      {
        "choice": name,
        "op": c.op,
        "w_bits": c.w_bits,
        "a_bits": c.a_bits,
        "cost": costs["layers"][l],
        "op_probability": float(p_op[l, o]),
        "op_probabilities": {op: float(p) for op, p in zip(space.op_names, p_op[l], strict=True)},
      }
    )
  return {
    "format": "qdarts.subnet/1",
    "space": space.name,
    "space_config": config_to_dict(cfg)["space"],
    "input_shape": list(setup.data.input_shape),
    "num_classes": setup.data.num_classes,
    "w_bit_candidates": list(cfg.quant.w_bits),
    "a_bit_candidates": list(cfg.quant.a_bits),
    "target": setup.cost_model.name,
    "metric": cfg.cost.metric,
    "layers": layers,
    "fixed_layers": costs["fixed"],
    "total_cost": costs["total"],
  }
