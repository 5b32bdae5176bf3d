"""The run's figures, drawn with matplotlib's Agg canvas (no display, no pyplot state).

Each ``*_figure`` function is pure: run data in, a :class:`~matplotlib.figure.Figure` out (or
``None`` when the run has nothing to draw, e.g. a cell plot for a chain SubNet).
:func:`write_run_plots` draws every figure a run folder supports into ``RUN/plots/*.png``;
:func:`probability_heatmaps` is also what the TensorBoard monitor logs each epoch.

Probabilities are read from ``probs_history.npz`` (:class:`qdarts.monitor.ProbsHistory`); costs
and ops from ``subnet.json``; losses and costs per epoch from ``result.json``.
"""

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before anything imports pyplot; qdarts itself never does

import numpy as np  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import FancyBboxPatch, Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from qdarts.run_dir import atomic_write_bytes  # noqa: E402

PLOTS_DIR = "plots"
DPI = 100
MAX_PANELS = 36  # small multiples per evolution figure; more choice points are summarized
BOXES_PER_ROW = 8  # SubNet chain drawing
MAX_CELLS = 8  # DARTS cells drawn
FIXED_COLOR = "#d9d9d9"
LABEL_AT = 0.62  # where along a genotype edge its op label sits (0: source, 1: target)


@dataclass(frozen=True)
class Plot:
  """One figure of a run: its key, a caption, and its path relative to the run folder."""

  name: str
  title: str
  path: str


# ----- shared helpers -------------------------------------------------------------------------


def png_bytes(fig: Figure) -> bytes:
  """The figure as PNG bytes (Agg canvas, ``DPI`` dots per inch)."""
  buf = io.BytesIO()
  FigureCanvasAgg(fig).print_png(buf)
  return buf.getvalue()


def figure_to_rgb(fig: Figure) -> np.ndarray:
  """The rendered figure as ``(H, W, 3)`` uint8 pixels (for TensorBoard's ``add_image``)."""
  canvas = FigureCanvasAgg(fig)
  canvas.draw()
  return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_png(fig: Figure, path: Path) -> Path:
  return atomic_write_bytes(path, png_bytes(fig))


def _grid(n: int) -> tuple[int, int]:
  cols = min(n, max(1, math.ceil(math.sqrt(n))))
  return math.ceil(n / cols), cols


# ----- per-epoch probabilities ----------------------------------------------------------------


def probability_heatmaps(
  panels: Sequence[tuple[np.ndarray, Sequence[str], str]],
  row_labels: Sequence[str],
  title: str,
) -> Figure:
  """Side-by-side heatmaps of probabilities in [0, 1] sharing their rows, each cell annotated
  when the grid is small (viridis: dark 0, yellow 1).

  Laid out by hand from the label lengths rather than by constrained layout: the monitor draws
  this every epoch, and the layout engine would be most of its cost.

  Args:
    panels: ``(matrix (R, C_k), column labels, panel title)`` per panel, e.g. P(op) per choice
      point, and P(bits) per choice point (the marginal Σ_o p_lo q_lob).
    row_labels: the ``R`` row names (choice points).
    title: figure title.
  """
  rows = len(row_labels)
  char_in = 0.065  # width of one 8-point character, inches
  left = 0.25 + char_in * max(map(len, row_labels))
  bottom = 0.35 + char_in * 0.6 * max(len(c) for _, cols, _ in panels for c in cols)
  cell_w, cell_h, gap, top = 0.62, 0.3, 0.3, 0.55
  widths = [cell_w * m.shape[1] for m, _, _ in panels]
  fig_w, fig_h = left + sum(widths) + gap * len(panels), bottom + cell_h * rows + top
  fig = Figure(figsize=(fig_w, fig_h), dpi=DPI)
  x = left
  for k, ((matrix, col_labels, panel_title), width) in enumerate(zip(panels, widths, strict=True)):
    ax = fig.add_axes((x / fig_w, bottom / fig_h, width / fig_w, cell_h * rows / fig_h))
    ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto", interpolation="nearest")
    ax.set_xticks(range(matrix.shape[1]), col_labels, rotation=35, ha="right", fontsize=8)
    ax.set_yticks(range(rows), row_labels if k == 0 else [], fontsize=8)
    if matrix.size <= 200:
      for (r, c), p in np.ndenumerate(matrix):
        color = "w" if p < 0.6 else "k"
        ax.text(c, r, f"{p:.2f}", ha="center", va="center", fontsize=7, color=color)
    ax.set_title(panel_title, fontsize=8)
    x += width + gap
  fig.suptitle(title, fontsize=9, y=1 - 0.12 / fig_h, va="top")
  return fig


def _distinct_rows(traces: np.ndarray) -> list[int]:
  """Indices of the first of each group of identical ``traces[:, l]`` (DARTS shares op logits
  between the cells of a type, so their choice points have one distribution)."""
  kept: list[int] = []
  for l in range(traces.shape[1]):
    if not any(np.array_equal(traces[:, l], traces[:, k]) for k in kept):
      kept.append(l)
  return kept


def _small_multiples(n_panels: int, title: str) -> tuple[Figure, list]:
  rows, cols = _grid(n_panels)
  fig = Figure(figsize=(2.6 * cols + 1.4, 1.9 * rows + 0.6), dpi=DPI, layout="constrained")
  axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True).ravel()
  axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs (shared by every panel)
  for ax in axes[n_panels:]:
    ax.set_visible(False)
  fig.suptitle(title, fontsize=10)
  return fig, list(axes[:n_panels])


def _panel_note(shown: int, total: int, what: str) -> str:
  return "" if shown == total else f" ({shown} of {total} {what})"


def op_evolution_figure(history) -> Figure | None:
  """P(op) per epoch, one panel per choice point (identical distributions drawn once).

  Args:
    history: a :class:`qdarts.monitor.ProbsHistory` with ``op`` ``(E, L, O)``.
  """
  if history is None or len(history.epochs) == 0:
    return None
  rows = _distinct_rows(history.op)
  shown = rows[:MAX_PANELS]
  note = _panel_note(len(shown), len(rows), "distinct choice points")
  fig, axes = _small_multiples(len(shown), f"op probabilities during the search{note}")
  for ax, l in zip(axes, shown, strict=True):
    for o, name in enumerate(history.op_names):
      p = history.op[:, l, o]
      if p.max() > 0:  # an op that never fits this choice point stays out of its legend
        ax.plot(history.epochs, p, label=name, lw=1.4)
    ax.set_title(history.choice_names[l], fontsize=8)
    ax.set_ylim(-0.02, 1.02)
    ax.tick_params(labelsize=7)
  axes[0].legend(fontsize=6, loc="best")
  fig.supxlabel("epoch", fontsize=8)
  fig.supylabel("P(op)", fontsize=8)
  return fig


def bit_evolution_figure(history) -> Figure | None:
  """P(bit-width) per epoch, one panel per choice point: the marginals over ops,
  Σ_o p_lo q_lob for weights (solid) and Σ_o p_lo r_lob for activations (dashed)."""
  if history is None or len(history.epochs) == 0:
    return None
  w, a = history.bit_marginals()
  total = w.shape[1]
  shown = list(range(min(total, MAX_PANELS)))
  note = _panel_note(len(shown), total, "choice points")
  fig, axes = _small_multiples(len(shown), f"bit-width probabilities during the search{note}")
  colors = matplotlib.colormaps["plasma"](np.linspace(0.1, 0.8, max(len(history.w_bits), 1)))
  a_colors = matplotlib.colormaps["plasma"](np.linspace(0.1, 0.8, max(len(history.a_bits), 1)))
  for ax, l in zip(axes, shown, strict=True):
    for i, b in enumerate(history.w_bits):
      ax.plot(history.epochs, w[:, l, i], color=colors[i], lw=1.4, label=f"w{b}")
    for j, b in enumerate(history.a_bits):
      ax.plot(history.epochs, a[:, l, j], color=a_colors[j], lw=1.2, ls="--", label=f"a{b}")
    ax.set_title(history.choice_names[l], fontsize=8)
    ax.set_ylim(-0.02, 1.02)
    ax.tick_params(labelsize=7)
  axes[0].legend(fontsize=6, loc="best", ncols=2)
  fig.supxlabel("epoch", fontsize=8)
  fig.supylabel("P(bits), summed over ops", fontsize=8)
  return fig


def search_progress_figure(search_history: Sequence[dict], metric: str) -> Figure | None:
  """Per search epoch: losses, accuracies, E[cost] against the argmax SubNet's exact cost, and
  τ with the λ of budget terms (rows of ``result.json``'s ``search_history``)."""
  if not search_history:
    return None
  epochs = [r["epoch"] for r in search_history]

  def series(key):
    values = [r.get(key) for r in search_history]
    return None if all(v is None for v in values) else [np.nan if v is None else v for v in values]

  fig = Figure(figsize=(9, 5.5), dpi=DPI, layout="constrained")
  axes = fig.subplots(2, 2, sharex=True).ravel()
  axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
  panels = (
    ("loss", (("loss", "weight step CE"), ("arch_ce", "arch step CE"))),
    ("accuracy", (("acc", "weight half"), ("arch_acc", "arch half"))),
    (metric, (("expected_cost", "expected (relaxed)"), ("argmax_cost", "argmax SubNet, exact"))),
    ("τ and λ", [("tau", "τ")] + [(k, k) for k in search_history[-1] if k.startswith("lambda_")]),
  )
  for ax, (ylabel, lines) in zip(axes, panels, strict=True):
    for key, label in lines:
      values = series(key)
      if values is not None:
        ax.plot(epochs, values, marker="o", ms=2.5, lw=1.3, label=label)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    if ax.lines:
      ax.legend(fontsize=7)
  for ax in axes[2:]:
    ax.set_xlabel("search epoch", fontsize=8)
  fig.suptitle("search progress", fontsize=10)
  return fig


# ----- the derived SubNet ---------------------------------------------------------------------


def _bits_label(layer: dict) -> str:
  if layer.get("w_bits") is None:
    return "no weights"
  return f"w{layer['w_bits']} a{layer['a_bits']}"


def _network_order(subnet: dict) -> list[tuple[str, dict | None, dict]]:
  """``(name, choice layer or None if fixed, cost)`` of every layer in network order: the
  fixed stem, the choice points, the fixed head (classifier)."""
  fixed = subnet.get("fixed_layers") or []
  heads = [f for f in fixed if f["name"].split(".")[0] in ("head", "fc", "classifier")]
  stems = [f for f in fixed if f not in heads]
  layers = [(layer["choice"], layer, layer.get("cost") or {}) for layer in subnet["layers"]]
  return [
    *((f["name"], None, f["cost"]) for f in stems),
    *layers,
    *((f["name"], None, f["cost"]) for f in heads),
  ]


def _chain_boxes(subnet: dict) -> list[tuple[str, int | None]]:
  """(label, weight bits, None for a fixed layer) of every layer in network order."""
  return [
    (f"{name}\n(fixed)\nw8 a8", None)
    if layer is None
    else (f"{name}\n{layer['op']}\n{_bits_label(layer)}", layer.get("w_bits"))
    for name, layer, _ in _network_order(subnet)
  ]


def subnet_chain_figure(subnet: dict) -> Figure | None:
  """The derived chain SubNet as boxes in reading order: each choice point's op and bits,
  coloured by weight bits; fixed 8-bit layers in grey."""
  if not subnet.get("layers"):
    return None
  boxes = _chain_boxes(subnet)
  shape = "×".join(str(s) for s in subnet.get("input_shape", []))
  boxes = [(f"input\n{shape}", "io"), *boxes, (f"logits\n{subnet.get('num_classes', '?')}", "io")]
  per_row = min(BOXES_PER_ROW, len(boxes))
  rows = math.ceil(len(boxes) / per_row)
  fig = Figure(figsize=(1.75 * per_row + 1.4, 1.35 * rows + 0.7), dpi=DPI, layout="constrained")
  ax = fig.add_subplot()
  ax.set_xlim(-0.6, per_row - 0.4)
  ax.set_ylim(rows - 0.45, -0.55)
  ax.axis("off")
  bits = sorted({*subnet.get("w_bit_candidates", []), 8})
  cmap = matplotlib.colormaps["YlGnBu"]
  shade = {b: cmap(0.25 + 0.6 * i / max(len(bits) - 1, 1)) for i, b in enumerate(bits)}
  centers = [(i % per_row, i // per_row) for i in range(len(boxes))]
  for (label, key), (x, y) in zip(boxes, centers, strict=True):
    face = {"io": "white", None: FIXED_COLOR}.get(key, shade.get(key, "white"))
    ax.add_patch(
      FancyBboxPatch(
        (x - 0.38, y - 0.3), 0.76, 0.6, boxstyle="round,pad=0.02", fc=face, ec="#444", lw=0.8
      )
    )
    ax.text(x, y, label, ha="center", va="center", fontsize=9)
  for (x0, y0), (x1, y1) in zip(centers, centers[1:], strict=False):
    start, end = (
      ((x0 + 0.4, y0), (x1 - 0.4, y1)) if y0 == y1 else ((x0, y0 + 0.32), (x1, y1 - 0.32))
    )
    ax.annotate("", end, start, arrowprops={"arrowstyle": "->", "lw": 0.9, "color": "#444"})
  handles = [Patch(fc=shade[b], ec="#444", label=f"w{b}") for b in bits]
  handles.append(Patch(fc=FIXED_COLOR, ec="#444", label="fixed (8-bit)"))
  ax.legend(
    handles=handles,
    title="weight bits",
    fontsize=7,
    title_fontsize=7,
    loc="upper left",
    bbox_to_anchor=(1.0, 1.0),
    frameon=False,
  )
  total = subnet.get("total_cost", {})
  metric = subnet.get("metric")
  caption = f"derived SubNet ({subnet.get('space')}, target {subnet.get('target')})"
  if metric in total:
    caption += f": {metric} {total[metric]:.4g}"
  ax.set_title(caption, fontsize=9)
  return fig


def _edge(edge, position: int) -> dict | None:
  """One genotype edge as ``{"op", "src", "dst", "bits"}`` (states: 0, 1 the cell inputs, j + 2
  intermediate node j), from a dict (``op``, ``input`` or ``from``, optional ``node``, ``w_bits``,
  ``a_bits``) or a DARTS pair ``[op, input]`` / ``[op, input, w_bits, a_bits]``; without
  ``node``, edges come two per node in node order (DARTS's rule). None when it is neither."""
  if isinstance(edge, dict) and "op" in edge:
    src = edge.get("input", edge.get("from"))  # "from": qdarts's Genotype.to_dict
    op, node = edge["op"], edge.get("node", position // 2)
    bits = None if edge.get("w_bits") is None else f"w{edge['w_bits']}a{edge.get('a_bits')}"
  elif isinstance(edge, list | tuple) and len(edge) >= 2 and isinstance(edge[0], str):
    op, src, node = edge[0], edge[1], position // 2
    bits = f"w{edge[2]}a{edge[3]}" if len(edge) >= 4 else None
  else:
    return None
  if not isinstance(src, int) or not isinstance(node, int) or not 0 <= src < node + 2:
    return None
  return {"op": str(op), "src": src, "dst": node + 2, "bits": bits}


def genotype_cells(genotype) -> list[tuple[str, list[dict]]] | None:
  """``[(cell name, edges)]`` of a DARTS genotype, or None if it is not one this can draw.

  Accepted: ``{"normal": [...], "reduce": [...]}`` (DARTS's Genotype as JSON) or
  ``{"cells": [{"name": ..., "edges": [...]}, ...]}`` (bits per cell); edges as described in
  :func:`_edge`.
  """
  if not isinstance(genotype, dict):
    return None
  if isinstance(genotype.get("cells"), list):
    named = [
      (str(c.get("name", f"cell{i}")), c.get("edges")) for i, c in enumerate(genotype["cells"])
    ]
  else:
    named = [(k, genotype[k]) for k in ("normal", "reduce") if isinstance(genotype.get(k), list)]
  cells = []
  for name, edges in named:
    if not isinstance(edges, list):
      return None
    parsed = [_edge(e, i) for i, e in enumerate(edges)]
    if not parsed or any(p is None for p in parsed):
      return None
    cells.append((name, parsed))
  return cells or None


def _draw_cell(ax, name: str, edges: list[dict]) -> None:
  states = sorted({2, *(e["dst"] for e in edges), *(e["src"] for e in edges)})
  inner = [s for s in states if s >= 2]
  pos = {0: (0.0, 1.0), 1: (0.0, -1.0)}
  for k, s in enumerate(inner):
    pos[s] = (1.2 + 1.3 * k, 0.9 if k % 2 == 0 else -0.9)
  out = (1.2 + 1.3 * len(inner), 0.0)
  for e in edges:
    (x0, y0), (x1, y1) = pos.get(e["src"], (0, 0)), pos[e["dst"]]
    ax.annotate(
      "",
      (x1, y1),
      (x0, y0),
      arrowprops={"arrowstyle": "->", "lw": 0.8, "shrinkA": 9, "shrinkB": 9},
    )
    label = e["op"] if e["bits"] is None else f"{e['op']}\n{e['bits']}"
    t = LABEL_AT  # edges into one node arrive from different sides: labels there stay apart
    ax.text(
      x0 + t * (x1 - x0),
      y0 + t * (y1 - y0),
      label,
      fontsize=6,
      ha="center",
      va="center",
      bbox={"fc": "white", "ec": "none", "alpha": 0.8, "pad": 0.5},
    )
  for s in inner:
    ax.annotate("", out, pos[s], arrowprops={"arrowstyle": "->", "lw": 0.6, "ls": "--"})
  labels = {0: "c[k-2]", 1: "c[k-1]", **{s: str(s - 2) for s in inner}}
  for s, (x, y) in pos.items():
    ax.text(
      x,
      y,
      labels.get(s, str(s)),
      ha="center",
      va="center",
      fontsize=8,
      bbox={"boxstyle": "round", "fc": "#cfe8f3" if s < 2 else "#fde9b5"},
    )
  ax.text(
    *out, "c[k]", ha="center", va="center", fontsize=8, bbox={"boxstyle": "round", "fc": "#d5efcf"}
  )
  ax.set_xlim(-0.6, out[0] + 0.6)
  ax.set_ylim(-1.6, 1.6)
  ax.axis("off")
  ax.set_title(f"{name} cell", fontsize=9)


def genotype_figure(subnet: dict) -> Figure | None:
  """The cells of a DARTS SubNet (``subnet["genotype"]``), edges labelled with op and bits."""
  cells = genotype_cells(subnet.get("genotype"))
  if not cells:
    return None
  cells = cells[:MAX_CELLS]
  fig = Figure(figsize=(8, 3.2 * len(cells)), dpi=DPI, layout="constrained")
  for ax, (name, edges) in zip(
    fig.subplots(len(cells), 1, squeeze=False)[:, 0], cells, strict=True
  ):
    _draw_cell(ax, name, edges)
  return fig


def cost_breakdown_figure(subnet: dict) -> Figure | None:
  """Per-layer cost of the derived SubNet, one panel per metric (fixed layers in grey).

  ``act_bytes`` is a per-layer working set, not additive: its panel shows which layer sets the
  peak (``peak_act_bytes`` of the totals).
  """
  layers = subnet.get("layers") or []
  if not layers or not isinstance(layers[0].get("cost"), dict):
    return None
  order = _network_order(subnet)
  names = [name for name, _, _ in order]
  costs = [cost for _, _, cost in order]
  metrics = list(layers[0]["cost"])
  fig = Figure(
    figsize=(3.4 * len(metrics) + 0.8, 0.28 * len(names) + 1.4), dpi=DPI, layout="constrained"
  )
  axes = fig.subplots(1, len(metrics), squeeze=False, sharey=True)[0]
  colors = [FIXED_COLOR if layer is None else "#2c7fb8" for _, layer, _ in order]
  y = np.arange(len(names))
  for ax, metric in zip(axes, metrics, strict=True):
    values = np.asarray([c.get(metric, 0.0) for c in costs], float)
    ax.barh(y, values, color=colors)
    share = values.sum()
    title = metric if metric == "act_bytes" else f"{metric} (total {share:.4g})"
    ax.set_title(title + (" — peak is the max" if metric == "act_bytes" else ""), fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_xlim(0, max(values.max(), 1e-12) * 1.15)
  axes[0].set_yticks(y, names, fontsize=7)
  axes[0].invert_yaxis()
  fig.suptitle("cost of each layer of the derived SubNet (grey: fixed 8-bit layers)", fontsize=9)
  return fig


# ----- sweeps ---------------------------------------------------------------------------------


def pareto_front(costs: Sequence[float], accuracies: Sequence[float]) -> list[int]:
  """Indices of the points no other point beats on both axes (lower cost, higher accuracy),
  ordered by cost."""
  order = sorted(range(len(costs)), key=lambda i: (costs[i], -accuracies[i]))
  front, best = [], -math.inf
  for i in order:
    if accuracies[i] > best:
      front.append(i)
      best = accuracies[i]
  return front


def pareto_figure(points: Sequence[dict], metric: str, accuracy_name: str) -> Figure | None:
  """Accuracy against cost of a sweep's SubNets, the Pareto front joined and each point
  labelled with its swept values.

  Args:
    points: ``{"label", "cost", "accuracy"}`` per run.
    metric: the cost axis (its unit is in the name, e.g. ``latency_ms``).
    accuracy_name: which accuracy (``onnx_runtime`` or ``fake_quant``).
  """
  if not points:
    return None
  costs = [p["cost"] for p in points]
  accs = [p["accuracy"] for p in points]
  front = pareto_front(costs, accs)
  fig = Figure(figsize=(7, 4.6), dpi=DPI, layout="constrained")
  ax = fig.add_subplot()
  ax.scatter(costs, accs, s=36, color="#2c7fb8", zorder=3, label="SubNets")
  ax.step(
    [costs[i] for i in front],
    [accs[i] for i in front],
    where="post",
    color="#d95f0e",
    lw=1.4,
    zorder=2,
    label="Pareto front",
  )
  for p in points:
    ax.annotate(
      p["label"], (p["cost"], p["accuracy"]), textcoords="offset points", xytext=(5, 5), fontsize=7
    )
  if min(costs) > 0 and max(costs) / min(costs) > 50:
    ax.set_xscale("log")
  ax.margins(x=0.15, y=0.1)  # room for the labels of the extreme points
  ax.set_xlabel(f"{metric} of the derived SubNet (exact)", fontsize=9)
  ax.set_ylabel(f"test accuracy ({accuracy_name})", fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  ax.set_title(f"accuracy against {metric}: {len(points)} SubNets", fontsize=10)
  return fig


# ----- a run folder ---------------------------------------------------------------------------


def run_figures(result: dict, subnet: dict, history) -> dict[str, tuple[str, Figure | None]]:
  """Every figure of a run: key → (caption, figure or None when there is nothing to draw)."""
  drawing = genotype_figure(subnet) if "genotype" in subnet else subnet_chain_figure(subnet)
  return {
    "subnet": ("the derived SubNet: ops and bits of each choice point", drawing),
    "cost_breakdown": ("cost of each layer of the derived SubNet", cost_breakdown_figure(subnet)),
    "search_progress": (
      "losses, accuracies, cost and temperature per search epoch",
      search_progress_figure(result.get("search_history", []), result["metric"]),
    ),
    "op_probabilities": ("evolution of the op probabilities", op_evolution_figure(history)),
    "bit_probabilities": (
      "evolution of the bit-width probabilities",
      bit_evolution_figure(history),
    ),
  }


def write_run_plots(run_dir: Path, result: dict, subnet: dict, history) -> list[Plot]:
  """Draws :func:`run_figures` into ``run_dir/plots/<key>.png``; returns what was written.

  A stale PNG of a figure that has nothing to draw now is removed, so the folder matches the
  report.
  """
  folder = Path(run_dir) / PLOTS_DIR
  folder.mkdir(exist_ok=True)
  written = []
  for name, (title, fig) in run_figures(result, subnet, history).items():
    path = folder / f"{name}.png"
    if fig is None:
      path.unlink(missing_ok=True)
      continue
    save_png(fig, path)
    written.append(Plot(name, title, f"{PLOTS_DIR}/{name}.png"))
  return written
