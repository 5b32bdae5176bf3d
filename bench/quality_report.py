"""Tables and the Pareto plot of the search-quality benchmark (``bench/quality.py``).

Input: the records of ``results.json`` (one per method × target × budget × seed, with the
test accuracy of its SubNet trained from scratch with the common final schedule, the exact
cost on the target and the search time; the searches also record ``pipeline_accuracy``, what
``qdarts search`` itself delivered: the SubNet with the supernet's weights, fine-tuned).
Output: per method, target and budget the accuracy mean ± std over seeds, mean exact cost,
how many seeds met the budget, mean search time; per target and budget whether the joint
search is on the front.
"""

from collections import defaultdict
from pathlib import Path

import numpy as np

METHODS = {
  "joint": "1. qdarts joint search (ops + bits)",
  "fp_w8a8": "2a. 8-bit search → uniform 8-bit QAT",
  "fp_w4a4": "2b. 8-bit search → uniform 4-bit QAT",
  "fp_bits": "3. 8-bit search → bits-only search",
  "random": "4. random search (best of N in budget)",
}


def summarise(records: list[dict]) -> list[dict]:
  """One row per (target, budget fraction, method), in METHODS order, seeds aggregated."""
  groups = defaultdict(list)
  for r in records:
    groups[(r["target"], r["fraction"], r["method"])].append(r)
  rows = []
  for (target, fraction, method), rs in sorted(
    groups.items(), key=lambda kv: (kv[0][0], kv[0][1], list(METHODS).index(kv[0][2]))
  ):
    acc = np.array([r["accuracy"] for r in rs])
    rows.append(
      {
        "target": target,
        "metric": rs[0]["metric"],
        "fraction": fraction,
        "budget": rs[0]["budget"],
        "method": method,
        "seeds": len(rs),
        "accuracy_mean": float(acc.mean()),
        "accuracy_std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
        "accuracy_kind": sorted({r["accuracy_kind"] for r in rs}),
        "cost_mean": float(np.mean([r["cost"] for r in rs])),
        "met_budget": sum(r["cost"] <= r["budget"] for r in rs),
        "search_s_mean": float(np.mean([r["search_s"] for r in rs])),
        "random_n": sorted({r["random_n"] for r in rs if r.get("random_n") is not None}),
        "pipeline_accuracy_mean": _mean_of(rs, "pipeline_accuracy"),
      }
    )
  return rows


def _mean_of(records: list[dict], key: str) -> float | None:
  values = [r[key] for r in records if r.get(key) is not None]
  return float(np.mean(values)) if values else None


def front_verdicts(rows: list[dict]) -> list[dict]:
  """Per (target, budget): the joint search against the baselines that meet the budget.

  ``on_front``: no baseline meeting the budget has both a lower-or-equal mean cost and a
  higher mean accuracy than the joint search; ``best_baseline``: the most accurate baseline
  that met the budget at every seed, and ``gap_pp`` the joint search's lead over it in
  percentage points (negative: behind), with ``gap_se_pp`` the standard error of that
  difference over seeds.
  """
  verdicts = []
  cells = defaultdict(dict)
  for row in rows:
    cells[(row["target"], row["fraction"])][row["method"]] = row
  for (target, fraction), by_method in sorted(cells.items()):
    joint = by_method.get("joint")
    if joint is None:
      continue
    baselines = [r for m, r in by_method.items() if m != "joint" and r["met_budget"] == r["seeds"]]
    dominating = [
      r["method"]
      for r in baselines
      if r["cost_mean"] <= joint["cost_mean"] and r["accuracy_mean"] > joint["accuracy_mean"]
    ]
    best = max(baselines, key=lambda r: r["accuracy_mean"], default=None)
    verdict = {
      "target": target,
      "fraction": fraction,
      "joint_met_budget": f"{joint['met_budget']}/{joint['seeds']}",
      "on_front": not dominating,
      "dominated_by": dominating,
      "best_baseline": best["method"] if best else None,
    }
    if best:
      verdict["gap_pp"] = 100 * (joint["accuracy_mean"] - best["accuracy_mean"])
      verdict["gap_se_pp"] = 100 * float(
        np.hypot(
          joint["accuracy_std"] / np.sqrt(joint["seeds"]),
          best["accuracy_std"] / np.sqrt(best["seeds"]),
        )
      )
    verdicts.append(verdict)
  return verdicts


def _cost(value: float, metric: str) -> str:
  if metric == "bops":
    return f"{value / 1e6:.2f} M"
  if metric == "latency_ms":
    return f"{value * 1e3:.1f} µs"
  return f"{value:.4g}"


def markdown(rows: list[dict], verdicts: list[dict], header: str) -> str:
  """results.md: a header, one table per target, and the front verdicts."""
  out = [header, ""]
  for target in sorted({r["target"] for r in rows}):
    trows = [r for r in rows if r["target"] == target]
    metric = trows[0]["metric"]
    unit = {"bops": "MBOPs", "latency_ms": "µs"}.get(metric, metric)
    out += [
      f"### Target `{target}`, budget on `{metric}`",
      "",
      f"| budget ({unit}) | method | test accuracy (mean ± std) | exact cost ({unit}) "
      "| met budget | search time (s) | `qdarts search` output (mean) |",
      "|---|---|---|---|---|---|---|",
    ]
    for r in trows:
      kind = "" if r["accuracy_kind"] == ["onnx_runtime"] else " (fake-quant)"
      n = f" (N={','.join(map(str, r['random_n']))})" if r["random_n"] else ""
      p = r.get("pipeline_accuracy_mean")
      pipeline = "—" if p is None else f"{100 * p:.2f}"
      out.append(
        f"| {r['fraction']:.0%}: {_cost(r['budget'], metric)} | {METHODS[r['method']]}{n} | "
        f"{100 * r['accuracy_mean']:.2f} ± {100 * r['accuracy_std']:.2f}{kind} | "
        f"{_cost(r['cost_mean'], metric)} | {r['met_budget']}/{r['seeds']} | "
        f"{r['search_s_mean']:.1f} | {pipeline} |"
      )
    out.append("")
  out += [
    "### Is the joint search on the front?",
    "",
    "| target | budget | joint met budget | on front | best baseline in budget "
    "| joint − best (pp ± s.e.) |",
    "|---|---|---|---|---|---|",
  ]
  for v in verdicts:
    gap = f"{v['gap_pp']:+.2f} ± {v['gap_se_pp']:.2f}" if "gap_pp" in v else "—"
    front = "yes" if v["on_front"] else f"no (dominated by {', '.join(v['dominated_by'])})"
    out.append(
      f"| {v['target']} | {v['fraction']:.0%} | {v['joint_met_budget']} | {front} | "
      f"{v['best_baseline'] or '—'} | {gap} |"
    )
  return "\n".join(out) + "\n"


def pareto_plot(records: list[dict], path: Path) -> None:
  """Accuracy against exact cost, one panel per target: every seed as a faint point, each
  method × budget mean with its std as error bars, the budgets as dotted lines."""
  import matplotlib  # noqa: PLC0415

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415

  targets = sorted({r["target"] for r in records})
  fig, axes = plt.subplots(1, len(targets), figsize=(6 * len(targets), 4.5), squeeze=False)
  colors = dict(zip(METHODS, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
  for ax, target in zip(axes[0], targets, strict=True):
    trs = [r for r in records if r["target"] == target]
    metric = trs[0]["metric"]
    for budget in sorted({r["budget"] for r in trs}):
      ax.axvline(budget, color="grey", linestyle=":", linewidth=1)
    for method, label in METHODS.items():
      mrs = [r for r in trs if r["method"] == method]
      if not mrs:
        continue
      ax.scatter(
        [r["cost"] for r in mrs],
        [100 * r["accuracy"] for r in mrs],
        color=colors[method],
        alpha=0.25,
        s=12,
      )
      for budget in sorted({r["budget"] for r in mrs}):
        brs = [r for r in mrs if r["budget"] == budget]
        acc = 100 * np.array([r["accuracy"] for r in brs])
        ax.errorbar(
          np.mean([r["cost"] for r in brs]),
          acc.mean(),
          yerr=acc.std(ddof=1) if len(acc) > 1 else 0.0,
          color=colors[method],
          marker="o",
          capsize=3,
          label=label if budget == min(r["budget"] for r in mrs) else None,
        )
    ax.set_xlabel(f"exact cost on {target} ({metric})")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{target}: dotted lines are the budgets")
    ax.grid(alpha=0.3)
  axes[0][0].legend(fontsize=7, loc="lower right")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
