"""report.md: what was searched, what was found, what it costs, and how it was verified."""


def _fmt(v: float | None) -> str:
  if v is None or (isinstance(v, float) and v != v):  # no bits (skip), or no value (NaN)
    return "—"
  if isinstance(v, float) and (abs(v) >= 1e5 or (v != 0 and abs(v) < 1e-3)):
    return f"{v:.4g}"
  return f"{v:,.4f}".rstrip("0").rstrip(".") if isinstance(v, float) else str(v)


def render_markdown(result: dict, subnet: dict) -> str:
  """The run report as markdown (tables only; plots come with the monitoring work)."""
  acc, metric = result["accuracy"], result["metric"]
  lines = [
    f"# qdarts run: {result['config']}",
    "",
    f"Space `{result['space']}` on `{result['dataset']}` ({result['test_samples']} test "
    f"samples), target `{result['target']}`, searched against `{metric}`.",
    "",
    "## Result",
    "",
    "| quantity | value |",
    "|---|---|",
    f"| test accuracy, fake-quant (JAX) | {acc['fake_quant']:.4f} |",
  ]
  if "onnx_runtime" in acc:
    lines += [
      f"| test accuracy, exported ONNX model in ONNX Runtime | {acc['onnx_runtime']:.4f} |",
      f"| predictions equal between the two | {acc['prediction_agreement']:.2%} |",
    ]
  else:
    lines.append(f"| exported model | {result.get('export_skipped')} |")
  lines += [
    f"| test accuracy right after derivation (inherited weights) | "
    f"{acc['inherited_fake_quant']:.4f} |",
  ]
  lines += [f"| {m} (exact, whole SubNet) | {_fmt(v)} |" for m, v in result["cost"].items()]
  lines += [
    f"| {m} of the costliest SubNet of the space | {_fmt(v)} |"
    for m, v in result["cost_of_costliest_subnet"].items()
  ]
  lines += [f"| time: {k[:-2]} | {v:.1f} s |" for k, v in result["timings_s"].items()]
  lines += [
    "",
    "## Derived SubNet",
    "",
    f"| choice | op | weight bits | activation bits | P(op) | {metric} |",
    "|---|---|---|---|---|---|",
  ]
  for layer in subnet["layers"]:
    lines.append(
      f"| {layer['choice']} | {layer['op']} | {_fmt(layer['w_bits'])} | "
      f"{_fmt(layer['a_bits'])} | {layer['op_probability']:.3f} | "
      f"{_fmt(layer['cost'][metric])} |"
    )
  for fixed in subnet["fixed_layers"]:
    lines.append(f"| {fixed['name']} (fixed) | — | 8 | 8 | — | {_fmt(fixed['cost'][metric])} |")
  lines += _verification_lines(result.get("export_verification") or {})
  lines += [
    "",
    "## Search",
    "",
    f"| epoch | τ | weight loss | train acc | arch CE | E[{metric}] | argmax {metric} |",
    "|---|---|---|---|---|---|---|",
  ]
  for row in result["search_history"]:
    lines.append(
      f"| {row['epoch']} | {row['tau']:.2f} | {row['loss']:.3f} | {row['acc']:.3f} "
      f"| {_fmt(row.get('arch_ce'))} | {_fmt(row['expected_cost'])} | "
      f"{_fmt(row['argmax_cost'])} |"
    )
  lines += [
    "",
    "## Files",
    "",
    "- `config.yaml`: the resolved config of this run",
    "- `subnet.json`: the derived SubNet, per-layer bits and exact costs",
    "- `subnet.npz`: the quantized SubNet `qdarts export` rebuilds every format from",
    "- `model.onnx`: the integer QDQ model (opset 21; input NCHW float in [0, 1])",
    "- `model.tflite`, `c/`: the LiteRT model and the C export, where configured",
    "- `result.json`: every number above, machine-readable",
    "- `events/`: TensorBoard event files (`tensorboard --logdir events`)",
    "",
  ]
  return "\n".join(lines)


def _verification_lines(verification: dict) -> list[str]:
  """Each exported artifact against the integer reference model, on test inputs."""
  if not verification:
    return []
  lines = [
    "",
    "## Exported models against the integer reference",
    "",
    "| format | file | equal predictions | largest logit gap (LSB) | bit-exact |",
    "|---|---|---|---|---|",
  ]
  for fmt, r in verification.items():
    if not r.get("verified"):
      lines.append(f"| {fmt} | `{r['path']}` | not verified: {r.get('why')} | — | — |")
      continue
    exact = {True: "yes", False: "no"}.get(r.get("bit_exact"), "—")
    lines.append(
      f"| {fmt} | `{r['path']}` | {r['prediction_agreement']:.2%} of {r['samples']} | "
      f"{r['max_logit_diff_lsb']:.1f} | {exact} |"
    )
  return lines
