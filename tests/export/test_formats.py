"""A format that cannot express a SubNet is refused in one line, before anything is written."""

import dataclasses
import importlib.util
import os
import subprocess
import sys

import pytest

from qdarts.errors import ConfigError
from qdarts.export.chain_file import save_chain
from qdarts.export.formats import FORMATS, check_formats, export_and_verify

HAS_LITERT = importlib.util.find_spec("ai_edge_litert") is not None


@dataclasses.dataclass(frozen=True)
class QMystery:
  """A layer kind no writer knows (as a future IR kind would be to an older writer)."""

  name: str
  in_step: float = 0.1
  a_bits: int = 8


def _with_layer(chain, index, layer):
  layers = list(chain.layers)
  layers[index] = layer
  return dataclasses.replace(chain, layers=tuple(layers))


def _grouped(chain):
  """The first expand 1x1 conv (4 → 12) as a 2-group convolution: no TFLite op for it."""
  expand = chain.layers[1]
  grouped = dataclasses.replace(expand, weight=expand.weight[:, :, :2, :], groups=2)
  return _with_layer(chain, 1, grouped)


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_unknown_layer_kind_is_refused_per_format(mbconv_chain, tmp_path, fmt):
  if fmt == "tflite" and not HAS_LITERT:
    pytest.skip("ai-edge-litert is not installed")
  chain, x = mbconv_chain
  bad = _with_layer(chain, 2, QMystery("stage0.block0.mystery"))
  message = rf"^--format {fmt}: layer 2 'stage0.block0.mystery': unsupported layer type QMystery$"
  with pytest.raises(ConfigError, match=message):
    export_and_verify(bad, tmp_path, (fmt,), x[:4])
  assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not HAS_LITERT, reason="ai-edge-litert is not installed")
def test_a_grouped_conv_refused_by_tflite_writes_no_other_format(mbconv_chain, tmp_path):
  chain, x = mbconv_chain
  bad = _grouped(chain)
  check_formats(bad, ("onnx", "c"))  # the others can express it
  with pytest.raises(ConfigError, match=r"--format tflite: layer .*expand1x1.*groups=2"):
    export_and_verify(bad, tmp_path, FORMATS, x[:4])
  assert list(tmp_path.iterdir()) == []  # not even model.onnx, the first format


@pytest.mark.skipif(not HAS_LITERT, reason="ai-edge-litert is not installed")
def test_qdarts_export_refuses_in_one_line_and_writes_nothing(
  mbconv_chain, tmp_path, compilation_cache_dir
):
  chain, _ = mbconv_chain
  run = tmp_path / "run"
  run.mkdir()
  save_chain(_grouped(chain), run / "subnet.npz")
  before = sorted(p.name for p in run.iterdir())
  proc = subprocess.run(
    [sys.executable, "-m", "qdarts.cli", "export", str(run), "--format", "all"],
    env={**os.environ, "QDARTS_CACHE_DIR": compilation_cache_dir},
    cwd=tmp_path,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 2, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and "--format tflite:" in lines[0] and "groups=2" in lines[0], lines
  assert "Traceback" not in proc.stderr
  assert sorted(p.name for p in run.iterdir()) == before
