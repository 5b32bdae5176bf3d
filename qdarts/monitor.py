"""Watching a run: TensorBoard events per epoch, and the probability history the report plots.

Per search epoch (step = epoch, from 1), under ``RUN/events/``:

* ``search/<name>``: every number of the epoch's metrics row (losses, accuracies, τ as
  ``search/tau``, λ of budget terms as ``search/lambda_<metric>``, the first term's
  ``expected_cost`` / ``argmax_cost``); ``finetune/<name>`` likewise for the fine-tune;
* ``cost/<metric>/expected`` and ``cost/<metric>/argmax``: for *every* metric the target
  provides, the expected cost under the current distributions against the exact cost of the
  SubNet the logits would derive now (a custom-scalars layout draws each pair on one chart);
* ``entropy/{op,w_bits,a_bits}/<choice>`` (nats) and their ``…_mean``: how undecided each
  choice point still is (bits: of the marginal over ops, Σ_o p_lo q_lob);
* histograms ``logits/{op,w_bits,a_bits}`` of the unmasked logits;
* image ``probabilities/op_w_a``: heatmaps of P(op), P(w bits), P(a bits) per choice point;
* text ``config`` and ``choices`` once; ``final/<name>`` and an hparams session
  (``events/hparams/``) at the end.

The probabilities of every epoch also go to ``RUN/probs_history.npz`` (rewritten atomically
each epoch, so a resumed run keeps the epochs before the interruption): the report's evolution
plots read it, and TensorBoard is not needed to redraw them.
"""

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from qdarts.run_dir import atomic_write_bytes

PROBS_HISTORY = "probs_history.npz"
EVENTS_DIR = "events"
HPARAMS_RUN = "hparams"
HEATMAP_TAG = "probabilities/op_w_a"
MASKED_BELOW = -1e8  # masked logits sit at −1e9 (qdarts.relaxation.MASKED_LOGIT)


# ----- distributions --------------------------------------------------------------------------


def softmax(logits: np.ndarray) -> np.ndarray:
  """Softmax over the last axis in float64; masked entries (−1e9) get exactly 0."""
  x = np.asarray(logits, np.float64)
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def choice_probabilities(logits: dict) -> dict[str, np.ndarray]:
  """``{"op": (L, O), "w": (L, O, Bw), "a": (L, O, Ba)}`` categorical probabilities of the
  masked logits (what the search samples from at τ = 1, without noise)."""
  return {k: softmax(logits[k]) for k in ("op", "w", "a")}


def bit_marginals(op: np.ndarray, bits: np.ndarray) -> np.ndarray:
  """P(bit-width b at choice point l) = Σ_o p_lo q_lob: ``(..., L, O)``, ``(..., L, O, B)`` →
  ``(..., L, B)``."""
  return np.einsum("...lo,...lob->...lb", op, bits)


def entropy(p: np.ndarray) -> np.ndarray:
  """H(p) = −Σ_k p_k log p_k over the last axis, in nats (0·log 0 = 0)."""
  p = np.asarray(p, np.float64)
  return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1)


@dataclass(frozen=True)
class ProbsHistory:
  """The choice distributions after each search epoch (``probs_history.npz``).

  Attributes:
    epochs: ``(E,)`` 1-based search epochs.
    op: ``(E, L, O)`` P(op); w: ``(E, L, O, Bw)``, a: ``(E, L, O, Ba)`` P(bits | op).
    choice_names, op_names: ``L`` and ``O`` names; w_bits, a_bits: the candidate widths.
  """

  epochs: np.ndarray
  op: np.ndarray
  w: np.ndarray
  a: np.ndarray
  choice_names: tuple[str, ...]
  op_names: tuple[str, ...]
  w_bits: tuple[int, ...]
  a_bits: tuple[int, ...]

  def bit_marginals(self) -> tuple[np.ndarray, np.ndarray]:
    """``(E, L, Bw)`` and ``(E, L, Ba)``: P(bits) per choice point, summed over ops."""
    return bit_marginals(self.op, self.w), bit_marginals(self.op, self.a)

  def with_epoch(self, epoch: int, probs: dict) -> "ProbsHistory":
    """This history up to ``epoch − 1``, plus ``epoch``'s probabilities (a resumed search
    logs again from the epoch it resumes)."""
    keep = self.epochs < epoch
    add = {k: np.asarray(probs[k], np.float32)[None] for k in ("op", "w", "a")}
    return ProbsHistory(
      np.concatenate([self.epochs[keep], [epoch]]).astype(np.int32),
      *(np.concatenate([getattr(self, k)[keep], add[k]]) for k in ("op", "w", "a")),
      self.choice_names,
      self.op_names,
      self.w_bits,
      self.a_bits,
    )

  @classmethod
  def empty(cls, choice_names, op_names, w_bits, a_bits) -> "ProbsHistory":
    num_l, num_o = len(choice_names), len(op_names)
    return cls(
      np.zeros(0, np.int32),
      np.zeros((0, num_l, num_o), np.float32),
      np.zeros((0, num_l, num_o, len(w_bits)), np.float32),
      np.zeros((0, num_l, num_o, len(a_bits)), np.float32),
      tuple(choice_names),
      tuple(op_names),
      tuple(int(b) for b in w_bits),
      tuple(int(b) for b in a_bits),
    )

  def save(self, path: Path) -> Path:
    buf = io.BytesIO()
    np.savez(
      buf,
      epochs=self.epochs,
      op=self.op,
      w=self.w,
      a=self.a,
      choice_names=np.asarray(self.choice_names, dtype=str),
      op_names=np.asarray(self.op_names, dtype=str),
      w_bits=np.asarray(self.w_bits, np.int32),
      a_bits=np.asarray(self.a_bits, np.int32),
    )
    return atomic_write_bytes(path, buf.getvalue())


def load_probs_history(path: Path) -> ProbsHistory | None:
  """The history at ``path``, or None if there is none (a run from before it was recorded).

  Raises:
    ConfigError: the file exists but is not a probability history.
  """
  from qdarts.errors import ConfigError  # noqa: PLC0415

  path = Path(path)
  if not path.exists():
    return None
  try:
    with np.load(path, allow_pickle=False) as z:
      history = ProbsHistory(
        z["epochs"],
        z["op"],
        z["w"],
        z["a"],
        tuple(str(s) for s in z["choice_names"]),
        tuple(str(s) for s in z["op_names"]),
        tuple(int(b) for b in z["w_bits"]),
        tuple(int(b) for b in z["a_bits"]),
      )
  except (OSError, KeyError, ValueError) as e:
    raise ConfigError(f"{path}: not a probability history ({e.__class__.__name__}: {e})") from e
  if history.op.shape[:1] != history.epochs.shape or history.op.ndim != 3:
    raise ConfigError(f"{path}: op: expected shape (epochs, choices, ops), got {history.op.shape}")
  return history


def _same_choices(a: ProbsHistory, b: ProbsHistory) -> bool:
  names = ("choice_names", "op_names", "w_bits", "a_bits")
  return all(getattr(a, n) == getattr(b, n) for n in names)


# ----- costs of every metric ------------------------------------------------------------------


@dataclass(frozen=True)
class MetricCosts:
  """Every metric of the target, costed from the logits: expected and exact argmax.

  Attributes:
    objective: a :class:`~qdarts.objective.CostObjective` with one (weightless) term per
      metric, built once from the run's cost tables.
  """

  objective: object

  @classmethod
  def from_setup(cls, setup) -> "MetricCosts":
    from qdarts.config import CostTerm  # noqa: PLC0415
    from qdarts.objective import build_objective  # noqa: PLC0415

    model = setup.cost_model
    metrics = [m for m in model.metrics if m != "act_bytes"]
    if "act_bytes" in model.metrics:
      metrics.append("peak_act_bytes")
    masks = setup.masks
    allowed = masks.op[..., None, None] & masks.w[..., :, None] & masks.a[..., None, :]
    terms = [CostTerm(metric=m, form="linear", weight=0.0) for m in metrics]
    objective = build_objective(
      terms,
      setup.tables,
      setup.candidate_layers,
      setup.fixed_layers,
      model,
      setup.cfg.quant.w_bits,
      setup.cfg.quant.a_bits,
      allowed,
    )
    return cls(objective)

  @property
  def metrics(self) -> tuple[str, ...]:
    return self.objective.metrics

  def __call__(self, logits: dict) -> dict[str, tuple[float, float]]:
    """``{metric: (expected, argmax exact)}``: E[C] as the search's objective computes it
    (smooth max for peak metrics) and the exact cost of :func:`qdarts.derive.argmax_selection`.
    """
    from qdarts.derive import argmax_selection, selection_costs  # noqa: PLC0415
    from qdarts.relaxation import expected_probs  # noqa: PLC0415

    obj = self.objective
    expected = np.asarray(obj.costs(expected_probs(logits)), np.float64)
    exact = selection_costs(
      np.asarray(obj.tables, np.float64),
      np.asarray(obj.fixed, np.float64),
      np.asarray(obj.peak),
      argmax_selection(logits),
    )
    return {m: (float(e), float(x)) for m, e, x in zip(obj.metrics, expected, exact, strict=True)}


# ----- the monitor ----------------------------------------------------------------------------


def open_writer(run_dir: Path):
  """A tensorboardX ``SummaryWriter`` on ``run_dir/events`` (flushed every 10 s)."""
  from tensorboardX import SummaryWriter  # noqa: PLC0415

  return SummaryWriter(str(Path(run_dir) / EVENTS_DIR), flush_secs=10)


def flat_hparams(config: dict, prefix: str = "") -> dict[str, float | int | str | bool]:
  """The config as ``{"search.epochs": 30, "quant.w_bits": "[2, 4, 8]", ...}`` (TensorBoard's
  hparams take scalars and strings only; lists become their text, null becomes "null")."""
  flat = {}
  for key, value in config.items():
    name = f"{prefix}{key}"
    if isinstance(value, dict):
      flat.update(flat_hparams(value, f"{name}."))
    elif isinstance(value, bool | int | float | str):
      flat[name] = value
    else:
      flat[name] = "null" if value is None else str(value)
  return flat


class RunMonitor:
  """Sends a run's progress to TensorBoard and records the probability history.

  Args:
    run_dir: the run folder (``probs_history.npz`` is written there).
    names: ``(choice_names, op_names, w_bits, a_bits)`` of the search space.
    costs: the :class:`MetricCosts` of the target, or None to log no per-metric costs.
    writer: a tensorboardX ``SummaryWriter``; None: one is opened on ``run_dir/events`` and
      closed by :meth:`finish`.
    config: the resolved config (plain data), logged as text and as hparams.
  """

  def __init__(
    self,
    run_dir: Path,
    names: tuple[Sequence[str], Sequence[str], Sequence[int], Sequence[int]],
    costs: MetricCosts | None = None,
    writer=None,
    config: dict | None = None,
  ):
    self.run_dir = Path(run_dir)
    self.costs = costs
    self.config = config or {}
    self.owns_writer = writer is None
    self.writer = open_writer(run_dir) if writer is None else writer
    self.history = ProbsHistory.empty(*names)
    earlier = load_probs_history(self.run_dir / PROBS_HISTORY)
    if earlier is not None and _same_choices(earlier, self.history):  # a resumed run's epochs
      self.history = earlier
    self._write_legend()

  @classmethod
  def for_setup(cls, setup, run_dir: Path, writer=None) -> "RunMonitor":
    """The monitor of a pipeline run (names, every metric's costs, the config)."""
    from qdarts.config import config_to_dict  # noqa: PLC0415

    cfg, space = setup.cfg, setup.space
    names = (space.choice_names, space.op_names, cfg.quant.w_bits, cfg.quant.a_bits)
    return cls(run_dir, names, MetricCosts.from_setup(setup), writer, config_to_dict(cfg))

  def _write_legend(self) -> None:
    h = self.history
    legend = (
      f"rows: choice points {', '.join(h.choice_names)}\n\n"
      f"op columns: {', '.join(h.op_names)}; weight bits {list(h.w_bits)}; "
      f"activation bits {list(h.a_bits)}"
    )
    self.writer.add_text("choices", legend, 0)
    if self.config:
      text = yaml.safe_dump(self.config, sort_keys=False)
      self.writer.add_text("config", "    " + text.replace("\n", "\n    "), 0)
    if self.costs is not None:
      layout = {
        m: ["Multiline", [f"cost/{m}/expected", f"cost/{m}/argmax"]] for m in self.costs.metrics
      }
      self.writer.add_custom_scalars({"cost: expected vs argmax SubNet": layout})

  def log_epoch(self, stage: str, epoch: int, row: dict, logits: dict | None = None) -> None:
    """One epoch of ``stage`` (``search``, ``fine-tune``): its metrics row, and for the search
    the masked logits ``{"op", "w", "a"}`` (numpy) after the epoch. ``epoch`` is 0-based."""
    step, tag = epoch + 1, stage.replace("-", "")
    for name, value in row.items():
      if name != "epoch" and isinstance(value, int | float):
        self.writer.add_scalar(f"{tag}/{name}", value, step)
    if logits is None:
      return
    logits = {k: np.asarray(v) for k, v in logits.items()}
    probs = choice_probabilities(logits)
    if self.costs is not None:
      for metric, (expected, exact) in self.costs(logits).items():
        self.writer.add_scalar(f"cost/{metric}/expected", expected, step)
        self.writer.add_scalar(f"cost/{metric}/argmax", exact, step)
    self._log_distributions(probs, logits, step)
    self.history = self.history.with_epoch(step, probs)
    self.history.save(self.run_dir / PROBS_HISTORY)

  def _log_distributions(self, probs: dict, logits: dict, step: int) -> None:
    from qdarts.plots import figure_to_rgb, probability_heatmaps  # noqa: PLC0415 (matplotlib)

    h = self.history
    marginals = {
      "op": (probs["op"], list(h.op_names)),
      "w_bits": (bit_marginals(probs["op"], probs["w"]), [f"w{b}" for b in h.w_bits]),
      "a_bits": (bit_marginals(probs["op"], probs["a"]), [f"a{b}" for b in h.a_bits]),
    }
    for kind, (p, _) in marginals.items():
      h_values = entropy(p)
      for name, value in zip(h.choice_names, h_values, strict=True):
        self.writer.add_scalar(f"entropy/{kind}/{name}", float(value), step)
      self.writer.add_scalar(f"entropy/{kind}_mean", float(h_values.mean()), step)
    panels = [(p, columns, f"P({kind})") for kind, (p, columns) in marginals.items()]
    fig = probability_heatmaps(panels, h.choice_names, f"choice points after epoch {step}")
    self.writer.add_image(HEATMAP_TAG, figure_to_rgb(fig), step, dataformats="HWC")
    for kind, key in (("op", "op"), ("w_bits", "w"), ("a_bits", "a")):
      values = logits[key][logits[key] > MASKED_BELOW]
      if values.size:
        self.writer.add_histogram(f"logits/{kind}", values, step)

  def finish(self, result: dict) -> None:
    """The final accuracies and costs (``final/<name>``) and the hparams session; closes the
    writer if the monitor opened it."""
    finals = {**result.get("accuracy", {}), **result.get("cost", {})}
    for name, value in finals.items():
      if isinstance(value, int | float):
        self.writer.add_scalar(f"final/{name}", value, 0)
    if self.config:
      metrics = {f"hparam/{k}": float(v) for k, v in finals.items() if isinstance(v, int | float)}
      self.writer.add_hparams(flat_hparams(self.config), metrics, name=HPARAMS_RUN)
    self.writer.flush()
    if self.owns_writer:
      self.writer.close()
