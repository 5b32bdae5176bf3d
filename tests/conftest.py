"""Suite-wide setup: the persistent XLA compilation cache (compile time dominates small tests),
and float32 matmuls and convs everywhere: tests compare JAX networks with numpy references, and
on a GPU JAX's default precision is TF32 (measured on an H100: 33 accumulator LSBs apart)."""

import os
from pathlib import Path

import jax
import pytest

_CACHE = os.environ.get("QDARTS_TEST_CACHE") or str(Path.home() / ".cache" / "qdarts" / "jax-tests")
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture(scope="session")
def tiny_overrides() -> list[str]:
  """Overrides of the quickstart small enough to search, fine-tune and export in seconds."""
  return [
    "data.dataset=synthetic",
    "data.batch_size=32",
    "space.stem_channels=4",
    "space.channels=[4,8]",
    "space.strides=[1,2]",
    "space.ops=[conv3x3,dwsep3x3,skip]",
    "search.epochs=3",
    "search.warmup_epochs=1",
    "train.epochs=1",
  ]


@pytest.fixture(scope="session")
def quickstart_path() -> Path:
  return Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"


@pytest.fixture
def compilation_cache_dir() -> str:
  """The suite's persistent compilation cache, for subprocesses (``QDARTS_CACHE_DIR``)."""
  return _CACHE


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, quickstart_path, tiny_overrides):
  """``(run_dir, result)`` of one whole pipeline run on the tiny config, shared by tests."""
  from qdarts import pipeline
  from qdarts.config import load_config

  cfg = load_config(quickstart_path, [*tiny_overrides, "train.epochs=2"])
  run_dir = tmp_path_factory.mktemp("run")
  result = pipeline.run(pipeline.prepare(cfg), run_dir)
  return run_dir, result
