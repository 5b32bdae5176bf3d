"""A trained DARTS final network exported as `qdarts search` exports it (darts_stages.export_final),
then rebuilt from the run folder by `qdarts export RUN` and run by `qdarts eval`."""

import dataclasses
import os
import shutil
import subprocess
import sys

import pytest

from qdarts import darts_stages, pipeline
from qdarts.config import load_config
from qdarts.export.graph_file import load_subnet, save_graph
from qdarts.export.graph_ir import Grid, QuantizedGraph
from search_spaces.darts_genotype import Genotype

TINY_FINAL = [
  "data.dataset=synthetic",
  "data.batch_size=32",
  "space.name=darts",
  "space.cells=3",
  "space.init_channels=4",
  "space.nodes=2",
  "space.partial_channels=2",
  "train.epochs=1",
  "train.cells=3",
  "train.init_channels=4",
  "quant.w_bits=[2,4,8]",
  "quant.a_bits=[4,8]",
]
GENOTYPE = Genotype(
  (
    ("sep_conv_3x3", 0, 2, 4),
    ("skip_connect", 1, None, None),
    ("dil_conv_5x5", 2, 4, 8),
    ("avg_pool_3x3", 0, None, None),
  ),
  (2, 3),
  (
    ("skip_connect", 0, 8, 8),
    ("max_pool_3x3", 1, None, None),
    ("sep_conv_3x3", 2, 4, 4),
    ("dil_conv_3x3", 1, 2, 8),
  ),
  (2, 3),
)


@pytest.fixture(scope="module")
def darts_export(quickstart_path, tmp_path_factory):
  setup = pipeline.prepare(load_config(quickstart_path, TINY_FINAL))
  net, fq_logits, _, _ = darts_stages.train_final(GENOTYPE, setup.cfg, setup.data)
  data = setup.data
  metadata = {
    "dataset": data.name,
    **data.eval_spec.metadata(),
    "data": pipeline.data_metadata(setup.cfg),
  }
  run_dir = tmp_path_factory.mktemp("darts_export")
  accuracies, verification, skipped = darts_stages.export_final(
    net, data, metadata, run_dir, ("onnx", "c", "tflite"), fq_logits
  )
  return run_dir, accuracies, verification, skipped


def _cli(*args, cache):
  env = {**os.environ, "QDARTS_CACHE_DIR": cache}
  return subprocess.run(
    [sys.executable, "-m", "qdarts.cli", *map(str, args)],
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )


def test_export_final_writes_the_graph_and_every_format_verified(darts_export):
  run_dir, accuracies, verification, skipped = darts_export
  assert isinstance(load_subnet(run_dir / "subnet.npz"), QuantizedGraph)
  assert (run_dir / "model.onnx").stat().st_size > 0 and (run_dir / "model.tflite").exists()
  assert (run_dir / "c" / "manifest.json").exists() and skipped is None
  assert verification["onnx"]["max_logit_diff_lsb"] <= 1.0
  assert verification["onnx"]["prediction_agreement"] == 1.0
  assert verification["tflite"]["max_logit_diff_lsb"] <= 1.0
  if shutil.which("cc") or shutil.which("gcc"):
    assert verification["c"]["bit_exact"] is True
  assert accuracies["prediction_agreement"] >= 0.99  # ONNX Runtime against the JAX network
  assert abs(accuracies["onnx_minus_fake_quant_pp"]) <= 1.0


def test_qdarts_export_and_eval_on_a_darts_run(darts_export, compilation_cache_dir):
  run_dir = darts_export[0]
  (run_dir / "model.onnx").unlink()
  shutil.rmtree(run_dir / "c")
  proc = _cli("export", run_dir, "--format", "onnx,c", cache=compilation_cache_dir)
  assert proc.returncode == 0, proc.stderr
  assert "onnx:" in proc.stdout and "c:" in proc.stdout and (run_dir / "model.onnx").exists()
  accuracies = []
  for model in (run_dir / "model.onnx", run_dir / "c"):
    proc = _cli("eval", model, cache=compilation_cache_dir)
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("accuracy:"))
    accuracies.append(float(line.split()[1]))
  assert accuracies[0] == accuracies[1]  # ONNX Runtime and the C build predict alike


def test_unsupported_graph_is_refused_in_one_line(darts_export, tmp_path, compilation_cache_dir):
  """A graph TFLite cannot hold (a signed 4-bit state): exit 2, one line, nothing written."""
  run_dir = tmp_path / "run"
  shutil.copytree(darts_export[0], run_dir)
  graph = load_subnet(run_dir / "subnet.npz")
  nodes = tuple(
    dataclasses.replace(n, out=Grid(n.out.step, 4, True)) if n.name == "stem" else n
    for n in graph.nodes
  )
  save_graph(dataclasses.replace(graph, nodes=nodes), run_dir / "subnet.npz")
  (run_dir / "model.tflite").unlink()
  before = sorted(p.name for p in run_dir.iterdir())
  proc = _cli("export", run_dir, "--format", "all", cache=compilation_cache_dir)
  assert proc.returncode == 2
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and "--format tflite: node 'stem': TFLite holds signed" in lines[0], lines
  assert sorted(p.name for p in run_dir.iterdir()) == before  # nothing written
