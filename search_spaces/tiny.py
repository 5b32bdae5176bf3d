"""The ``tiny`` chain space: stem → L choice layers → global pool → classifier.

Each choice layer picks one candidate op (conv3x3, conv5x5, depthwise-separable 3x3/5x5, skip
where the shape allows) and, for that op, one weight and one activation bit-width. The stem and
the classifier are fixed at 8 bits. It is small enough for tests and the quickstart on a CPU.
The network is the shared :class:`~search_spaces.chain_net.ChainNet`.
"""

from collections.abc import Sequence

from search_spaces.candidates import CANDIDATE_OPS
from search_spaces.chain_net import FIXED_BITS, ChainLayout, ChainNet, ChainSpaceBase

TinyNet = ChainNet  # the supernet and SubNet of a TinySpace

__all__ = ["FIXED_BITS", "TinyNet", "TinySpace"]


class TinySpace(ChainSpaceBase):
  """A chain of choice layers with given widths and strides; every layer offers every op.

  Args:
    input_shape: ``(H, W, C)`` of one sample.
    num_classes: classifier outputs.
    stem_channels: output channels of the fixed 3×3 stem.
    channels: output channels of each choice layer (``L`` entries).
    strides: stride of each choice layer (1 or 2).
    ops: candidate op names, a subset of ``CANDIDATE_OPS``.
  """

  name = "tiny"

  def __init__(
    self,
    input_shape: Sequence[int],
    num_classes: int,
    stem_channels: int,
    channels: Sequence[int],
    strides: Sequence[int],
    ops: Sequence[str],
  ):
    if len(channels) != len(strides):
      raise ValueError("channels and strides must have the same length")
    unknown = [op for op in ops if op not in CANDIDATE_OPS]
    if unknown:
      raise ValueError(f"unknown op {unknown[0]!r}; known: {', '.join(CANDIDATE_OPS)}")
    layers = [
      (f"layer{i}", cout, s, tuple(ops))
      for i, (cout, s) in enumerate(zip(channels, strides, strict=True))
    ]
    super().__init__(
      ChainLayout.plan(input_shape, num_classes, stem_channels=stem_channels, layers=layers)
    )
    self.stem_channels = stem_channels
    self.channels, self.strides = tuple(channels), tuple(strides)
