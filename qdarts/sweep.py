"""`qdarts sweep`: one search per value of a config key, and the Pareto front of their SubNets.

``qdarts sweep CONFIG --over cost.weight=0,0.1,0.3,1`` runs the whole pipeline once per value
(every ``--over`` multiplies: two of 3 and 2 values give 6 runs), each in its own run folder
under the sweep folder, then writes ``sweep.json`` (one record per run), ``pareto.png``
(accuracy against the first cost term's metric, the front joined) and ``sweep.md`` /
``sweep.html``. The runs go one after another: with several devices each run already uses all
of them (data parallelism in :func:`qdarts.search.run_search`), and on one CPU two runs would
only share its cores. Later runs of the same shapes start fast from the compilation cache.
"""

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from qdarts.config import Config, load_config
from qdarts.errors import ConfigError
from qdarts.report import fmt_number, render_html
from qdarts.run_dir import atomic_write_json, atomic_write_text

SWEEP_JSON = "sweep.json"
PARETO_PNG = "pareto.png"


@dataclass(frozen=True)
class SweepAxis:
  """One ``--over KEY=V1,V2,...``: a dotted config key and the values it takes (as typed)."""

  key: str
  values: tuple[str, ...]


@dataclass(frozen=True)
class SweepPoint:
  """One run of a sweep: its ``KEY=VALUE`` overrides, a label, and its validated config."""

  overrides: tuple[str, ...]
  label: str
  folder: str
  cfg: Config


def split_values(text: str) -> list[str]:
  """Splits ``0,0.1,[2,4]`` at the commas outside brackets: ``["0", "0.1", "[2,4]"]``."""
  parts, depth, current = [], 0, ""
  for ch in text:
    depth += {"[": 1, "{": 1, "]": -1, "}": -1}.get(ch, 0)
    if ch == "," and depth == 0:
      parts.append(current.strip())
      current = ""
    else:
      current += ch
  parts.append(current.strip())
  return parts


def parse_over(text: str) -> SweepAxis:
  """``"cost.weight=0,0.1,0.3,1"`` → ``SweepAxis("cost.weight", ("0", "0.1", "0.3", "1"))``.

  Raises:
    ConfigError: no ``=``, an empty key, an empty or repeated value, or a value that is not
      YAML.
  """
  key, sep, values_text = text.partition("=")
  key = key.strip()
  if not sep or not key:
    raise ConfigError(f"--over {text!r}: expected KEY=V1,V2,..., e.g. cost.weight=0,0.1,0.3,1")
  values = split_values(values_text)
  if any(not v for v in values):
    raise ConfigError(f"--over {text!r}: an empty value; expected KEY=V1,V2,...")
  if len(set(values)) != len(values):
    raise ConfigError(f"--over {key}: a value is repeated in {values_text!r}")
  for v in values:
    try:
      yaml.safe_load(v)
    except yaml.YAMLError as e:
      raise ConfigError(f"--over {key}: cannot parse value {v!r} ({e.__class__.__name__})") from e
  return SweepAxis(key, tuple(values))


def _slug(text: str) -> str:
  return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "run"


def plan_sweep(
  config_path: Path, overrides: Sequence[str], axes: Sequence[SweepAxis]
) -> list[SweepPoint]:
  """Every point of the grid of ``axes``, its config loaded and its target checked, before
  anything runs (so a bad value fails at once, naming it).

  Raises:
    ConfigError: no axis, two axes on one key, or a point whose config or target is invalid
      (the message starts with that point's overrides).
  """
  from qdarts.objective import check_metrics  # noqa: PLC0415 (imports jax)
  from qdarts.targets import resolve_target  # noqa: PLC0415

  if not axes:
    raise ConfigError("sweep: give at least one --over KEY=V1,V2,..., e.g. cost.weight=0,0.3,1")
  keys = [a.key for a in axes]
  if len(set(keys)) != len(keys):
    raise ConfigError(f"sweep: --over {keys[0]} is given twice; put all its values in one")
  points = []
  for i, values in enumerate(itertools.product(*(a.values for a in axes))):
    swept = tuple(f"{k}={v}" for k, v in zip(keys, values, strict=True))
    try:
      cfg = load_config(config_path, [*overrides, *swept])
      check_metrics(cfg.cost.resolved_terms(), resolve_target(cfg.cost.target))
    except ConfigError as e:
      raise ConfigError(f"sweep point {', '.join(swept)}: {e}") from None
    short = [(k.split(".")[-1], v) for k, v in zip(keys, values, strict=True)]
    label = ", ".join(f"{k}={v}" for k, v in short)
    folder = f"{i:02d}-" + _slug("_".join(f"{k}-{v}" for k, v in short))
    points.append(SweepPoint(swept, label, folder, cfg))
  return points


def run_record(point: SweepPoint, run_dir: Path, sweep_dir: Path, result: dict) -> dict:
  """sweep.json's record of one finished run: what was swept, the SubNet, cost, accuracy."""
  acc = result["accuracy"]
  accuracy_name = "onnx_runtime" if "onnx_runtime" in acc else "fake_quant"
  return {
    "label": point.label,
    "overrides": list(point.overrides),
    "run": str(run_dir.relative_to(sweep_dir)),
    "metric": result["metric"],
    "cost": result["cost"][result["metric"]],
    "costs": result["cost"],
    "accuracy": acc[accuracy_name],
    "accuracy_name": accuracy_name,
    "accuracies": acc,
    "cost_terms": result["cost_terms"],
    "subnet": [
      layer["op"]
      if layer["w_bits"] is None
      else f"{layer['op']} w{layer['w_bits']}a{layer['a_bits']}"
      for layer in result["subnet"]
    ],
  }


def run_sweep(points: Sequence[SweepPoint], sweep_dir: Path, reporter=None) -> dict:
  """Runs each point's pipeline in ``sweep_dir/<NN-label>/``, then writes the sweep files.

  The dataset is loaded once per distinct ``data`` section and seed. Returns the sweep.json
  document: ``{"runs": [run_record...], "metric", "pareto": [indices on the front]}``.
  """
  from qdarts import pipeline  # noqa: PLC0415 (imports jax)

  sweep_dir = Path(sweep_dir)
  datasets, records = {}, []
  for point in points:
    data_key = (point.cfg.data, point.cfg.seed)
    setup = pipeline.prepare(point.cfg, datasets.get(data_key))
    datasets[data_key] = setup.data
    run_dir = sweep_dir / point.folder
    run_dir.mkdir(parents=True, exist_ok=True)
    result = pipeline.run(setup, run_dir, reporter)
    records.append(run_record(point, run_dir, sweep_dir, result))
    atomic_write_json(sweep_dir / SWEEP_JSON, sweep_document(records))  # partial, as runs end
  doc = sweep_document(records)
  write_sweep_report(sweep_dir, doc)
  return doc


def sweep_document(records: list[dict]) -> dict:
  """sweep.json: the runs, and which are on the Pareto front of the first run's metric."""
  from qdarts.plots import pareto_front  # noqa: PLC0415 (matplotlib)

  metric = records[0]["metric"] if records else None
  comparable = [i for i, r in enumerate(records) if metric in r["costs"]]
  front = pareto_front(
    [records[i]["costs"][metric] for i in comparable], [records[i]["accuracy"] for i in comparable]
  )
  return {
    "format": "qdarts.sweep/1",
    "metric": metric,
    "runs": records,
    "pareto": [comparable[i] for i in front],
  }


def render_sweep_markdown(doc: dict, pareto_png: str | None) -> str:
  """sweep.md: a table of the runs (swept values, cost, accuracy, front, SubNet) and the plot."""
  runs, metric = doc["runs"], doc["metric"]
  keys = [o.split("=", 1)[0] for o in runs[0]["overrides"]] if runs else []
  on_front = set(doc["pareto"])
  lines = [
    f"# qdarts sweep over {', '.join(keys)}",
    "",
    f"{len(runs)} searches; cost: `{metric}` of the derived SubNet (exact); accuracy: "
    f"`{runs[0]['accuracy_name'] if runs else '—'}` test accuracy.",
    "",
    f"| run | {' | '.join(keys)} | {metric} | accuracy | Pareto | SubNet |",
    "|---|" + "---|" * (len(keys) + 4),
  ]
  for i, r in enumerate(runs):
    values = [o.split("=", 1)[1] for o in r["overrides"]]
    lines.append(
      f"| `{r['run']}` | {' | '.join(values)} | {fmt_number(r['costs'].get(metric))} | "
      f"{r['accuracy']:.4f} | {'yes' if i in on_front else ''} | {', '.join(r['subnet'])} |"
    )
  if pareto_png:
    lines += ["", f"![accuracy against {metric}, Pareto front joined]({pareto_png})"]
  lines += [
    "",
    "Each run folder holds its own report.html, plots and TensorBoard events.",
    "",
  ]
  return "\n".join(lines)


def write_sweep_report(sweep_dir: Path, doc: dict) -> list[Path]:
  """sweep.json, pareto.png, sweep.md and sweep.html of a finished sweep."""
  from qdarts.plots import pareto_figure, save_png  # noqa: PLC0415 (matplotlib)

  sweep_dir = Path(sweep_dir)
  written = [atomic_write_json(sweep_dir / SWEEP_JSON, doc)]
  metric = doc["metric"]
  points = [
    {"label": r["label"], "cost": r["costs"][metric], "accuracy": r["accuracy"]}
    for r in doc["runs"]
    if metric in r["costs"]
  ]
  name = doc["runs"][0]["accuracy_name"] if doc["runs"] else "accuracy"
  fig = pareto_figure(points, metric, name)
  if fig is not None:
    written.append(save_png(fig, sweep_dir / PARETO_PNG))
  text = render_sweep_markdown(doc, PARETO_PNG if fig is not None else None)
  written.append(atomic_write_text(sweep_dir / "sweep.md", text))
  page = render_html(text, sweep_dir, f"qdarts sweep: {sweep_dir.name}")
  written.append(atomic_write_text(sweep_dir / "sweep.html", page))
  return written
