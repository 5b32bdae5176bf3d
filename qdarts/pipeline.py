"""`qdarts search` from config to exported model: the stages in order, each writing its artifact.

Everything that can fail on bad input (config, target, dataset, space) runs in
:func:`prepare`, before the run folder exists, so a rejected run leaves nothing on disk.
"""

import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import jax
import numpy as np
import yaml
from flax import nnx

from hwcost import CostModel, CostTables, build_cost_tables
from qdarts import darts_stages, report
from qdarts.checkpoint import latest_checkpoint
from qdarts.config import Config, CostTerm, config_to_dict
from qdarts.data import Dataset, load_dataset
from qdarts.derive import (
  choices_from_selection,
  derive_within_budgets,
  subnet_costs,
  widen_free_bits,
)
from qdarts.errors import ConfigError
from qdarts.export import export_onnx, run_onnx
from qdarts.export.chain_file import save_chain
from qdarts.export.formats import export_and_verify
from qdarts.export.from_subnet import chain_from_subnet
from qdarts.finetune import accuracy, finetune, predict_logits
from qdarts.monitor import RunMonitor
from qdarts.objective import CostObjective, build_objective, check_metrics, peak_act_table
from qdarts.run_dir import atomic_write_json, atomic_write_text, file_digest
from qdarts.search import run_search
from qdarts.spaces import search_space
from qdarts.supernet import (
  ChoiceMasks,
  Supernet,
  choice_masks,
  masked_logits,
  merge_supernet,
  split_supernet,
)
from qdarts.targets import memory_budgets, resolve_target
from search_spaces import Choice, NotAChain, SearchSpace

CALIBRATION_BATCH = 256
VERIFY_BATCH = 256  # test inputs each exported artifact is checked on
FIXED_BITS = 8  # stem and classifier of every space


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
  masks: ChoiceMasks


def build_space(cfg: Config, data: Dataset) -> tuple[SearchSpace, nnx.Module]:
  """The config's search space for ``data``'s shapes, and its supernet network."""
  space = search_space(cfg.space, data.input_shape, data.num_classes)
  return space, space.build(cfg.quant.w_bits, cfg.quant.a_bits, nnx.Rngs(cfg.seed))


def is_darts(cfg: Config) -> bool:
  """A DARTS run derives a genotype and trains its final network (:mod:`qdarts.darts_stages`)."""
  return cfg.space.name == "darts"


def check_darts_terms(cfg: Config, terms) -> None:
  """Refuses budget and hinge terms for a DARTS search, in one line.

  The search network (``space.cells`` × ``space.init_channels``, partial channels) is not the
  network that is deployed (``train.cells`` × ``train.init_channels``), so a budget in the
  metric's unit would constrain the wrong network; the linear form steers the search and the
  final network's exact cost is reported.
  """
  for k, term in enumerate(terms):
    if term.form != "linear":
      where = f"cost.terms[{k}].form" if cfg.cost.terms else "cost.form"
      raise ConfigError(
        f"{where}: {term.form!r} is not available for space darts (its search network is not "
        "the final network a budget would apply to); use linear"
      )


def prepare(cfg: Config, data: Dataset | None = None) -> Setup:
  """Loads the target and data, builds the space, supernet and cost tables (no disk writes).

  ``data``: an already loaded dataset (benchmarks, tests); default: ``cfg.data``'s.
  """
  cost_model = resolve_target(cfg.cost.target)
  if is_darts(cfg):  # memory budgets are reported for the final network, not searched
    budgets, terms = {}, cfg.cost.resolved_terms()
    check_darts_terms(cfg, terms)
  else:
    budgets = memory_budgets(cost_model)
    terms = with_memory_terms(cfg.cost.resolved_terms(), budgets, cost_model)
  check_metrics(terms, cost_model)  # before the slower steps
  data = load_dataset(cfg.data, cfg.seed) if data is None else data
  space, net = build_space(cfg, data)
  candidate_layers, fixed_layers = space.candidate_layers(net), space.fixed_layers(net)
  additive = tuple(m for m in cost_model.metrics if m != "act_bytes")
  w_bits, a_bits = cfg.quant.w_bits, cfg.quant.a_bits
  tables = build_cost_tables(candidate_layers, cost_model, w_bits, a_bits, additive)
  pair_mask = tables.pair_mask
  if "peak_act_bytes" in budgets:
    _check_fixed_layers_fit(fixed_layers, cost_model, budgets["peak_act_bytes"])
    peak = peak_act_table(candidate_layers, cost_model, w_bits, a_bits, pair_mask)
    pair_mask = pair_mask & (peak <= budgets["peak_act_bytes"])
  masks = _capability_masks(tables.op_mask, pair_mask, space, cost_model, cfg)
  objective = build_objective(
    terms, tables, candidate_layers, fixed_layers, cost_model, w_bits, a_bits, pair_mask
  )
  op_rows = getattr(space, "op_logit_rows", lambda: None)()
  supernet = Supernet(net, masks, len(w_bits), len(a_bits), op_rows)
  return Setup(
    cfg,
    data,
    space,
    cost_model,
    supernet,
    tables,
    candidate_layers,
    fixed_layers,
    objective,
    masks,
  )


def with_memory_terms(terms, budgets: dict[str, float], model: CostModel) -> tuple:
  """The config's cost terms plus one ``budget`` term per memory size the target declares.

  A target's SRAM and flash sizes are hard limits of the device, so the derived SubNet must
  meet them even when the user's objective is, say, latency. Each is added as a budget term
  with λ = 0: it changes nothing while the argmax SubNet fits, its λ grows by dual ascent only
  while it does not, and the derivation moves the SubNet within it. A term the user already
  gives for that metric is left as the user wrote it.
  """
  given = {t.metric for t in terms}
  provided = set(model.metrics) | ({"peak_act_bytes"} if "act_bytes" in model.metrics else set())
  extra = tuple(
    CostTerm(metric=m, form="budget", weight=0.0, budget=b)
    for m, b in budgets.items()
    if m not in given and m in provided
  )
  return tuple(terms) + extra


def _check_fixed_layers_fit(fixed_layers, cost_model: CostModel, sram_bytes: float) -> None:
  """A layer every SubNet has (stem, classifier) whose activations exceed SRAM: no SubNet fits."""
  for spec in fixed_layers:
    need = cost_model.cost(spec, FIXED_BITS, FIXED_BITS).values["act_bytes"]
    if need > sram_bytes:
      raise ConfigError(
        f"cost.target: layer {spec.name!r} needs {need:,.0f} bytes of activations, more than "
        f"target {cost_model.name!r}'s memory.sram_kib ({sram_bytes / 1024:,.0f} KiB); no "
        "SubNet of this space fits it (use a smaller input or stem)"
      )


def _capability_masks(op_mask, pair_mask, space, cost_model: CostModel, cfg: Config):
  """The logit masks that keep the search within what the target runs and holds.

  Raises ConfigError when a choice point is left with no runnable candidate, or when an op's
  runnable pairs are not a product of weight and activation widths (separate logits cannot
  express that set exactly; the message lists the pairs to choose from).
  """
  masks, not_product = choice_masks(op_mask, pair_mask)
  w_bits, a_bits = cfg.quant.w_bits, cfg.quant.a_bits
  if not_product:
    l, o = not_product[0]
    pairs = ", ".join(f"w{w_bits[i]}a{a_bits[j]}" for i, j in np.argwhere(pair_mask[l, o]))
    raise ConfigError(
      f"quant: target {cost_model.name!r} runs {space.op_names[o]} at "
      f"{space.choice_names[l]} only at {pairs}: not every combination of the allowed "
      "quant.w_bits and quant.a_bits; choose widths whose combinations it all runs"
    )
  empty = np.flatnonzero(~masks.op.any(axis=1))
  if empty.size:
    raise ConfigError(
      f"quant: target {cost_model.name!r} can run no candidate of {space.choice_names[empty[0]]} "
      f"at any of w_bits {list(w_bits)} × a_bits {list(a_bits)} (unsupported precisions or "
      "activations larger than its SRAM)"
    )
  return masks


def _epoch_logger(stage: str, reporter: Reporter, monitor: RunMonitor) -> Callable[..., None]:
  """Sends one epoch's metrics to the progress display, and them (with the search's logits)
  to the run's TensorBoard events and probability history (:mod:`qdarts.monitor`)."""

  def on_epoch(epoch: int, row: dict, logits: dict | None = None) -> None:
    reporter.advance(stage, row)
    monitor.log_epoch(stage, epoch, row, logits)

  return on_epoch


def run(
  setup: Setup,
  run_dir: Path,
  reporter: Reporter | None = None,
  writer=None,
  resume: bool = False,
) -> dict:
  """Runs search → derive → fine-tune → export → verify → report in ``run_dir``.

  The search checkpoints into ``run_dir/checkpoints``; ``resume`` continues from the newest
  one (the later stages are deterministic and rerun).

  Each stage writes its artifact atomically as soon as it is done. Returns the result dict
  also written to ``result.json``. TensorBoard events go to ``writer`` (a tensorboardX
  ``SummaryWriter``), or to ``run_dir/events`` when it is None (:mod:`qdarts.monitor`).
  """
  reporter = reporter or SilentReporter()
  cfg = setup.cfg
  timings: dict[str, float] = {}
  atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
  monitor = RunMonitor.for_setup(setup, run_dir, writer)

  t0 = time.perf_counter()
  supernet, history, objective = _search(setup, reporter, monitor, run_dir, resume)
  timings["search_s"] = time.perf_counter() - t0
  reporter.finish("search", f"{timings['search_s']:.1f} s")

  if is_darts(cfg):
    records, costs, subnet_doc, genotype = _derive_darts(setup, supernet)
  else:
    choices, costs, subnet_doc = _derive(setup, supernet, objective)
    records = [_layer_record(setup, l, c) for l, c in enumerate(choices)]
  atomic_write_json(run_dir / "subnet.json", subnet_doc)

  t0 = time.perf_counter()
  if is_darts(cfg):
    reporter.start("train", cfg.train.epochs)
    subnet, fq_logits, accuracies, train_history = darts_stages.train_final(
      genotype, cfg, setup.data, _epoch_logger("train", reporter, monitor)
    )
    stage = "train"
  else:
    subnet, fq_logits, accuracies, train_history = _finetune(
      setup, supernet, choices, reporter, monitor
    )
    stage = "fine-tune"
  timings["finetune_s"] = time.perf_counter() - t0
  reporter.finish(stage, f"fake-quant test accuracy {accuracies['fake_quant']:.4f}")

  t0 = time.perf_counter()
  verification = {}
  try:
    export_skipped = None
    if is_darts(cfg):  # a DAG: subnet.npz holds its graph (qdarts.export.graph_ir)
      exported, verification, export_skipped = darts_stages.export_final(
        subnet, setup.data, _export_metadata(setup), run_dir, cfg.export.formats, fq_logits,
        VERIFY_BATCH, cfg.export.tflite_filters,
      )  # fmt: skip
    else:
      exported, verification = _export_and_verify(setup, subnet, run_dir, fq_logits)
    accuracies.update(exported)
    summary = (
      f"ONNX Runtime test accuracy {accuracies['onnx_runtime']:.4f} (agrees with fake-quant "
      f"on {accuracies['prediction_agreement']:.2%} of samples)"
    )
  except NotAChain as err:  # DARTS cells: the chain exporter cannot write them yet
    export_skipped = f"ONNX export skipped: {err}"
    summary = export_skipped
  timings["export_s"] = time.perf_counter() - t0
  reporter.finish("export", summary)

  result = _result_document(
    setup, records, costs, objective, accuracies, timings, history, train_history
  )
  result["export_skipped"] = export_skipped
  result["export_verification"] = verification
  monitor.finish(result)
  report.write_report(run_dir, result, subnet_doc)
  result["artifacts"] = run_artifacts(run_dir)
  atomic_write_json(run_dir / "result.json", result)
  return result


def _result_document(
  setup: Setup,
  records: list[dict],
  costs: dict,
  objective: CostObjective,
  accuracies: dict,
  timings: dict,
  history: list,
  train_history: list,
) -> dict:
  """result.json, less the artifact list (added once every artifact is written)."""
  cfg = setup.cfg
  return {
    "config": cfg.name,
    "dataset": setup.data.name,
    "space": setup.space.name,
    "target": setup.cost_model.name,
    "metric": setup.objective.metrics[0],
    "test_samples": int(len(setup.data.y_test)),
    "accuracy": accuracies,
    "cost": costs["total"],
    "cost_terms": _term_records(objective, costs["total"]),
    "cost_provenance": costs["provenance"],
    "measured_latency_share": costs["measured_latency_share"],
    "cost_of_costliest_subnet": {
      m: float(r) for m, r in zip(setup.objective.metrics, setup.objective.reference, strict=True)
    },
    "subnet": records,
    "timings_s": timings,
    "machine": {
      "platform": platform.platform(),
      "jax_backend": jax.default_backend(),
      "devices": [str(d) for d in jax.devices()],
    },
    "search_history": history,
    "finetune_history": train_history,
  }


def _search(
  setup: Setup, reporter: Reporter, writer, run_dir: Path, resume: bool
) -> tuple[Supernet, list[dict], CostObjective]:
  """Calibrates the quantizers, runs the bilevel search (from the run's newest checkpoint when
  ``resume``), returns the trained supernet."""
  cfg = setup.cfg
  setup.supernet.net.calibrate(setup.data.to_input(setup.data.x_weight[:CALIBRATION_BATCH]))
  graphdef, groups = split_supernet(setup.supernet)
  checkpoints = run_dir / "checkpoints"
  resume_from = latest_checkpoint(checkpoints) if resume else None
  reporter.start("search", cfg.search.epochs)
  on_epoch = _epoch_logger("search", reporter, writer)
  outcome = run_search(
    cfg,
    setup.data,
    graphdef,
    groups,
    setup.objective,
    on_epoch,
    checkpoint_dir=checkpoints,
    resume_from=resume_from,
  )
  return merge_supernet(graphdef, outcome.groups), outcome.history, outcome.objective


def _derive(setup: Setup, supernet: Supernet, objective: CostObjective):
  """The derived SubNet (the argmax, moved within budget terms if needed, then bits the target
  charges nothing for added), its exact costs, and the subnet.json document."""
  cfg, space = setup.cfg, setup.space
  logits = jax.device_get(masked_logits(supernet))
  allowed = (
    setup.masks.op[..., None, None] & setup.masks.w[..., :, None] & setup.masks.a[..., None, :]
  )
  sel, adjusted = derive_within_budgets(logits, objective, allowed)
  sel, widened = widen_free_bits(sel, objective, allowed, cfg.quant.w_bits, cfg.quant.a_bits)
  choices = choices_from_selection(sel, space.op_names, cfg.quant.w_bits, cfg.quant.a_bits)
  costs = subnet_costs(
    choices, setup.candidate_layers, setup.fixed_layers, space.op_names, setup.cost_model
  )
  doc = _subnet_document(cfg, setup, choices, costs, logits)
  doc["moved_within_budget"] = adjusted
  doc["bits_widened_at_no_cost"] = widened  # choice points (derive.widen_free_bits)
  return choices, costs, doc


def _derive_darts(setup: Setup, supernet: Supernet):
  """The derived genotype, its records (result.json), exact costs of its final network and the
  subnet.json document (:mod:`qdarts.darts_stages`)."""
  genotype, logits = darts_stages.derive(supernet, setup.cfg)
  genes, costs = darts_stages.genotype_costs(genotype, setup.cfg, setup.data, setup.cost_model)
  doc = {
    **_subnet_header(setup.cfg, setup),
    **darts_stages.subnet_document(setup, genotype, logits, genes, costs),
  }
  return darts_stages.gene_records(genes), costs, doc, genotype


def _finetune(
  setup: Setup, supernet: Supernet, choices: list[Choice], reporter: Reporter, writer
) -> tuple[nnx.Module, np.ndarray, dict, list[dict]]:
  """Builds the SubNet, inherits the supernet's weights, fine-tunes it, evaluates it.

  Returns the trained SubNet, its fake-quant test logits, accuracies and history.
  """
  cfg, space, data = setup.cfg, setup.space, setup.data
  subnet = space.build(cfg.quant.w_bits, cfg.quant.a_bits, nnx.Rngs(cfg.seed), choices)
  subnet.inherit(supernet.net, choices, space.op_names)
  inherited = accuracy(predict_logits(subnet, data.x_test, input_spec=data.eval_spec), data.y_test)
  reporter.start("fine-tune", cfg.train.epochs)
  on_epoch = _epoch_logger("fine-tune", reporter, writer)
  subnet, history = finetune(subnet, data, cfg.train, cfg.data.batch_size, cfg.seed, on_epoch)
  logits = predict_logits(subnet, data.x_test, input_spec=data.eval_spec)
  accuracies = {"inherited_fake_quant": inherited, "fake_quant": accuracy(logits, data.y_test)}
  return subnet, logits, accuracies, history


def _export_metadata(setup: Setup) -> dict[str, str]:
  """What every exported model records: dataset, config, target, input spec, data section."""
  data = setup.data
  return {
    "dataset": data.name,
    "config": setup.cfg.name,
    "target": setup.cost_model.name,
    **data.eval_spec.metadata(),  # what the float input is: pixels/255 (see qdarts.datasets)
    "data": data_metadata(setup.cfg),  # how `qdarts eval` rebuilds the same test split
  }


def _export_and_verify(
  setup: Setup, subnet: nnx.Module, run_dir: Path, fq_logits: np.ndarray
) -> tuple[dict, dict]:
  """Writes subnet.npz and model.onnx, runs the model in ONNX Runtime on the test split, and
  writes and verifies every configured format. Returns the accuracies and the verification
  records of :func:`~qdarts.export.formats.export_and_verify`."""
  data = setup.data
  chain = chain_from_subnet(
    subnet.quantized_layers(setup.space.op_names),
    data.input_shape,
    data.num_classes,
    _export_metadata(setup),
  )
  save_chain(chain, run_dir / "subnet.npz")  # what `qdarts export` rebuilds every format from
  onnx_input = np.asarray(data.to_input(data.x_test))
  onnx_logits = run_onnx(export_onnx(chain, run_dir / "model.onnx"), onnx_input)
  onnx_acc = accuracy(onnx_logits, data.y_test)
  fq_acc = accuracy(fq_logits, data.y_test)
  # every configured format, run in its runtime and checked against the integer model
  verification = export_and_verify(
    chain, run_dir, setup.cfg.export.formats, onnx_input[:VERIFY_BATCH],
    tflite_filters=setup.cfg.export.tflite_filters,
  )  # fmt: skip
  accuracies = {
    "onnx_runtime": onnx_acc,
    "prediction_agreement": float((onnx_logits.argmax(-1) == fq_logits.argmax(-1)).mean()),
    "onnx_minus_fake_quant_pp": 100 * (onnx_acc - fq_acc),
  }
  return accuracies, verification


def run_artifacts(run_dir: Path) -> list[dict]:
  """Path, size and SHA-256 of every file the run wrote (result.json, events/ and
  checkpoints/ aside)."""
  files = sorted(
    p
    for p in run_dir.rglob("*")
    if p.is_file()
    and p.name != "result.json"
    and not {"events", "checkpoints"} & set(p.relative_to(run_dir).parts)
  )
  return [{**file_digest(p), "path": str(p.relative_to(run_dir))} for p in files]


def data_metadata(cfg: Config) -> str:
  """The ``data`` section and seed as JSON, without the machine-specific ``data_dir``."""
  section = {k: v for k, v in config_to_dict(cfg)["data"].items() if k != "data_dir"}
  return json.dumps({**section, "seed": cfg.seed})


def _term_records(objective: CostObjective, totals: dict) -> list[dict]:
  """Each cost term with its final λ, the derived SubNet's exact cost and, for budgets,
  whether the SubNet meets it."""
  records = []
  for k, (metric, form) in enumerate(zip(objective.metrics, objective.forms, strict=True)):
    record = {
      "metric": metric,
      "form": form,
      "weight": float(objective.weight[k]),
      "derived": totals[metric],
    }
    if form in ("hinge", "budget"):
      record["budget"] = float(objective.budget[k])
      record["met"] = bool(totals[metric] <= record["budget"])
    records.append(record)
  return records


def _layer_record(setup: Setup, l: int, choice: Choice) -> dict:
  """Choice point l's op and bits; bits are null for an op without quantized layers (skip)."""
  quantized = bool(setup.candidate_layers[l][setup.space.op_names.index(choice.op)])
  return {
    "choice": setup.space.choice_names[l],
    "op": choice.op,
    "w_bits": choice.w_bits if quantized else None,
    "a_bits": choice.a_bits if quantized else None,
  }


def _subnet_document(
  cfg: Config, setup: Setup, choices: list[Choice], costs: dict, logits: dict
) -> dict:
  """subnet.json: per choice point the op, bits, exact cost and the final probabilities."""
  space = setup.space
  p_op = np.asarray(jax.nn.softmax(logits["op"], -1))
  layers = []
  for l, c in enumerate(choices):
    o = space.op_names.index(c.op)
    layers.append(
      {
        **_layer_record(setup, l, c),
        "cost": costs["layers"][l],
        "op_probability": float(p_op[l, o]),
        "op_probabilities": {op: float(p) for op, p in zip(space.op_names, p_op[l], strict=True)},
      }
    )
  return {
    **_subnet_header(cfg, setup),
    "layers": layers,
    "fixed_layers": costs["fixed"],
    "total_cost": costs["total"],
  }


def _subnet_header(cfg: Config, setup: Setup) -> dict:
  """The fields every subnet.json starts with: the space, shapes, candidates and target."""
  return {
    "format": "qdarts.subnet/1",
    "space": setup.space.name,
    "space_config": config_to_dict(cfg)["space"],
    "input_shape": list(setup.data.input_shape),
    "num_classes": setup.data.num_classes,
    "w_bit_candidates": list(cfg.quant.w_bits),
    "a_bit_candidates": list(cfg.quant.a_bits),
    "target": setup.cost_model.name,
    "metric": setup.objective.metrics[0],
  }
