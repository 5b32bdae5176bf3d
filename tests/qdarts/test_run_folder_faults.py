"""A full disk or an unwritable run folder: one clear error, earlier checkpoints intact."""

import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from qdarts import pipeline
from qdarts.checkpoint import latest_checkpoint
from qdarts.config import load_config
from qdarts.errors import RunFolderError

OVERRIDES = ["search.checkpoint_every=4", "search.keep_checkpoints=10"]


def _disk_full_from(monkeypatch, first_failing: str):
  """From the checkpoint named ``first_failing`` on, checkpoint writes go to /dev/full: the
  kernel answers ENOSPC, as on a full disk. Other files are written normally."""
  real_mkstemp = tempfile.mkstemp

  def mkstemp(*args, prefix="", **kwargs):
    fd, tmp = real_mkstemp(*args, prefix=prefix, **kwargs)
    if prefix.startswith(".search-E") and prefix[1:] >= first_failing:
      os.close(fd)
      fd = os.open("/dev/full", os.O_WRONLY)
    return fd, tmp

  monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def test_full_disk_mid_search_fails_cleanly_and_the_run_resumes(
  quickstart_path, tmp_path, tiny_overrides, monkeypatch
):
  cfg = load_config(quickstart_path, [*tiny_overrides, *OVERRIDES])
  _disk_full_from(monkeypatch, "search-E0002")  # epoch 1's checkpoints are written
  with pytest.raises(RunFolderError, match=r"search-E0002-S\d+\.npz: cannot write \(No space left"):
    pipeline.run(pipeline.prepare(cfg), tmp_path)
  folder = tmp_path / "checkpoints"
  assert not list(folder.glob(".*.tmp")), "a torn temporary file was left behind"
  newest = latest_checkpoint(folder)
  assert newest.name.startswith("search-E0001")
  with np.load(newest, allow_pickle=False) as npz:
    assert "checkpoint.json" in npz.files  # whole, readable
  monkeypatch.undo()  # space is back: the same run resumes from its intact checkpoint
  resumed = pipeline.run(pipeline.prepare(cfg), tmp_path, resume=True)
  assert [row["epoch"] for row in resumed["search_history"]] == [1, 2, 3]
  assert (tmp_path / "result.json").exists()


def test_unwritable_run_folder_is_one_line_exit_2(tmp_path, compilation_cache_dir):
  env = {**os.environ, "QDARTS_TEST_CACHE": str(compilation_cache_dir)}
  proc = subprocess.run(
    [sys.executable, "-m", "qdarts.cli", "search", "--out", "/proc/qdarts-run"],
    cwd=tmp_path,
    capture_output=True,
    text=True,
    env=env,
    timeout=300,
  )
  assert proc.returncode == 2, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and "Traceback" not in proc.stderr
  assert lines[0].startswith("qdarts: error: --out /proc/qdarts-run: cannot create the run folder")
