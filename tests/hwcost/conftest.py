"""Fixtures shared by the hwcost tests: the built-in target and a tiny 8-bit-only target."""

import pathlib

import pytest
import yaml

from hwcost import load_target

_REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def bitfusion_path() -> pathlib.Path:
  return _REPO / "configs" / "targets" / "bitfusion45.yaml"


def _eight_bit_doc(policy: str) -> dict:
  """A target that runs only w8/a8: 100 MHz, 10 MACs/cycle, 4 B/cycle, 1 pJ/MAC, 2 pJ/B."""

  def op():
    return {
      "macs_per_cycle": {"a8w8": 10},
      "energy_pj_per_mac": {"a8w8": 1.0},
      "overhead_cycles": 5,
    }

  return {
    "schema_version": 1,
    "name": "eight",
    "description": "test target: w8/a8 only",
    "sources": ["made up for tests"],
    "clock_mhz": 100,
    "precision": {"supported": [[8, 8]], "unsupported_policy": policy},
    "memory": {"bandwidth_bytes_per_cycle": 4, "energy_pj_per_byte": 2.0},
    "compute": {"conv": op(), "linear": op()},
  }


@pytest.fixture
def eight_bit_doc() -> dict:
  """The 8-bit-only target's document under policy ``promote``, fresh for each test."""
  return _eight_bit_doc("promote")


@pytest.fixture
def eight_bit_target(tmp_path):
  """Factory: the 8-bit-only target under a given policy, written to tmp_path/eight.yaml."""

  def make(policy: str):
    path = tmp_path / "eight.yaml"
    path.write_text(yaml.safe_dump(_eight_bit_doc(policy)))
    return load_target(path)

  return make
