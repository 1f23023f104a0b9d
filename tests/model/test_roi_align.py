"""The CPU RoIAlign gather against torchvision.ops.roi_align (aligned=True, sampling_ratio=0),
whose semantics match mmcv's RoIAlign."""
import pytest
import torch
from torchvision.ops import roi_align

from mrcnn_cli.model.poolers import GATHER, STACKED, RoIFeatureMaps, multilevel_roi_align, stack_levels, ungroup
from mrcnn_cli.model.roi_heads import BBoxHead
from mrcnn_cli.ops.roi_align import roi_align_nhwc

# (batch index, x1, y1, x2, y2) in image pixels at stride 8 on a 40 x 56 map (320 x 448 image)
EDGE_ROIS = [
    [0, -50, -50, -10, -10],      # wholly outside: zeros
    [1, 440, 310, 470, 330],      # past the bottom-right border: clamped samples
    [0, 10, 10, 10, 10],          # zero size
    [1, 30, 30, 20, 20],          # negative size
    [0, 0, 0, 448, 320],          # the whole image: 6 x 8 samples per bin
    [1, -3, -3, 5, 5],            # straddles the top-left border
    [0, 5.5, 5.5, 6.1, 6.1],      # far smaller than a cell
    [1, 100, 20, 400, 36],        # long and thin: 1 x 6 samples per bin
    [0, 400, 272, 456, 328],      # last samples exactly at x = width, y = height: still counted
    [1, -8, -8, 48, 48],          # first samples exactly at -1: still counted
]


def random_rois(n, height, width, gen):
    size = torch.exp(torch.empty(n).uniform_(2, 6.5, generator=gen))
    aspect = torch.exp(torch.empty(n).uniform_(-1.2, 1.2, generator=gen))
    w, h = size * aspect.sqrt(), size / aspect.sqrt()
    cx, cy = torch.rand(n, generator=gen) * width, torch.rand(n, generator=gen) * height
    boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    batch = torch.randint(0, 2, (n, 1), generator=gen).float()
    return torch.cat([batch, boxes], 1)


@pytest.mark.parametrize('output_size', [7, 14])
@pytest.mark.parametrize('channels_last', [True, False])
def test_gather_equals_torchvision_roi_align(output_size, channels_last):
    gen = torch.Generator().manual_seed(0)
    feat = torch.randn(2, 32, 40, 56, generator=gen)
    if channels_last:
        feat = feat.contiguous(memory_format=torch.channels_last)
    rois = torch.cat([random_rois(300, 320, 448, gen), torch.tensor(EDGE_ROIS, dtype=torch.float32)])
    expected = roi_align(feat, rois, output_size, 1 / 8, sampling_ratio=0, aligned=True)
    got = roi_align_nhwc(feat, rois, output_size, 1 / 8).permute(0, 3, 1, 2)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=2e-6)
    assert got[300].abs().max() == 0 and got[304].abs().max() > 0   # outside; whole image


def test_gather_of_a_bf16_map_is_fp32_roi_align_rounded_once():
    """The CPU's BF16 path samples the BF16 maps as they are (BF16 sample weights, FP32 sums): the
    result is torchvision's FP32 RoIAlign of the same map to within BF16 rounding."""
    gen = torch.Generator().manual_seed(3)
    feat = torch.randn(2, 64, 40, 56, generator=gen).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    rois = torch.cat([random_rois(300, 320, 448, gen), torch.tensor(EDGE_ROIS, dtype=torch.float32)])
    expected = roi_align(feat.float(), rois, 7, 1 / 8, sampling_ratio=0, aligned=True)
    got = roi_align_nhwc(feat, rois, 7, 1 / 8).permute(0, 3, 1, 2)
    assert got.dtype == torch.bfloat16
    error = (got.float() - expected).abs()
    assert float(error.max()) <= 2 ** -7 * float(expected.abs().max())   # two BF16 roundings at most
    assert float(error.norm() / expected.norm()) < 2 ** -8


def test_gather_of_no_rois():
    assert roi_align_nhwc(torch.zeros(1, 8, 5, 5), torch.zeros(0, 5), 7, 0.25).shape == (0, 7, 7, 8)


def test_multilevel_gather_feeds_the_box_head_as_nchw_does():
    """CPU path (channels-last gather, FC inputs reordered at load) == torchvision's NCHW path."""
    gen = torch.Generator().manual_seed(1)
    feats = [torch.randn(1, 16, 320 // s, 448 // s, generator=gen).contiguous(memory_format=torch.channels_last)
             for s in (4, 8, 16, 32)]
    rois = random_rois(200, 320, 448, gen)
    rois[:, 0] = 0
    gathered, order = multilevel_roi_align(RoIFeatureMaps(GATHER, feats), rois, 7)
    expected = torch.cat([roi_align(f, rois[i:i + 1], 7, 1 / s, sampling_ratio=0, aligned=True)
                          for i in order.tolist() for f, s in [pick_level(feats, rois[i])]])
    assert sorted(order.tolist()) == list(range(rois.shape[0]))
    levels = [pick_level(feats, rois[i])[1] for i in order.tolist()]
    assert levels == sorted(levels)                 # grouped by level,
    for s in set(levels):                           # top to bottom within each (cache-friendly order)
        y1 = rois[order][torch.tensor(levels) == s, 2]
        assert (y1[1:] >= y1[:-1]).all()
    torch.testing.assert_close(gathered, expected, rtol=0, atol=2e-6)
    assert ungroup(order, order).tolist() == list(range(rois.shape[0]))

    head = BBoxHead(num_classes=3, in_channels=16).eval()
    cls_ref, reg_ref = head(expected.contiguous())
    head.expect_channels_last()
    cls, reg = head(gathered)
    torch.testing.assert_close(cls, cls_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(reg, reg_ref, rtol=1e-4, atol=1e-5)


def pick_level(feats, roi):
    """mmdetection's level rule for one roi, written out: floor(log2(sqrt(area) / 56)), in [0, 3]."""
    import math
    scale = math.sqrt(float((roi[3] - roi[1]) * (roi[4] - roi[2])))
    level = min(max(math.floor(math.log2(scale / 56 + 1e-6)), 0), 3)
    return feats[level], 4 * 2 ** level


def test_stacked_levels_equal_per_level_roi_align():
    """GPU path (all levels in one call, no host sync) == torchvision on each roi's own level,
    for rois clipped to the image as the model's are, including ones on its last row and column
    at every level (where the padding of the coarser levels must read as the border)."""
    gen = torch.Generator().manual_seed(2)
    height, width = 512, 640
    feats = [torch.randn(2, 8, height // s, width // s, generator=gen) for s in (4, 8, 16, 32)]
    rois = random_rois(300, height, width, gen)
    rois[:, 1::2] = rois[:, 1::2].clamp(0, width)
    rois[:, 2::2] = rois[:, 2::2].clamp(0, height)
    border = [[b, width - side, height - side, width, height] for side in (20, 150, 300, 500) for b in (0, 1)]
    rois = torch.cat([rois, torch.tensor(border, dtype=torch.float32)])
    assert {pick_level(feats, r)[1] for r in rois[-8:]} == {4, 8, 16, 32}
    got, order = multilevel_roi_align(RoIFeatureMaps(STACKED, stack_levels([f.half() for f in feats])), rois, 7)
    assert order is None and ungroup(got, order) is got
    expected = torch.cat([roi_align(f.half().float(), r[None], 7, 1 / s, sampling_ratio=0, aligned=True)
                          for r in rois for f, s in [pick_level(feats, r)]])
    torch.testing.assert_close(got, expected, rtol=0, atol=2e-6)
