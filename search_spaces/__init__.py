"""Search spaces: ordered choice points of candidate ops built from quantized primitives."""

from search_spaces.base import ArchParam, Choice, NotAChain, PrecParam, Probs, SearchSpace
from search_spaces.candidates import CANDIDATE_OPS, MBConvOp, is_chain_op
from search_spaces.chain import ChainSpace, SpaceFileError, load_chain_space, parse_chain_space
from search_spaces.chain_net import ChainLayout, ChainNet, ChainPoint
from search_spaces.mbconv import MBConvSpace
from search_spaces.ops import QAvgPool, QConv, QDense, same_padding
from search_spaces.tiny import TinyNet, TinySpace

SPACES = {"tiny": TinySpace}

__all__ = [
  "ArchParam",
  "NotAChain",
  "PrecParam",
  "CANDIDATE_OPS",
  "SPACES",
  "ChainLayout",
  "ChainNet",
  "ChainPoint",
  "ChainSpace",
  "Choice",
  "MBConvOp",
  "MBConvSpace",
  "Probs",
  "QAvgPool",
  "QConv",
  "QDense",
  "SearchSpace",
  "SpaceFileError",
  "TinyNet",
  "TinySpace",
  "is_chain_op",
  "load_chain_space",
  "parse_chain_space",
  "same_padding",
]
