"""The DARTS stages of ``qdarts search``: derive a genotype with bits, cost it, train it.

A chain space's SubNet is its supernet with one op per choice point, so it inherits the
supernet's weights and is fine-tuned. A DARTS search network is not the network one deploys:
the PC-DARTS rule derives a genotype (two genes per node, bits per gene and cell type) and the
final network of ``train.cells`` cells of ``train.init_channels`` channels (the paper: 20 × 36
for CIFAR-10) is built from it and trained from scratch (Liu et al. 2019, section 3; Xu et al.
2020, section 4.2). Its exact cost on the target is the cost of that final network.
"""

from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from hwcost import CostModel
from qdarts.config import Config
from qdarts.data import Dataset
from qdarts.derive import grouped_costs
from qdarts.export.formats import GRAPH_FORMATS, export_and_verify
from qdarts.export.from_darts import graph_from_darts
from qdarts.export.graph_file import save_graph
from qdarts.export.graph_onnx import export_graph_onnx
from qdarts.export.onnx import run_onnx
from qdarts.finetune import accuracy, finetune, predict_logits
from qdarts.monitor import softmax
from qdarts.supernet import Supernet, masked_logits
from search_spaces.darts import edge_offset
from search_spaces.darts_final import GeneLayers, build_final, final_layer_specs
from search_spaces.darts_genotype import Genotype, derive_genotype

CALIBRATION_BATCH = 256
STEM_MULTIPLIER = 3  # DartsSpace's default (stem channels = 3·C); not a config field


def derive(supernet: Supernet, cfg: Config) -> tuple[Genotype, dict]:
  """The PC-DARTS genotype of the trained search network, and the masked logits it came from.

  Ops: per node the two strongest in-edges, each with its strongest op other than ``none``;
  bits: per (cell type, edge, op) the most probable width over the search cells of that type
  (:func:`search_spaces.darts_genotype.derive_genotype`).
  """
  logits = jax.device_get(masked_logits(supernet))
  q = cfg.quant
  genotype = derive_genotype(
    supernet.net, softmax(np.asarray(logits["op"])), logits["w"], logits["a"], q.w_bits, q.a_bits
  )
  return genotype, logits


def final_network_layers(genotype: Genotype, cfg: Config, data: Dataset):
  """``(genes, fixed)``: :func:`~search_spaces.darts_final.final_layer_specs` of the final
  network the config's ``train`` section describes."""
  return final_layer_specs(
    genotype,
    data.input_shape,
    data.num_classes,
    cells=cfg.train.cells,
    init_channels=cfg.train.init_channels,
    stem_multiplier=STEM_MULTIPLIER,
  )


def genotype_costs(
  genotype: Genotype, cfg: Config, data: Dataset, cost_model: CostModel
) -> tuple[list[GeneLayers], dict]:
  """The final network's genes and its exact costs (:func:`qdarts.derive.grouped_costs`: one
  entry per gene, summed over the cells of its type; stem, preprocess convs and classifier
  fixed at 8 bits)."""
  genes, fixed = final_network_layers(genotype, cfg, data)
  groups = [(g.specs, g.w_bits, g.a_bits) for g in genes]
  return genes, grouped_costs(groups, fixed, cost_model)


def gene_records(genes: list[GeneLayers]) -> list[dict]:
  """result.json's ``subnet``: per gene its name, op and bits (None for ops without convs)."""
  return [{"choice": g.name, "op": g.op, "w_bits": g.w_bits, "a_bits": g.a_bits} for g in genes]


def _gene_probabilities(setup, logits: dict, genotype: Genotype) -> list[np.ndarray]:
  """Per gene, the search's op probabilities on its edge (one row: op logits are shared per
  cell type)."""
  space, p_op = setup.space, softmax(np.asarray(logits["op"]))
  first = {plan.reduction: plan.index for plan in reversed(space.plans)}  # a cell of each type
  rows = []
  for reduction, genes in ((False, genotype.normal), (True, genotype.reduce)):
    for k, (_, src, _, _) in enumerate(genes):
      edge = edge_offset(k // 2) + src
      rows.append(p_op[first[reduction] * space.edges_per_cell + edge])
  return rows


def subnet_document(setup, genotype: Genotype, logits: dict, genes, costs: dict) -> dict:
  """subnet.json of a DARTS run: the genotype with bits, the final network's size, and per gene
  its exact cost in the final network and the op probabilities on its edge."""
  cfg, space = setup.cfg, setup.space
  layers = []
  for g, record, cost, p in zip(
    genes, gene_records(genes), costs["layers"], _gene_probabilities(setup, logits, genotype),
    strict=True,
  ):  # fmt: skip
    layers.append(
      {
        **record,
        "cost": cost,
        "convs": len(g.specs),
        "op_probability": float(p[space.op_names.index(g.op)]),
        "op_probabilities": {op: float(v) for op, v in zip(space.op_names, p, strict=True)},
      }
    )
  return {
    "genotype": genotype.to_dict(),
    "final_network": {
      "cells": cfg.train.cells,
      "init_channels": cfg.train.init_channels,
      "stem_multiplier": space.stem_multiplier,
    },
    "layers": layers,
    "fixed_layers": costs["fixed"],
    "total_cost": costs["total"],
  }


def build_final_network(genotype: Genotype, cfg: Config, data: Dataset) -> nnx.Module:
  """The final network (running BatchNorm statistics), its activation steps calibrated."""
  net = build_final(
    genotype,
    data.input_shape,
    data.num_classes,
    nnx.Rngs(cfg.seed),
    cells=cfg.train.cells,
    init_channels=cfg.train.init_channels,
    stem_multiplier=STEM_MULTIPLIER,
  )
  net.calibrate(data.to_input(data.x_train[:CALIBRATION_BATCH]))
  return net


def train_final(
  genotype: Genotype,
  cfg: Config,
  data: Dataset,
  on_epoch: Callable | None = None,
  checkpoint_dir: Path | None = None,
  resume: bool = False,
) -> tuple[nnx.Module, np.ndarray, dict, list[dict]]:
  """Trains the genotype's final network from scratch with the ``train`` section (QAT at the
  genotype's bits, on both halves of the training split; checkpoints as
  :func:`qdarts.finetune.finetune`); returns the network, its fake-quant test logits,
  accuracies and per-epoch history."""
  net = build_final_network(genotype, cfg, data)
  net, history = finetune(
    net, data, cfg.train, cfg.data.batch_size, cfg.seed, on_epoch, checkpoint_dir, resume
  )
  logits = predict_logits(net, data.x_test, input_spec=data.eval_spec)
  return net, logits, {"fake_quant": accuracy(logits, data.y_test)}, history


def export_final(
  net: nnx.Module,
  data: Dataset,
  metadata: dict,
  run_dir: Path,
  formats,
  fq_logits: np.ndarray,
  verify_batch: int = 256,
  tflite_filters: str = "int8",
) -> tuple[dict, dict, str | None]:
  """The trained final network's export, as ``qdarts search`` does it for a chain SubNet.

  Writes ``subnet.npz`` (its :class:`~qdarts.export.graph_ir.QuantizedGraph`, what
  ``qdarts export`` rebuilds from) and ``model.onnx``, runs the model in ONNX Runtime on the
  test split, and checks every configured format it can write against the integer model
  (:func:`~qdarts.export.formats.export_and_verify`); a configured format that does not write
  DAGs (none now: :data:`~qdarts.export.formats.GRAPH_FORMATS`) would be skipped.

  Args:
    net: the trained :class:`~search_spaces.darts_final.DartsFinalNet`.
    data: the dataset (its test split is the ONNX accuracy's).
    metadata: string pairs recorded into the model (dataset, config, data, ...).
    run_dir: the run folder.
    formats: the configured export formats.
    fq_logits: the fake-quant test logits of ``net`` (evaluation mode).
    verify_batch: test inputs each artifact is checked on.
    tflite_filters: ``export.tflite_filters`` (:data:`~qdarts.export.formats.TFLITE_FILTERS`).

  Returns:
    ``(accuracies, verification, skipped)``: ``onnx_runtime``, ``prediction_agreement`` and
    ``onnx_minus_fake_quant_pp``; the verification records; a line naming the skipped formats
    (None when none was).
  """
  graph = graph_from_darts(net, data.input_shape, data.num_classes, metadata)
  save_graph(graph, run_dir / "subnet.npz")
  onnx_input = np.asarray(data.to_input(data.x_test))
  onnx_logits = run_onnx(export_graph_onnx(graph, run_dir / "model.onnx"), onnx_input)
  onnx_acc, fq_acc = accuracy(onnx_logits, data.y_test), accuracy(fq_logits, data.y_test)
  writable = [f for f in formats if f in GRAPH_FORMATS]
  skipped = [f for f in formats if f not in GRAPH_FORMATS]
  verification = export_and_verify(
    graph, run_dir, writable, onnx_input[:verify_batch], tflite_filters=tflite_filters
  )
  accuracies = {
    "onnx_runtime": onnx_acc,
    "prediction_agreement": float((onnx_logits.argmax(-1) == fq_logits.argmax(-1)).mean()),
    "onnx_minus_fake_quant_pp": 100 * (onnx_acc - fq_acc),
  }
  note = None
  if skipped:
    note = f"{', '.join(skipped)} export skipped: DARTS networks export to " + ", ".join(
      GRAPH_FORMATS
    )
  return accuracies, verification, note
