"""The `qdarts` command: help, a whole run, and one clear error line for each bad input."""

import os
import re
import subprocess
import sys

import pytest


@pytest.fixture
def qdarts(compilation_cache_dir):
  """Runs ``python -m qdarts.cli ARGS`` in ``cwd`` with the suite's compilation cache."""

  def run(*args, cwd):
    return _run(args, cwd, compilation_cache_dir)

  return run


def _run(args, cwd, cache):
  env = {**os.environ, "QDARTS_CACHE_DIR": cache}
  return subprocess.run(
    [sys.executable, "-m", "qdarts.cli", *args],
    cwd=cwd,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )


def test_help_lists_commands_and_options(qdarts, tmp_path):
  top = qdarts("--help", cwd=tmp_path)
  assert top.returncode == 0 and "search" in top.stdout
  sub = qdarts("search", "--help", cwd=tmp_path)
  assert sub.returncode == 0
  for option in ("--out", "KEY=VALUE", "--no-cache", "quickstart"):
    assert option in sub.stdout


def test_search_writes_a_run_folder(qdarts, tmp_path, tiny_overrides):
  proc = qdarts("search", *tiny_overrides, cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr
  (run,) = (tmp_path / "runs").iterdir()
  assert run.name.startswith("quickstart-")
  for name in ("config.yaml", "subnet.json", "result.json", "report.md", "model.onnx"):
    assert (run / name).exists(), name
  (events,) = (run / "events").glob("events.out.tfevents.*")
  tags = _event_tags(events)
  for tag in (
    "search/loss",
    "search/acc",
    "search/expected_cost",
    "search/argmax_cost",
    "search/tau",
    "search/arch_ce",
    "finetune/loss",
    "final/onnx_runtime",
    "final/fake_quant",
    "final/bops",
  ):
    assert tag in tags, (tag, sorted(tags))
  assert "run folder:" in proc.stdout


def _event_tags(path) -> set[str]:
  """Scalar tags in a TensorBoard event file, read with tensorboardX's own protobufs."""
  import struct

  from tensorboardX.proto import event_pb2

  tags, data = set(), path.read_bytes()
  pos = 0
  while pos < len(data):  # TFRecord: length u64, crc u32, payload, crc u32
    (length,) = struct.unpack("<Q", data[pos : pos + 8])
    event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length])
    tags.update(v.tag for v in event.summary.value)
    pos += 12 + length + 4
  return tags


BAD = [
  (["search", "missing.yaml"], "missing.yaml: config file not found"),
  (["search", "search.epochs=2", "search.bogus=1"], "search.bogus: unknown key"),
  (["search", "search.epochs=two"], "search.epochs: expected an integer, got 'two'"),
  (["search", "space.ops=[conv3x3,conv9x9]"], "space.ops[1]: expected one of"),
  (["search", "cost.target=tpu9000"], "cost.target: unknown target 'tpu9000'; built-in: bops"),
  (["search", "quant.w_bits=[]"], "quant.w_bits: expected a non-empty list"),
  (["search", "cost.target=nothere.yaml"], "nothere.yaml"),
  (["search", "cost.metric=latency_ms"], "cost.metric: target 'bops' provides"),
  (["search", "data.batch_size=5000"], "data.batch_size: 5000 is larger than each training half"),
  (["search", "--frobnicate"], "unrecognized arguments: --frobnicate"),
  (["serach"], "invalid choice: 'serach'"),
  (["train", "nowhere"], "nowhere: no such file (expected a DARTS run folder"),
  (["train"], "train: give the genotype"),
  (["search", "space.name=darts", "cost.form=hinge", "cost.budget=10"], "cost.form: 'hinge'"),
]


@pytest.mark.parametrize(("args", "message"), BAD)
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(qdarts, tmp_path, args, message):
  proc = qdarts(*args, cwd=tmp_path)
  assert proc.returncode == 2
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1, proc.stderr
  assert lines[0].startswith("qdarts")
  assert message in lines[0]
  assert "Traceback" not in proc.stderr
  assert not (tmp_path / "runs").exists()


def test_invalid_target_file_names_file_and_field(qdarts, tmp_path):
  from importlib import resources

  good = (resources.files("qdarts.configs.targets") / "bitfusion45.yaml").read_text()
  bad = tmp_path / "mytarget.yaml"
  bad.write_text(re.sub(r"(?m)^clock_mhz: .*$", "clock_mhz: -5", good))
  proc = qdarts("search", f"cost.target={bad}", cwd=tmp_path)
  assert proc.returncode == 2
  assert "mytarget.yaml" in proc.stderr and "clock_mhz" in proc.stderr
  assert len(proc.stderr.strip().splitlines()) == 1
  assert not (tmp_path / "runs").exists()


def test_out_folder_that_is_not_empty_is_refused(qdarts, tmp_path, tiny_overrides):
  out = tmp_path / "taken"
  out.mkdir()
  (out / "keep.txt").write_text("mine")
  proc = qdarts("search", *tiny_overrides, "--out", str(out), cwd=tmp_path)
  assert proc.returncode == 2 and "not empty" in proc.stderr
  assert [p.name for p in out.iterdir()] == ["keep.txt"]
