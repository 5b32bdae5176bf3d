"""`qdarts inspect RUN`: the SubNet of a finished run, its costs and accuracies, and where each
artifact of the run folder is. Reads JSON only (no JAX), so it answers at once."""

from pathlib import Path

from qdarts.report import fmt_number, read_run_json

ARTIFACTS = (
  ("report.html", "the report in one offline page (plots inlined)"),
  ("report.md", "the report as markdown (links plots/)"),
  ("subnet.json", "the derived SubNet: ops, bits, per-layer costs, probabilities"),
  ("subnet.npz", "the quantized SubNet every export is rebuilt from"),
  ("model.onnx", "the integer ONNX model"),
  ("model.tflite", "the LiteRT model"),
  ("c", "the C export (model.h/.c, runtime, manifest)"),
  ("result.json", "every number of the run, machine-readable"),
  ("config.yaml", "the resolved config"),
  ("probs_history.npz", "op and bit probabilities after every search epoch"),
  ("events", "TensorBoard event files: tensorboard --logdir {path}"),
  ("checkpoints", "search checkpoints (qdarts search --resume)"),
)


def _size(path: Path) -> int:
  if path.is_dir():
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
  return path.stat().st_size


def describe_run(run_dir: Path) -> dict:
  """What ``qdarts inspect`` shows, as plain data.

  Returns:
    ``{"run", "config", "space", "dataset", "target", "metric", "accuracy", "cost",
    "cost_terms", "layers": [{choice, op, w_bits, a_bits, op_probability, cost}],
    "genotype", "artifacts": [{"path", "what", "bytes"}]}`` (only artifacts that exist; the
    plots one by one).

  Raises:
    ConfigError: not a finished run folder (result.json or subnet.json missing or unreadable).
  """
  run_dir = Path(run_dir)
  result = read_run_json(run_dir, "result.json")
  subnet = read_run_json(run_dir, "subnet.json")
  metric = result.get("metric")
  layers = [
    {
      "choice": layer.get("choice"),
      "op": layer.get("op"),
      "w_bits": layer.get("w_bits"),
      "a_bits": layer.get("a_bits"),
      "op_probability": layer.get("op_probability"),
      "cost": (layer.get("cost") or {}).get(metric),
    }
    for layer in subnet.get("layers", [])
  ]
  artifacts = []
  for name, what in ARTIFACTS:
    path = run_dir / name
    if path.exists():
      artifacts.append({"path": str(path), "what": what.format(path=path), "bytes": _size(path)})
  for png in sorted((run_dir / "plots").glob("*.png")):
    artifacts.append({"path": str(png), "what": f"plot: {png.stem}", "bytes": _size(png)})
  return {
    "run": str(run_dir),
    **{k: result.get(k) for k in ("config", "space", "dataset", "target", "metric")},
    "accuracy": result.get("accuracy", {}),
    "cost": result.get("cost", {}),
    "cost_terms": result.get("cost_terms", []),
    "layers": layers,
    "genotype": subnet.get("genotype"),
    "artifacts": artifacts,
  }


def format_run(desc: dict) -> str:
  """:func:`describe_run` as text: the SubNet table, costs, accuracies, artifacts."""
  metric = desc["metric"]
  wc = max([16, *(len(str(layer["choice"])) for layer in desc["layers"])])  # DARTS gene names
  lines = [
    f"run {desc['run']}: config {desc['config']}, space {desc['space']} on {desc['dataset']}, "
    f"target {desc['target']} ({metric})",
    "",
    f"{'choice':<{wc}} {'op':<16} {'w bits':>6} {'a bits':>6} {'P(op)':>6} {metric:>12}",
  ]
  for layer in desc["layers"]:
    p = layer["op_probability"]
    lines.append(
      f"{layer['choice']!s:<{wc}} {layer['op']!s:<16} {fmt_number(layer['w_bits']):>6} "
      f"{fmt_number(layer['a_bits']):>6} {'—' if p is None else f'{p:.3f}':>6} "
      f"{fmt_number(layer['cost']):>12}"
    )
  if desc["genotype"] is not None:
    lines.append(f"genotype: {desc['genotype']}")
  lines += ["", "cost of the SubNet (exact):"]
  lines += [f"  {m}: {fmt_number(v)}" for m, v in desc["cost"].items()]
  for term in desc["cost_terms"]:
    if "budget" in term:
      met = "met" if term.get("met") else "NOT met"
      lines.append(f"  budget {term['metric']} <= {fmt_number(term['budget'])}: {met}")
  lines += ["", "accuracy:"]
  lines += [f"  {k}: {fmt_number(v)}" for k, v in desc["accuracy"].items()]
  lines += ["", "artifacts:"]
  lines += [f"  {a['path']}  ({a['bytes']:,} bytes): {a['what']}" for a in desc["artifacts"]]
  return "\n".join(lines)
