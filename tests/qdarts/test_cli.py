"""The `qdarts` command: help, a whole run, and one clear error line for each bad input."""

import os
import re
import subprocess
import sys

import pytest

TINY = [
  "data.dataset=synthetic",
  "data.batch_size=32",
  "space.stem_channels=4",
  "space.channels=[4,8]",
  "space.strides=[1,2]",
  "space.ops=[conv3x3,skip]",
  "search.epochs=2",
  "search.warmup_epochs=1",
  "train.epochs=1",
]


def qdarts(*args, cwd):
  env = {**os.environ, "QDARTS_CACHE_DIR": str(cwd / ".cache")}
  return subprocess.run(
    [sys.executable, "-m", "qdarts.cli", *args],
    cwd=cwd,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )


def test_help_lists_commands_and_options(tmp_path):
  top = qdarts("--help", cwd=tmp_path)
  assert top.returncode == 0 and "search" in top.stdout
  sub = qdarts("search", "--help", cwd=tmp_path)
  assert sub.returncode == 0
  for option in ("--out", "KEY=VALUE", "--no-cache", "quickstart"):
    assert option in sub.stdout


def test_search_writes_a_run_folder(tmp_path):
  proc = qdarts("search", *TINY, cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr
  (run,) = (tmp_path / "runs").iterdir()
  assert run.name.startswith("quickstart-")
  for name in ("config.yaml", "subnet.json", "result.json", "report.md", "model.onnx"):
    assert (run / name).exists(), name
  assert list((run / "events").glob("events.out.tfevents.*"))
  assert "run folder:" in proc.stdout


BAD = [
  (["search", "missing.yaml"], "missing.yaml: config file not found"),
  (["search", "search.epochs=2", "search.bogus=1"], "search.bogus: unknown key"),
  (["search", "search.epochs=two"], "search.epochs: expected an integer, got 'two'"),
  (["search", "space.ops=[conv3x3,conv9x9]"], "space.ops[1]: expected one of"),
  (["search", "cost.target=tpu9000"], "cost.target: unknown target 'tpu9000'; built-in: bops"),
  (["search", "quant.w_bits=[]"], "quant.w_bits: expected a non-empty list"),
  (["search", "cost.target=nothere.yaml"], "nothere.yaml"),
  (["search", "cost.metric=latency_ms"], "cost.metric: target 'bops' provides"),
  (["search", "--frobnicate"], "unrecognized arguments: --frobnicate"),
  (["serach"], "invalid choice: 'serach'"),
]


@pytest.mark.parametrize(("args", "message"), BAD)
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(tmp_path, args, message):
  proc = qdarts(*args, cwd=tmp_path)
  assert proc.returncode == 2
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1, proc.stderr
  assert lines[0].startswith("qdarts")
  assert message in lines[0]
  assert "Traceback" not in proc.stderr
  assert not (tmp_path / "runs").exists()


def test_invalid_target_file_names_file_and_field(tmp_path):
  from importlib import resources

  good = (resources.files("qdarts.configs.targets") / "bitfusion45.yaml").read_text()
  bad = tmp_path / "mytarget.yaml"
  bad.write_text(re.sub(r"(?m)^clock_mhz: .*$", "clock_mhz: -5", good))
  proc = qdarts("search", f"cost.target={bad}", cwd=tmp_path)
  assert proc.returncode == 2
  assert "mytarget.yaml" in proc.stderr and "clock_mhz" in proc.stderr
  assert len(proc.stderr.strip().splitlines()) == 1
  assert not (tmp_path / "runs").exists()


def test_out_folder_that_is_not_empty_is_refused(tmp_path):
  out = tmp_path / "taken"
  out.mkdir()
  (out / "keep.txt").write_text("mine")
  proc = qdarts("search", *TINY, "--out", str(out), cwd=tmp_path)
  assert proc.returncode == 2 and "not empty" in proc.stderr
  assert [p.name for p in out.iterdir()] == ["keep.txt"]
