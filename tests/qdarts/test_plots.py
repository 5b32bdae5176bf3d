"""The run's figures: what each draws from, and that a run folder gets every PNG."""

import json

import numpy as np
import pytest

from qdarts.monitor import ProbsHistory
from qdarts.plots import (
  figure_to_rgb,
  genotype_cells,
  op_evolution_figure,
  pareto_figure,
  pareto_front,
  probability_heatmaps,
  run_figures,
  write_run_plots,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RUN_PLOTS = ("subnet", "cost_breakdown", "search_progress", "op_probabilities", "bit_probabilities")


def test_a_run_folder_gets_every_plot_as_png(finished_run):
  run_dir, _ = finished_run
  for name in RUN_PLOTS:
    data = (run_dir / "plots" / f"{name}.png").read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5000, name


def test_plots_are_listed_as_artifacts(finished_run):
  run_dir, _ = finished_run
  listed = {a["path"] for a in json.loads((run_dir / "result.json").read_text())["artifacts"]}
  assert {f"plots/{n}.png" for n in RUN_PLOTS} <= listed
  assert {"report.html", "probs_history.npz"} <= listed


def test_pareto_front_keeps_the_points_nothing_beats():
  costs = [1.0, 2.0, 3.0, 2.5, 4.0]
  accs = [0.5, 0.7, 0.6, 0.8, 0.8]
  # (3.0, 0.6) is beaten by (2.0, 0.7); (4.0, 0.8) by (2.5, 0.8) at a lower cost
  assert pareto_front(costs, accs) == [0, 1, 3]


def test_pareto_figure_shows_every_point_and_the_front():
  points = [{"label": f"weight={w}", "cost": c, "accuracy": a} for w, c, a in
            [(0, 9.0, 0.9), (1, 5.0, 0.85), (3, 3.0, 0.7), (10, 2.0, 0.72)]]  # fmt: skip
  fig = pareto_figure(points, "bops", "onnx_runtime")
  ax = fig.axes[0]
  assert len(ax.collections[0].get_offsets()) == 4
  (front,) = ax.lines
  assert sorted(front.get_xdata()) == [2.0, 5.0, 9.0]  # (3.0, 0.7) is dominated by (2.0, 0.72)
  assert {t.get_text() for t in ax.texts} == {p["label"] for p in points}


def test_heatmaps_render_to_pixels_with_their_labels():
  op = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
  bits = np.array([[0.5, 0.5], [1.0, 0.0]])
  panels = [(op, ["conv3x3", "dwsep3x3", "skip"], "P(op)"), (bits, ["w4", "w8"], "P(w_bits)")]
  fig = probability_heatmaps(panels, ["layer0", "layer1"], "after epoch 3")
  rgb = figure_to_rgb(fig)
  assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
  assert rgb.std() > 10  # not a blank canvas
  first, second = fig.axes
  assert [t.get_text() for t in first.get_yticklabels()] == ["layer0", "layer1"]
  assert [t.get_text() for t in second.get_xticklabels()] == ["w4", "w8"]
  assert "0.80" in {t.get_text() for t in first.texts}


def _history(op: np.ndarray) -> ProbsHistory:
  e, num_l, num_o = op.shape
  return ProbsHistory(
    np.arange(1, e + 1),
    op,
    np.full((e, num_l, num_o, 2), 0.5),
    np.full((e, num_l, num_o, 2), 0.5),
    tuple(f"cell{i}.edge0" for i in range(num_l)),
    tuple(f"op{o}" for o in range(num_o)),
    (4, 8),
    (4, 8),
  )


def test_op_evolution_draws_shared_distributions_once():
  rng = np.random.default_rng(0)
  shared = rng.dirichlet(np.ones(3), size=4)  # (E, O): one row of DARTS's shared op logits
  own = rng.dirichlet(np.ones(3), size=4)
  op = np.stack([shared, own, shared], axis=1)  # choice points 0 and 2 share logits
  fig = op_evolution_figure(_history(op))
  titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
  assert titles == ["cell0.edge0", "cell1.edge0"]


DARTS_PAIRS = {
  "normal": [["sep_conv_3x3", 0, 4, 8], ["skip_connect", 1, 8, 8], ["dil_conv_5x5", 2, 2, 4],
             ["sep_conv_3x3", 0, 4, 4]],
  "reduce": [["max_pool_3x3", 0], ["sep_conv_5x5", 1], ["max_pool_3x3", 2], ["skip_connect", 1]],
}  # fmt: skip


def test_genotype_cells_reads_darts_pairs_and_dicts():
  cells = genotype_cells(DARTS_PAIRS)
  assert [name for name, _ in cells] == ["normal", "reduce"]
  normal = cells[0][1]
  # two edges per node in node order: node 0 is state 2, node 1 is state 3
  assert [(e["src"], e["dst"]) for e in normal] == [(0, 2), (1, 2), (2, 3), (0, 3)]
  assert normal[2]["bits"] == "w2a4" and cells[1][1][0]["bits"] is None
  per_cell = {
    "cells": [{"name": "cell0", "edges": [{"op": "sep_conv_3x3", "input": 1, "node": 0}]}]
  }
  assert genotype_cells(per_cell)[0][1] == [
    {"op": "sep_conv_3x3", "src": 1, "dst": 2, "bits": None}
  ]


@pytest.mark.parametrize(
  "genotype",
  [None, "DARTS_V2", {"normal": "x"}, {"normal": [[3, 0]]}, {"normal": [["sep", 5]]}, {}],
)
def test_an_unreadable_genotype_is_skipped_not_an_error(genotype):
  assert genotype_cells(genotype) is None


def test_a_darts_subnet_draws_its_cells_instead_of_a_chain(finished_run, tmp_path):
  run_dir, result = finished_run
  darts = {"space": "darts", "genotype": DARTS_PAIRS, "layers": []}
  figures = run_figures(result, darts, None)
  fig = figures["subnet"][1]
  assert [ax.get_title() for ax in fig.axes] == ["normal cell", "reduce cell"]
  labels = {t.get_text() for ax in fig.axes for t in ax.texts}
  assert "dil_conv_5x5\nw2a4" in labels
  # a genotype it cannot read: no SubNet drawing, no cost breakdown, the rest still drawn
  written = write_run_plots(tmp_path, result, {"space": "darts", "genotype": "?"}, None)
  assert [p.name for p in written] == ["search_progress"]
