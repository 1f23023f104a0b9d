"""Property tests (hypothesis) for the box, mask, RLE and FPN-upsampling helpers."""
import numpy as np
import pycocotools.mask as mask_util
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mrcnn_cli.engine.detections import Detections
from mrcnn_cli.model.fpn import upsample_to
from mrcnn_cli.ops.boxes import decode_boxes
from mrcnn_cli.ops.paste import MaskWindow, paste_mask, paste_masks_grouped, paste_window

coord = st.floats(min_value=-50, max_value=700, allow_nan=False, width=32)
size = st.integers(min_value=1, max_value=120)


@st.composite
def boxes(draw):
    x1, y1 = draw(coord), draw(coord)
    return [x1, y1, x1 + draw(st.floats(0, 300, width=32)), y1 + draw(st.floats(0, 300, width=32))]


@settings(max_examples=200, deadline=None)
@given(box=boxes(), deltas=st.lists(st.floats(-20, 20, width=32), min_size=4, max_size=4), h=size, w=size)
def test_decoded_boxes_stay_inside_the_image(box, deltas, h, w):
    out = decode_boxes(torch.tensor([box]), torch.tensor([deltas]), (0.1, 0.1, 0.2, 0.2), (h, w))[0]
    assert torch.isfinite(out).all()
    assert 0 <= out[0] <= w and 0 <= out[2] <= w and 0 <= out[1] <= h and 0 <= out[3] <= h


@settings(max_examples=100, deadline=None)
@given(box=boxes(), h=size, w=size, seed=st.integers(0, 2 ** 16))
def test_paste_never_writes_outside_its_window_or_the_image(box, h, w, seed):
    prob = torch.rand(28, 28, generator=torch.Generator().manual_seed(seed))
    box = torch.tensor(box)   # float32, as the model's boxes are
    mask, x0, y0 = paste_mask(prob, box, h, w)
    wx0, wy0, wx1, wy1 = paste_window(box.tolist(), h, w)
    assert (x0, y0) == (wx0, wy0) and mask.dtype == bool
    assert mask.shape == (max(wy1 - wy0, 0), max(wx1 - wx0, 0))
    assert 0 <= x0 and 0 <= y0 and x0 + mask.shape[1] <= w and y0 + mask.shape[0] <= h


@settings(max_examples=100, deadline=None)
@given(h=size, w=size, seed=st.integers(0, 2 ** 16), n=st.integers(0, 4))
def test_rle_round_trips_the_full_masks(h, w, seed, n):
    rng = np.random.default_rng(seed)
    masks = []
    for _ in range(n):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        if rng.random() < 0.3:   # windows of the full height: runs continue from column to column
            y0 = 0
            win = rng.random((h, int(rng.integers(0, w - x0 + 1)))) < rng.choice([0.5, 0.95, 1.0])
        else:
            win = rng.random((int(rng.integers(0, h - y0 + 1)), int(rng.integers(0, w - x0 + 1)))) > 0.5
        masks.append(MaskWindow(win, x0, y0))
    det = Detections(np.zeros((n, 4), np.float32), np.zeros(n, np.float32), np.zeros(n, np.int64), masks, h, w,
                     ['thing'])
    for i, entry in enumerate(det.to_coco()):
        rle = entry['segmentation']
        assert isinstance(rle['counts'], str) and rle['size'] == [h, w]
        assert entry['area'] == int(mask_util.area(rle))
        decoded = mask_util.decode(dict(rle, counts=rle['counts'].encode())).astype(bool)
        assert np.array_equal(decoded, det.mask(i))
        # byte for byte what pycocotools makes of the full mask (the RLE is built from the window)
        full = mask_util.encode(np.asfortranarray(det.mask(i).astype(np.uint8)))
        assert rle['counts'] == full['counts'].decode('ascii')


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 40), w=st.integers(1, 40), dh=st.integers(0, 3), dw=st.integers(0, 3))
def test_fpn_upsampling_equals_mmdetections_size_interpolation(h, w, dh, dw):
    """Scale 2 where the next level is exactly twice as big (inputs padded to 32), sizes otherwise:
    both must give mmdetection's `F.interpolate(size=...)` pixels."""
    x = torch.randn(1, 3, h, w)
    size = (2 * h + dh - 1, 2 * w + dw - 1)
    want = torch.nn.functional.interpolate(x, size=size, mode='nearest')
    assert torch.equal(upsample_to(x, size), want)


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 700), w=st.integers(1, 700), n=st.integers(1, 150), seed=st.integers(0, 2 ** 16))
def test_grouped_paste_equals_one_paste_per_instance(h, w, n, seed):
    """One grid_sample per group of windows gives paste_mask's windows, pixel for pixel."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w, h]) * 1.2 - 20
    wh = torch.rand(n, 2, generator=g) ** 3 * torch.tensor([w, h]) * float(torch.rand(1, generator=g))
    boxes = torch.cat([xy, xy + wh], 1)
    boxes[0, 2] = boxes[0, 0]   # a degenerate box
    probs = torch.rand(n, 28, 28, generator=g)
    for one, grouped in zip([paste_mask(p, b, h, w) for p, b in zip(probs, boxes)],
                            paste_masks_grouped(probs, boxes, h, w)):
        assert (one.x0, one.y0) == (grouped.x0, grouped.y0) and np.array_equal(one.mask, grouped.mask)
