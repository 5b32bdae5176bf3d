"""Search spaces: ordered choice points of candidate ops built from quantized primitives."""

from search_spaces.base import ArchParam, Choice, NotAChain, PrecParam, Probs, SearchSpace
from search_spaces.candidates import CANDIDATE_OPS
from search_spaces.ops import QAvgPool, QConv, QDense, same_padding
from search_spaces.tiny import TinyNet, TinySpace

SPACES = {"tiny": TinySpace}

__all__ = [
  "ArchParam",
  "NotAChain",
  "PrecParam",
  "CANDIDATE_OPS",
  "SPACES",
  "Choice",
  "Probs",
  "QAvgPool",
  "QConv",
  "QDense",
  "SearchSpace",
  "TinyNet",
  "TinySpace",
  "same_padding",
]
