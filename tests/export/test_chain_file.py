"""subnet.npz: a QuantizedChain saved without pickle and read back unchanged."""

import importlib.util
import pickle
from pathlib import Path

import numpy as np
import pytest

from qdarts.errors import ConfigError
from qdarts.export import reference_forward
from qdarts.export.chain_file import load_chain, save_chain

_spec = importlib.util.spec_from_file_location(
  "onnx_export_chains", Path(__file__).with_name("test_onnx_export.py")
)
_chains = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_chains)


def test_round_trip_keeps_every_field_and_the_forward(tmp_path):
  chain = _chains.make_chain()
  chain = type(chain)(chain.layers, chain.input_shape, chain.num_classes, {"dataset": "digits"})
  back = load_chain(save_chain(chain, tmp_path / "subnet.npz"))
  assert back.metadata == {"dataset": "digits"} and back.input_shape == chain.input_shape
  for a, b in zip(chain.layers, back.layers, strict=True):
    assert type(a) is type(b) and a.name == b.name
  x = np.random.default_rng(0).uniform(0, 1, (4, *chain.input_shape)).astype(np.float32)
  np.testing.assert_array_equal(reference_forward(chain, x), reference_forward(back, x))


def test_a_pickle_is_refused_without_running_it(tmp_path):
  path = tmp_path / "subnet.npz"
  np.save(path.with_suffix(".npy"), np.array([{"a": 1}], dtype=object), allow_pickle=True)
  path.write_bytes(pickle.dumps({"not": "a chain"}))
  with pytest.raises(ConfigError, match="not a qdarts SubNet file"):
    load_chain(path)


def test_missing_and_foreign_files_are_named(tmp_path):
  with pytest.raises(ConfigError, match="no.npz: SubNet file not found"):
    load_chain(tmp_path / "no.npz")
  foreign = tmp_path / "foreign.npz"
  np.savez(foreign, x=np.zeros(3))
  with pytest.raises(ConfigError, match="foreign.npz: not a qdarts SubNet file"):
    load_chain(foreign)
