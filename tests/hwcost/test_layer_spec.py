"""LayerSpec: MACs and weights by hand, and the specs it refuses."""

import numpy as np
import pytest

from hwcost import LayerSpec


@pytest.mark.parametrize(
  "spec, macs, weight_count, in_elems, out_elems, depthwise",
  [
    # 3x3 conv 16->32, stride 2, 32x32 -> 16x16: 16*16*32*16*9 MACs, 9*16*32 weights.
    (LayerSpec("c", "conv", 3, 2, 16, 32, (32, 32), (16, 16)), 1179648, 4608, 16384, 8192, False),
    # depthwise 5x5 on 24 channels at 8x8: 8*8*24*1*25 MACs, 25*24 weights.
    (
      LayerSpec("dw", "conv", 5, 1, 24, 24, (8, 8), (8, 8), groups=24),
      38400,
      600,
      1536,
      1536,
      True,
    ),
    # grouped 1x1, g=4, 16->8 at 4x4 (stride 1): 4*4*8*(16/4) MACs, 4*8 weights.
    (LayerSpec("g", "conv", 1, 1, 16, 8, (4, 4), (4, 4), groups=4), 512, 32, 256, 128, False),
    # odd size, stride 2, dilation 2: out = ceil(7/2) = 4; dilation changes nothing counted.
    (LayerSpec("d", "conv", 3, 2, 2, 2, (7, 7), (4, 4), dilation=2), 576, 36, 98, 32, False),
    # linear 64 -> 10.
    (LayerSpec("fc", "linear", 1, 1, 64, 10, (1, 1), (1, 1)), 640, 640, 64, 10, False),
    # a 1-channel input conv is not depthwise although groups == cin.
    (LayerSpec("s", "conv", 3, 1, 1, 4, (2, 2), (2, 2)), 144, 36, 4, 16, False),
  ],
)
def test_counts_by_hand(spec, macs, weight_count, in_elems, out_elems, depthwise):
  assert spec.macs == macs
  assert spec.weight_count == weight_count
  assert spec.in_elems == in_elems
  assert spec.out_elems == out_elems
  assert spec.is_depthwise is depthwise


def test_hashable_and_coerces_numpy_ints_and_lists():
  a = LayerSpec("c", "conv", np.int64(3), 1, 4, 4, [8, 8], (np.int32(8), 8))
  b = LayerSpec("c", "conv", 3, 1, 4, 4, (8, 8), (8, 8))
  assert a == b and hash(a) == hash(b)
  assert type(a.kernel) is int and a.in_hw == (8, 8)


_VALID = dict(
  name="layer2.conv3x3.pw",
  op="conv",
  kernel=3,
  stride=1,
  cin=8,
  cout=8,
  in_hw=(8, 8),
  out_hw=(8, 8),
)


@pytest.mark.parametrize(
  "change, match",
  [
    (dict(op="pool"), "op must be one of conv, linear"),
    (dict(kernel=0), "kernel must be a positive int, got 0"),
    (dict(cin=-1), "cin must be a positive int"),
    (dict(stride=1.0), "stride must be a positive int, got 1.0"),
    (dict(groups=True), "groups must be a positive int"),
    (dict(in_hw=(8,)), "in_hw must be two positive ints"),
    (dict(out_hw=(8, 0)), "out_hw must be two positive ints"),
    (dict(groups=3), "groups=3 must divide cin=8 and cout=8"),
    (dict(cout=6, groups=4), "groups=4 must divide cin=8 and cout=6"),
    (dict(stride=2), r"out_hw=\(8, 8\) is inconsistent with 'SAME' padding.*gives \(4, 4\)"),
    (dict(in_hw=(9, 9), out_hw=(4, 4), stride=2), r"out_hw=\(4, 4\) .* at stride 2 gives \(5, 5\)"),
    (dict(op="linear"), "a linear layer needs kernel=stride=groups=dilation=1"),
  ],
)
def test_invalid_specs_raise_naming_the_layer(change, match):
  with pytest.raises(ValueError, match=r"LayerSpec 'layer2\.conv3x3\.pw': " + match):
    LayerSpec(**{**_VALID, **change})
