"""report.md and report.html: what was searched, what was found, what it costs, how it was
verified, and the plots of :mod:`qdarts.plots`.

``report.md`` links the PNGs under ``plots/``; ``report.html`` is the same document with every
image inlined as a base64 ``data:`` URI and its style in the page, so it opens offline and can
be mailed as one file. ``qdarts report RUN`` rewrites all three from the run folder.
"""

import base64
import html
import json
import re
from collections.abc import Sequence
from pathlib import Path

from qdarts.errors import ConfigError
from qdarts.run_dir import atomic_write_json, atomic_write_text, file_digest

REPORT_MD = "report.md"
REPORT_HTML = "report.html"


def fmt_number(v: float | None) -> str:
  """A table cell: "—" for None/NaN, 4 significant digits for very large or small floats."""
  if v is None or (isinstance(v, float) and v != v):  # no bits (skip), or no value (NaN)
    return "—"
  if isinstance(v, float) and (abs(v) >= 1e5 or (v != 0 and abs(v) < 1e-3)):
    return f"{v:.4g}"
  return f"{v:,.4f}".rstrip("0").rstrip(".") if isinstance(v, float) else str(v)


def _figure_lines(plots: dict, *names: str) -> list[str]:
  """``![caption](plots/name.png)`` of each of ``names`` that was drawn."""
  lines = []
  for name in names:
    if name in plots:
      lines += ["", f"![{plots[name].title}]({plots[name].path})"]
  return lines


def render_markdown(result: dict, subnet: dict, plots: Sequence = ()) -> str:
  """The run report as markdown: tables, and the figures in ``plots``
  (:class:`qdarts.plots.Plot`, paths relative to the run folder) beside the tables they
  illustrate."""
  acc, metric = result["accuracy"], result["metric"]
  plots = {p.name: p for p in plots}
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
  if "inherited_fake_quant" in acc:  # chain spaces; a DARTS network is trained from scratch
    lines.append(
      f"| test accuracy right after derivation (inherited weights) | "
      f"{acc['inherited_fake_quant']:.4f} |"
    )
  lines += [f"| {m} (exact, whole SubNet) | {fmt_number(v)} |" for m, v in result["cost"].items()]
  lines += [
    f"| {m} of the costliest SubNet of the space | {fmt_number(v)} |"
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
  for layer in subnet.get("layers", []):
    lines.append(
      f"| {layer['choice']} | {layer['op']} | {fmt_number(layer['w_bits'])} | "
      f"{fmt_number(layer['a_bits'])} | {layer['op_probability']:.3f} | "
      f"{fmt_number(layer['cost'][metric])} |"
    )
  for fixed in subnet.get("fixed_layers", []):
    cost = fmt_number(fixed["cost"][metric])
    lines.append(f"| {fixed['name']} (fixed) | — | 8 | 8 | — | {cost} |")
  lines += _figure_lines(plots, "subnet", "cost_breakdown")
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
      f"| {fmt_number(row.get('arch_ce'))} | {fmt_number(row['expected_cost'])} | "
      f"{fmt_number(row['argmax_cost'])} |"
    )
  lines += _figure_lines(plots, "search_progress", "op_probabilities", "bit_probabilities")
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
    "- `events/`: TensorBoard event files (`tensorboard --logdir events`): losses, "
    "costs, entropies, logit histograms, probability heatmaps, hparams",
    "- `probs_history.npz`: the op and bit probabilities after every search epoch",
    "- `plots/`: the figures above as PNG; `report.html`: this report in one offline file",
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


# ----- report.html ----------------------------------------------------------------------------

_STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; margin: 0; background: #fafafa; color: #222; }
main { max-width: 1100px; margin: 0 auto; padding: 1.5em 2em 4em; background: #fff; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; border-bottom: 1px solid #ddd; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f0f0f0; } tr:nth-child(even) td { background: #fbfbfb; }
code { background: #f3f3f3; padding: 0 0.25em; border-radius: 3px; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
.missing { color: #b00; }
"""

_IMAGE = re.compile(r"^!\[(?P<alt>[^\]]*)\]\((?P<src>[^)]+)\)$")


def _inline(text: str) -> str:
  """Escapes HTML and turns `code` spans into <code>."""
  parts = text.split("`")
  return "".join(
    f"<code>{html.escape(p)}</code>" if i % 2 else html.escape(p) for i, p in enumerate(parts)
  )


def _cells(row: str) -> list[str]:
  return [c.strip() for c in row.strip().strip("|").split("|")]


def _image_html(alt: str, src: str, base_dir: Path) -> str:
  path = base_dir / src
  caption = f"<figcaption>{_inline(alt)}</figcaption>"
  if not path.is_file():
    return f'<p class="missing">figure not found: {html.escape(src)}</p>'
  data = base64.b64encode(path.read_bytes()).decode("ascii")
  return (
    f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">{caption}</figure>'
  )


def render_html(markdown: str, base_dir: Path, title: str) -> str:
  """A self-contained HTML page of a report written by :func:`render_markdown`.

  Handles the subset the reports use: ``#``/``##`` headings, paragraphs, pipe tables, ``-``
  lists, `code` spans and ``![caption](path)`` images on their own line, which are read from
  ``base_dir`` and inlined as ``data:image/png;base64`` URIs (no file or network is needed to
  view the page).
  """
  out, lines, i = [], markdown.splitlines(), 0
  while i < len(lines):
    line = lines[i].rstrip()
    if not line:
      i += 1
    elif line.startswith("#"):
      level = len(line) - len(line.lstrip("#"))
      out.append(f"<h{level}>{_inline(line[level:].strip())}</h{level}>")
      i += 1
    elif image := _IMAGE.match(line):
      out.append(_image_html(image["alt"], image["src"], Path(base_dir)))
      i += 1
    elif line.startswith("|"):
      block = []
      while i < len(lines) and lines[i].startswith("|"):
        block.append(lines[i])
        i += 1
      head, body = _cells(block[0]), [r for r in block[1:] if not set(r) <= set("|-: ")]
      rows = "".join(
        "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in _cells(r)) + "</tr>" for r in body
      )
      header = "".join(f"<th>{_inline(c)}</th>" for c in head)
      out.append(f"<table><thead><tr>{header}</tr></thead><tbody>{rows}</tbody></table>")
    elif line.startswith("- "):
      items = []
      while i < len(lines) and lines[i].startswith("- "):
        items.append(f"<li>{_inline(lines[i][2:])}</li>")
        i += 1
      out.append("<ul>" + "".join(items) + "</ul>")
    else:
      para = []
      while i < len(lines) and lines[i].strip() and not lines[i].startswith(("#", "|", "- ")):
        para.append(lines[i].strip())
        i += 1
      out.append(f"<p>{_inline(' '.join(para))}</p>")
  body = "\n".join(out)
  return (
    '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
    f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
    f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n"
    f"<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
  )


# ----- a run folder ---------------------------------------------------------------------------


def write_report(run_dir: Path, result: dict, subnet: dict) -> list[Path]:
  """Draws the plots (``plots/*.png``) and writes ``report.md`` and ``report.html``.

  Returns the paths written.
  """
  from qdarts.monitor import PROBS_HISTORY, load_probs_history  # noqa: PLC0415
  from qdarts.plots import write_run_plots  # noqa: PLC0415 (matplotlib)

  run_dir = Path(run_dir)
  history = load_probs_history(run_dir / PROBS_HISTORY)
  plots = write_run_plots(run_dir, result, subnet, history)
  text = render_markdown(result, subnet, plots)
  page = render_html(text, run_dir, f"qdarts run: {result['config']}")
  return [
    atomic_write_text(run_dir / REPORT_MD, text),
    atomic_write_text(run_dir / REPORT_HTML, page),
    *(run_dir / p.path for p in plots),
  ]


def read_run_json(run_dir: Path, name: str) -> dict:
  """``run_dir/name`` parsed, or a ConfigError that names the file and what is wrong."""
  path = Path(run_dir) / name
  if not Path(run_dir).is_dir():
    raise ConfigError(f"{run_dir}: not a folder (give a run folder of `qdarts search`)")
  try:
    doc = json.loads(path.read_text())
  except FileNotFoundError as e:
    hint = " (the run has not finished; resume it with `qdarts search --resume RUN`)"
    raise ConfigError(f"{path}: not found{hint if name == 'result.json' else ''}") from e
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ConfigError(f"{path}: not a readable JSON file ({e.__class__.__name__})") from e
  if not isinstance(doc, dict):
    raise ConfigError(f"{path}: expected a JSON object at the top level")
  return doc


def regenerate_report(run_dir: Path) -> list[Path]:
  """``qdarts report RUN``: rewrites the plots, report.md and report.html of a finished run
  from its result.json, subnet.json and probs_history.npz, and updates their sizes and
  SHA-256 in result.json's artifact list.

  Raises:
    ConfigError: not a finished run folder, or one of its files is unreadable (named).
  """
  run_dir = Path(run_dir)
  result = read_run_json(run_dir, "result.json")
  subnet = read_run_json(run_dir, "subnet.json")
  for key in ("config", "metric", "accuracy", "cost", "timings_s", "search_history"):
    if key not in result:
      raise ConfigError(f"{run_dir / 'result.json'}: missing field {key!r} (not a qdarts run)")
  try:
    written = write_report(run_dir, result, subnet)
  except (KeyError, TypeError, ValueError, IndexError) as e:
    raise ConfigError(
      f"{run_dir}: result.json / subnet.json do not describe a qdarts run "
      f"({e.__class__.__name__}: {e})"
    ) from e
  records = {a["path"]: a for a in result.get("artifacts", [])}
  records = {p: a for p, a in records.items() if not p.startswith("plots/")}  # redrawn below
  for path in written:
    rel = str(path.relative_to(run_dir))
    records[rel] = {**file_digest(path), "path": rel}
  result["artifacts"] = sorted(records.values(), key=lambda a: a["path"])
  atomic_write_json(run_dir / "result.json", result)
  return written
