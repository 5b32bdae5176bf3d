"""``qdarts train``: the final training of a searched DARTS genotype, as a run of its own.

A DARTS search ends with a short training of its final network; the paper's evaluation trains
the genotype far longer (CIFAR-10: 600 epochs, 20 cells of 36 channels; configs/
cifar10_darts_train.yaml). This runs that training from a search's run folder (or its
subnet.json, or a genotype JSON) with any config's ``data``, ``train`` and ``cost`` sections,
checkpointing every epoch so that ``qdarts train --resume RUN`` continues where it stopped.

Run folder: ``config.yaml``, ``genotype.json``, ``checkpoints/``, ``events/`` (TensorBoard
scalars per epoch), ``result.json`` (test accuracy, the final network's exact cost on the
target, history, artifacts).
"""

import json
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import yaml

from hwcost import CostModel
from qdarts import darts_stages
from qdarts.config import Config, config_to_dict
from qdarts.data import Dataset, load_dataset
from qdarts.errors import ConfigError
from qdarts.run_dir import atomic_write_json, atomic_write_text, file_digest, new_run_dir
from qdarts.targets import resolve_target
from search_spaces.darts_genotype import Genotype

GENOTYPE_FILE = "genotype.json"


def read_genotype(source: Path) -> Genotype:
  """The genotype in ``source``: a DARTS run folder of ``qdarts search`` (its subnet.json), a
  subnet.json, or a JSON file of :meth:`Genotype.to_dict`'s form.

  Raises:
    ConfigError: no such file, not JSON, or not a genotype (the message names the file).
  """
  source = Path(source)
  path = source / "subnet.json" if source.is_dir() else source
  if not path.is_file():
    raise ConfigError(
      f"{source}: no such file (expected a DARTS run folder of `qdarts search`, its "
      "subnet.json or a genotype JSON file)"
    )
  try:
    doc = json.loads(path.read_text())
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
    raise ConfigError(f"{path}: not a JSON file ({err.__class__.__name__})") from None
  if isinstance(doc, dict) and "genotype" not in doc and "layers" in doc:
    raise ConfigError(f"{path}: a SubNet of space {doc.get('space')!r}, not a DARTS genotype")
  return Genotype.from_dict(doc.get("genotype", doc) if isinstance(doc, dict) else doc, str(path))


@dataclass
class TrainSetup:
  """What a training run needs, built (and checked) before the run folder is written."""

  cfg: Config
  genotype: Genotype
  data: Dataset
  cost_model: CostModel
  costs: dict


def prepare_training(cfg: Config, genotype: Genotype, data: Dataset | None = None) -> TrainSetup:
  """Loads the target and the data and costs the final network (no disk writes).

  Raises:
    ConfigError: the config is not a DARTS config, or its target cannot cost the network.
  """
  if cfg.space.name != "darts":
    raise ConfigError(
      f"space.name: `qdarts train` trains a DARTS genotype; the config must say darts, not "
      f"{cfg.space.name!r} (e.g. configs/cifar10_darts_train.yaml)"
    )
  cost_model = resolve_target(cfg.cost.target)
  data = load_dataset(cfg.data, cfg.seed) if data is None else data
  _, costs = darts_stages.genotype_costs(genotype, cfg, data, cost_model)
  return TrainSetup(cfg, genotype, data, cost_model, costs)


def run_training(setup: TrainSetup, run_dir: Path, reporter=None, resume: bool = False) -> dict:
  """Trains the final network in ``run_dir`` (from its newest checkpoint when ``resume``),
  evaluates it on the test split and writes result.json; returns the result."""
  cfg = setup.cfg
  run_dir = new_run_dir(Path(run_dir), cfg.name)  # exists after this (RunFolderError if not)
  atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
  atomic_write_json(run_dir / GENOTYPE_FILE, setup.genotype.to_dict())
  writer = _event_writer(run_dir)
  if reporter is not None:
    reporter.start("train", cfg.train.epochs)

  def on_epoch(epoch: int, row: dict) -> None:
    if reporter is not None:
      reporter.advance("train", row)
    if writer is not None:
      for key, value in row.items():
        if key != "epoch":
          writer.add_scalar(f"train/{key}", value, epoch + 1)
      writer.flush()

  t0 = time.perf_counter()
  try:
    _, _, accuracies, history = darts_stages.train_final(
      setup.genotype, cfg, setup.data, on_epoch, run_dir / "checkpoints", resume
    )
  finally:
    if writer is not None:
      writer.close()
  train_s = time.perf_counter() - t0
  if reporter is not None:
    reporter.finish("train", f"fake-quant test accuracy {accuracies['fake_quant']:.4f}")
  result = {
    "config": cfg.name,
    "dataset": setup.data.name,
    "target": setup.cost_model.name,
    "test_samples": int(len(setup.data.y_test)),
    "final_network": {"cells": cfg.train.cells, "init_channels": cfg.train.init_channels},
    "genotype": setup.genotype.to_dict(),
    "accuracy": accuracies,
    "cost": setup.costs["total"],
    "cost_provenance": setup.costs["provenance"],
    "history": history,
    "timings_s": {"train_s": train_s},
    "machine": {"jax_backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()]},
  }
  result["artifacts"] = [
    {**file_digest(p), "path": p.name} for p in (run_dir / "config.yaml", run_dir / GENOTYPE_FILE)
  ]
  atomic_write_json(run_dir / "result.json", result)
  return result


def _event_writer(run_dir: Path):
  """A tensorboardX writer for ``run_dir/events``, or None where tensorboardX is missing."""
  try:
    from tensorboardX import SummaryWriter  # noqa: PLC0415
  except ImportError:
    return None
  return SummaryWriter(str(run_dir / "events"))
