"""Live progress of a run in the terminal (rich): one bar per stage with its metrics."""

from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table


class RichReporter:
  """Implements ``qdarts.pipeline.Reporter`` with rich progress bars."""

  def __init__(self):
    self.console = Console()
    self.progress = Progress(
      TextColumn("{task.description:<10}"),
      BarColumn(bar_width=12),
      MofNCompleteColumn(),
      TimeElapsedColumn(),
      TextColumn("{task.fields[metrics]}"),
      console=self.console,
    )
    self.tasks: dict[str, int] = {}

  def __enter__(self):
    self.progress.start()
    return self

  def __exit__(self, *exc):
    self.progress.stop()

  def start(self, stage: str, total: int) -> None:
    self.tasks[stage] = self.progress.add_task(stage, total=total, metrics="compiling…")

  def advance(self, stage: str, metrics: dict) -> None:
    shown = []
    for key, label in (
      ("loss", "loss"),
      ("acc", "acc"),
      ("expected_cost", "E[cost]"),
      ("argmax_cost", "cost"),
      ("tau", "τ"),
    ):
      if key in metrics:
        shown.append(f"{label} {metrics[key]:.4g}")
    self.progress.update(self.tasks[stage], advance=1, metrics="  ".join(shown))

  def finish(self, stage: str, summary: str) -> None:
    self.progress.console.print(f"[green]✓[/] {stage}: {summary}")

  def summary(self, result: dict, run_dir: Path) -> None:
    table = Table(title=f"SubNet ({result['target']}, {result['metric']})")
    for col in ("choice", "op", "w bits", "a bits"):
      table.add_column(col)
    for layer in result["subnet"]:
      bits = ["—" if b is None else str(b) for b in (layer["w_bits"], layer["a_bits"])]
      table.add_row(layer["choice"], layer["op"], *bits)
    self.console.print(table)
    acc = result["accuracy"]
    exported = (
      f"ONNX Runtime {acc['onnx_runtime']:.4f}"
      if "onnx_runtime" in acc
      else "not exported (see report.md)"
    )
    self.console.print(
      f"test accuracy: fake-quant {acc['fake_quant']:.4f}, {exported}; "
      f"{result['metric']} {result['cost'][result['metric']]:.4g}"
    )
    self.console.print(f"run folder: {run_dir}")
