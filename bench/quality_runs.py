"""The training units of the search-quality benchmark (``bench/quality.py``).

Two kinds of unit, each written to its own folder with a ``result.json`` (so a rerun skips it):

* a **search** unit is one :func:`qdarts.pipeline.run` (search → derive → fine-tune → ONNX
  export) of a generated config: the joint search, the 8-bit "full-precision" search and the
  bits-only search on a fixed network;
* a **fixed** unit trains one given SubNet (a list of :class:`~search_spaces.Choice`) from a
  fresh initialisation with the final schedule every method's SubNet gets: ``train.epochs``
  epochs of QAT on the whole training split, then its fake-quant and ONNX Runtime test accuracy.
  Training every method's SubNet from scratch with one schedule (the NAS evaluation protocol of
  DARTS) compares the architectures the methods choose, not how their weights were obtained;
* a **screen** unit (random search) trains a SubNet for ``search.epochs`` epochs on the weight
  half of the training split and scores it on the other half (validation).
"""

import dataclasses
import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from flax import nnx

from qdarts import pipeline
from qdarts.config import Config, TrainConfig, load_config
from qdarts.data import Dataset
from qdarts.derive import subnet_costs
from qdarts.export import export_onnx, run_onnx
from qdarts.export.from_subnet import chain_from_subnet
from qdarts.finetune import accuracy, finetune, predict_logits
from qdarts.run_dir import atomic_write_json
from search_spaces import Choice

CALIBRATION_BATCH = pipeline.CALIBRATION_BATCH


@dataclass(frozen=True)
class SpaceSpec:
  """A chain space: a fixed stem and choice layers (``search_spaces.chain`` file format).

  Attributes:
    stem: ``{channels, kernel, stride}``.
    layers: per layer ``{channels, stride, candidates}``.
  """

  stem: dict
  layers: tuple[dict, ...]

  def document(self, name: str, ops: list[str] | None = None) -> dict:
    """The chain-space YAML document; with ``ops``, one candidate per layer (a fixed network)."""
    layers = [
      {**layer, "candidates": list(layer["candidates"]) if ops is None else [ops[i]]}
      for i, layer in enumerate(self.layers)
    ]
    return {"schema_version": 1, "name": name, "stem": dict(self.stem), "layers": layers}


@dataclass(frozen=True)
class Schedule:
  """What every method shares: data, search epochs, fine-tune epochs (one seed varies)."""

  dataset: str
  data_dir: str | None
  subset: int | None
  test_subset: int | None
  batch_size: int
  search_epochs: int
  warmup_epochs: int
  train_epochs: int
  search_overrides: tuple[str, ...] = ()  # extra dotted overrides of every search (tau, lr)


def write_space(path: Path, doc: dict) -> Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(yaml.safe_dump(doc, sort_keys=False))
  return path


def search_config(
  space_file: Path,
  schedule: Schedule,
  seed: int,
  target: str,
  metric: str,
  bits: tuple[int, ...],
  budget: float | None,
) -> Config:
  """The config of one search unit: a budget term on ``metric`` (linear λ=0 without budget,
  for reading the costliest SubNet's cost)."""
  overrides = [
    f"seed={seed}",
    "space.name=chain",
    f"space.file={space_file}",
    f"data.dataset={schedule.dataset}",
    f"data.batch_size={schedule.batch_size}",
    f"quant.w_bits={list(bits)}",
    f"quant.a_bits={list(bits)}",
    f"search.epochs={schedule.search_epochs}",
    f"search.warmup_epochs={schedule.warmup_epochs}",
    f"train.epochs={schedule.train_epochs}",
    f"cost.target={target}",
    f"cost.metric={metric}",
    "export.formats=[onnx]",
    "search.checkpoint_every=0",
    "search.keep_checkpoints=1",
    *schedule.search_overrides,
  ]
  if budget is None:
    overrides += ["cost.form=linear", "cost.weight=0.0"]
  else:
    overrides += ["cost.form=budget", f"cost.budget={budget!r}"]
  for key in ("data_dir", "subset", "test_subset"):
    value = getattr(schedule, key)
    if value is not None:
      overrides.append(f"data.{key}={value}")
  # the packaged quickstart is the base: every field the bench does not set keeps its default
  from importlib import resources  # noqa: PLC0415

  base = Path(str(resources.files("qdarts.configs") / "quickstart.yaml"))
  if not base.exists():
    base = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"
  return dataclasses.replace(load_config(base, overrides), name="quality")


def load_result(run_dir: Path) -> dict | None:
  path = run_dir / "result.json"
  return json.loads(path.read_text()) if path.exists() else None


def fresh_dir(run_dir: Path) -> Path:
  """An empty ``run_dir`` (what an interrupted unit left there is removed)."""
  if run_dir.exists():
    shutil.rmtree(run_dir)
  run_dir.mkdir(parents=True)
  return run_dir


def run_search_unit(cfg: Config, data: Dataset, run_dir: Path) -> dict:
  """One pipeline run in ``run_dir`` (its result.json), the run's checkpoints removed."""
  result = pipeline.run(pipeline.prepare(cfg, data), fresh_dir(run_dir))
  shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
  return result


def choices_of(result: dict) -> list[Choice]:
  """A search unit's derived SubNet (a skip's bits, null in result.json, as 8)."""
  return [Choice(r["op"], r["w_bits"] or 8, r["a_bits"] or 8) for r in result["subnet"]]


def choices_key(choices: list[Choice]) -> str:
  """A short, stable folder name for a SubNet."""
  return "-".join(f"{c.op}.w{c.w_bits}a{c.a_bits}" for c in choices)


def run_fixed_unit(
  setup: pipeline.Setup,
  choices: list[Choice],
  seed: int,
  run_dir: Path,
  screen_only: bool = False,
) -> dict:
  """Trains and evaluates one fixed SubNet of ``setup``'s space (module docstring).

  ``setup``: a prepared joint-search setup (space, data, optimizers); ``seed`` seeds the
  initialisation and batch order. Writes and returns ``result.json``: ``subnet``,
  ``timings_s``, and either ``val_accuracy`` (``screen_only``: search-length training on the
  weight half, fake-quant accuracy on the arch half) or ``accuracy.{fake_quant, onnx_runtime}``
  on the test split after the final schedule, with its ``finetune_history``.
  """
  cfg, data, space = setup.cfg, setup.data, setup.space
  fresh_dir(run_dir)
  t0 = time.perf_counter()
  subnet = space.build(cfg.quant.w_bits, cfg.quant.a_bits, nnx.Rngs(seed), choices)
  subnet.calibrate(data.to_input(data.x_weight[:CALIBRATION_BATCH]))
  record = {"subnet": [dataclasses.asdict(c) for c in choices]}
  if screen_only:
    se = cfg.search
    screen_cfg = TrainConfig(
      epochs=se.epochs,
      optimizer=se.weight_optimizer,
      lr=cfg.train.lr,
      momentum=se.weight_momentum,
      weight_decay=se.weight_decay,
    )
    weight_half = dataclasses.replace(data, x_arch=data.x_arch[:0], y_arch=data.y_arch[:0])
    subnet, _ = finetune(subnet, weight_half, screen_cfg, cfg.data.batch_size, seed)
    val = accuracy(predict_logits(subnet, data.x_arch, input_spec=data.eval_spec), data.y_arch)
    result = {**record, "val_accuracy": val, "timings_s": {"screen_s": time.perf_counter() - t0}}
    atomic_write_json(run_dir / "result.json", result)
    return result
  subnet, history = finetune(subnet, data, cfg.train, cfg.data.batch_size, seed)
  fq_logits = predict_logits(subnet, data.x_test, input_spec=data.eval_spec)
  timings = {"train_s": time.perf_counter() - t0}
  t0 = time.perf_counter()
  chain = chain_from_subnet(
    subnet.quantized_layers(space.op_names),
    data.input_shape,
    data.num_classes,
    {"dataset": data.name, **data.eval_spec.metadata()},
  )
  x_test = np.asarray(data.to_input(data.x_test))
  onnx_logits = run_onnx(export_onnx(chain, run_dir / "model.onnx"), x_test)
  timings["export_s"] = time.perf_counter() - t0
  result = {
    **record,
    "accuracy": {
      "fake_quant": accuracy(fq_logits, data.y_test),
      "onnx_runtime": accuracy(onnx_logits, data.y_test),
    },
    "timings_s": timings,
    "finetune_history": history,
  }
  atomic_write_json(run_dir / "result.json", result)
  return result


def exact_costs(setup: pipeline.Setup, choices: list[Choice]) -> dict[str, float]:
  """Exact cost of a SubNet of ``setup``'s space on its target, every metric."""
  return subnet_costs(
    choices, setup.candidate_layers, setup.fixed_layers, setup.space.op_names, setup.cost_model
  )["total"]


def sample_subnets(setup: pipeline.Setup, seed: int, count: int) -> Iterator[list[Choice]]:
  """Up to ``count`` SubNets drawn uniformly, lazily: per choice point an offered op the target
  runs and weight/activation bits it runs for that op (the search's capability masks)."""
  rng = np.random.default_rng(seed)
  masks, w_bits, a_bits = setup.masks, setup.cfg.quant.w_bits, setup.cfg.quant.a_bits
  op_mask, w_mask, a_mask = (np.asarray(m) for m in (masks.op, masks.w, masks.a))
  for _ in range(count):
    choices = []
    for l in range(op_mask.shape[0]):
      o = rng.choice(np.flatnonzero(op_mask[l]))
      w = rng.choice(np.flatnonzero(w_mask[l, o]))
      a = rng.choice(np.flatnonzero(a_mask[l, o]))
      choices.append(Choice(setup.space.op_names[o], int(w_bits[w]), int(a_bits[a])))
    yield choices


def within(costs: dict[str, float], limits: dict[str, float]) -> bool:
  """Whether ``costs`` meets every ``{metric: limit}`` (a metric it lacks is not limited)."""
  return all(costs.get(m, 0.0) <= limit for m, limit in limits.items())
