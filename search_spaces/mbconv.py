"""The ``mbconv`` chain space: FBNet / ProxylessNAS-style stages of inverted residual blocks.

stem (3×3, 8 bits) → stages of blocks → [1×1 head conv, 8 bits] → global pool → classifier.
Stage i has ``repeats[i]`` blocks; the first has stride ``strides[i]`` and output width
``channels[i]``, the rest stride 1. Every block is a choice point with the candidates
``mb{k}x{k}_e{e}`` for every kernel k × expansion e (``candidates.MBConvOp``: 1×1 expand to
e·cin + ReLU unless e = 1, k×k depthwise + ReLU, 1×1 linear project, residual add when the
shape is unchanged) and ``skip`` where the shape is unchanged.

References:
  Wu et al., `FBNet <https://arxiv.org/abs/1812.03443>`_, CVPR 2019; Cai et al.,
  `ProxylessNAS <https://arxiv.org/abs/1812.00332>`_, ICLR 2019; Sandler et al.,
  `MobileNetV2 <https://arxiv.org/abs/1801.04381>`_, CVPR 2018.
"""

import numbers
from collections.abc import Sequence

from search_spaces.candidates import mbconv_name
from search_spaces.chain_net import ChainLayout, ChainSpaceBase


class MBConvSpace(ChainSpaceBase):
  """Stages of inverted residual blocks, one choice point per block.

  Choice points are named ``stage{i}.block{j}``; op names are ``mb{k}x{k}_e{e}`` in kernel-major
  order, then ``skip`` (if ``allow_skip``). ``op_mask()`` marks ``skip`` where the block changes
  the shape (the first block of a stage, unless stride 1 and an unchanged width).

  Args:
    input_shape: ``(H, W, C)`` of one sample.
    num_classes: classifier outputs.
    stem_channels: output channels of the fixed 3×3 stride-1 stem.
    channels, strides, repeats: per stage (``S`` entries each): output width, stride of the
      first block (1 or 2), number of blocks (≥ 1).
    kernels: depthwise kernel sizes (odd).
    expansions: expansion ratios e (≥ 1); the hidden width is e·cin.
    allow_skip: offer ``skip`` where the shape is unchanged.
    head_channels: width of a fixed 1×1 conv before the pool, or None for none.

  Raises:
    ValueError: naming the argument, for lengths that differ or out-of-range values.
  """

  name = "mbconv"

  def __init__(
    self,
    input_shape: Sequence[int],
    num_classes: int,
    *,
    stem_channels: int,
    channels: Sequence[int],
    strides: Sequence[int],
    repeats: Sequence[int],
    kernels: Sequence[int] = (3, 5, 7),
    expansions: Sequence[int] = (1, 3, 6),
    allow_skip: bool = True,
    head_channels: int | None = None,
  ):
    _check_arguments(stem_channels, channels, strides, repeats, kernels, expansions, head_channels)
    ops = tuple(mbconv_name(k, e) for k in kernels for e in expansions)
    ops += ("skip",) if allow_skip else ()
    blocks = [
      (f"stage{i}.block{j}", cout, stride if j == 0 else 1, ops)
      for i, (cout, stride, repeat) in enumerate(zip(channels, strides, repeats, strict=True))
      for j in range(repeat)
    ]
    super().__init__(
      ChainLayout.plan(
        input_shape,
        num_classes,
        stem_channels=stem_channels,
        layers=blocks,
        head_channels=head_channels,
      )
    )
    self.stem_channels, self.head_channels = stem_channels, head_channels
    self.channels, self.strides, self.repeats = tuple(channels), tuple(strides), tuple(repeats)
    self.kernels, self.expansions = tuple(kernels), tuple(expansions)


def _check_arguments(stem_channels, channels, strides, repeats, kernels, expansions, head):
  stages = len(channels)
  if stages < 1 or len(strides) != stages or len(repeats) != stages:
    raise ValueError(
      "channels, strides and repeats need one entry per stage (at least one), got "
      f"{len(channels)}, {len(strides)} and {len(repeats)}"
    )
  for name, values, ok, expected in (
    ("stem_channels", [stem_channels], lambda v: v >= 1, "positive"),
    ("channels", channels, lambda v: v >= 1, "positive"),
    ("strides", strides, lambda v: v in (1, 2), "1 or 2"),
    ("repeats", repeats, lambda v: v >= 1, "positive"),
    ("kernels", kernels, lambda v: v >= 1 and v % 2 == 1, "odd and positive"),
    ("expansions", expansions, lambda v: v >= 1, "positive"),
    ("head_channels", [] if head is None else [head], lambda v: v >= 1, "positive or None"),
  ):
    bad = [v for v in values if not (_is_int(v) and ok(v))]
    if bad:
      raise ValueError(f"{name}: every entry must be {expected}, got {bad[0]!r}")
  for name, values in (("kernels", kernels), ("expansions", expansions)):
    if not values or len(set(values)) != len(values):
      raise ValueError(f"{name}: expected a non-empty list without repeats, got {list(values)}")


def _is_int(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)
