"""mmdetection's mask paste: 28x28 probabilities to binary masks on the original image."""
from typing import NamedTuple

import numpy as np
import torch
from torch.nn import functional as F

MASK_THRESHOLD = 0.5
GPU_PASTE_BYTES = 2 ** 30  # mmdetection's GPU memory limit for one paste chunk


class MaskWindow(NamedTuple):
    """A binary mask stored as the window of the image it can touch: every pixel outside
    [x0, x0 + w) x [y0, y0 + h) is 0 by construction (mmdetection's paste), so windows keep
    memory bounded on very large images."""
    mask: np.ndarray     # (h, w) bool
    x0: int
    y0: int

    def paste_into(self, full):
        """Write this mask into a full-image array (its window only)."""
        h, w = self.mask.shape
        full[self.y0:self.y0 + h, self.x0:self.x0 + w] = self.mask
        return full


def window_intersection(a, b):
    """The pixels two MaskWindows share, counted on their windows' overlap only."""
    ah, aw = a.mask.shape
    bh, bw = b.mask.shape
    x0, y0 = max(a.x0, b.x0), max(a.y0, b.y0)
    x1, y1 = min(a.x0 + aw, b.x0 + bw), min(a.y0 + ah, b.y0 + bh)
    if x1 <= x0 or y1 <= y0:
        return 0
    return int(np.count_nonzero(a.mask[y0 - a.y0:y1 - a.y0, x0 - a.x0:x1 - a.x0]
                                & b.mask[y0 - b.y0:y1 - b.y0, x0 - b.x0:x1 - b.x0]))


def paste_window(box, img_h, img_w):
    """mmdetection's skip_empty window around a box: [floor(x0) - 1, ceil(x1) + 1) clamped."""
    x0 = min(max(int(np.floor(box[0])) - 1, 0), img_w)
    y0 = min(max(int(np.floor(box[1])) - 1, 0), img_h)
    x1 = min(int(np.ceil(box[2])) + 1, img_w)
    y1 = min(int(np.ceil(box[3])) + 1, img_h)
    return x0, y0, x1, y1


def grid_coords(start, stop, lo, hi, device):
    """grid_sample coordinates of pixel centres start + 0.5 .. stop - 0.5 along one axis of
    boxes spanning [lo, hi] (tensors, (1,) or (K, 1)); a degenerate box maps to 0, as mmdet."""
    return _grid_of_centres(torch.arange(start, stop, device=device).to(torch.float32)[None] + 0.5, lo, hi)


def _grid_of_centres(centres, lo, hi):
    """grid_sample coordinates of pixel centres in boxes spanning [lo, hi]; 0 for a degenerate box."""
    coords = (centres - lo) / (hi - lo) * 2 - 1
    return torch.where(torch.isinf(coords), torch.zeros_like(coords), coords)


def paste_mask(prob, box, img_h, img_w, threshold=MASK_THRESHOLD):
    """Paste one 28x28 probability map into its window of the image (mmdet's _do_paste_mask).

    Pixel centres (x + 0.5) are mapped into the box and sampled with bilinear grid_sample
    (align_corners=False, zero padding).
    """
    x0, y0, x1, y1 = paste_window(box.tolist(), img_h, img_w)
    if x1 <= x0 or y1 <= y0:  # a box wholly outside the image (never from the model: it clips)
        return MaskWindow(np.zeros((max(y1 - y0, 0), max(x1 - x0, 0)), bool), x0, y0)
    bx0, by0, bx1, by1 = box.view(4, 1).unbind(0)
    xs = grid_coords(x0, x1, bx0, bx1, prob.device)[0]
    ys = grid_coords(y0, y1, by0, by1, prob.device)[0]
    gx = xs[None, :].expand(ys.shape[0], xs.shape[0])
    gy = ys[:, None].expand(ys.shape[0], xs.shape[0])
    grid = torch.stack([gx, gy], dim=2)[None]
    window = F.grid_sample(prob[None, None].to(torch.float32), grid, align_corners=False)[0, 0]
    return MaskWindow((window >= threshold).cpu().numpy(), x0, y0)


def paste_masks(probs, boxes, img_h, img_w, threshold=MASK_THRESHOLD):
    """Paste every instance; see paste_mask.  boxes are in original-image pixels.

    On a GPU one grid_sample per chunk of instances replaces a launch and a host copy per
    instance; on the CPU each instance samples only its window, grouped with others of similar
    size (one grid_sample per group: windows are small, so per-call overhead is the cost)."""
    if probs.is_cuda:
        return paste_masks_chunked(probs, boxes, img_h, img_w, threshold)
    return paste_masks_grouped(probs, boxes, img_h, img_w, threshold)


def window_groups(sizes, max_group=64, slack=2.0):
    """Instance indexes in groups that share one sampling grid: by increasing window area, a group
    grows while its padded grid (count x largest height x largest width) stays within `slack`
    times the pixels its windows need (plus a little, so tiny windows group freely)."""
    order = sorted(range(len(sizes)), key=lambda i: sizes[i][0] * sizes[i][1])
    groups, current, hmax, wmax, need = [], [], 0, 0, 0
    for i in order:
        h, w = sizes[i]
        nh, nw = max(hmax, h), max(wmax, w)
        if current and (len(current) == max_group or nh * nw * (len(current) + 1) > slack * (need + h * w) + 4096):
            groups.append(current)
            current, nh, nw, need = [], h, w, 0
        current.append(i)
        hmax, wmax, need = nh, nw, need + h * w
    return groups + ([current] if current else [])


def paste_masks_grouped(probs, boxes, img_h, img_w, threshold=MASK_THRESHOLD):
    """paste_mask for every instance, pixel for pixel, with one grid_sample per group of windows
    (see window_groups).  Each instance's grid is what paste_mask builds, computed with the same
    element-wise float32 operations, padded to the group's largest window and cut back after."""
    windows = [paste_window(b, img_h, img_w) for b in boxes.tolist()]
    sizes = [(max(y1 - y0, 0), max(x1 - x0, 0)) for x0, y0, x1, y1 in windows]
    out = [None] * len(windows)
    for members in window_groups(sizes):
        live = [i for i in members if sizes[i][0] and sizes[i][1]]
        for i in set(members) - set(live):   # a box wholly outside the image
            out[i] = MaskWindow(np.zeros(sizes[i], bool), windows[i][0], windows[i][1])
        if not live:
            continue
        hmax, wmax = max(sizes[i][0] for i in live), max(sizes[i][1] for i in live)
        idx = torch.tensor(live)
        origin = torch.tensor([windows[i][:2] for i in live])   # (k, 2) x0, y0
        bx0, by0, bx1, by1 = boxes[idx].to(torch.float32)[:, :, None].unbind(1)
        xs = _window_coords(origin[:, 0:1], wmax, bx0, bx1)
        ys = _window_coords(origin[:, 1:2], hmax, by0, by1)
        k = len(live)
        grid = torch.stack([xs[:, None, :].expand(k, hmax, wmax), ys[:, :, None].expand(k, hmax, wmax)], dim=3)
        sampled = F.grid_sample(probs[idx][:, None].to(torch.float32), grid, align_corners=False)[:, 0]
        full = (sampled >= threshold).numpy()
        for j, i in enumerate(live):
            h, w = sizes[i]
            out[i] = MaskWindow(full[j, :h, :w].copy(), windows[i][0], windows[i][1])
    return out


def _window_coords(start, length, lo, hi):
    """grid_coords for k windows at once: `start` (k, 1) int64 first pixels, `length` pixels each."""
    return _grid_of_centres((start + torch.arange(length)[None]).to(torch.float32) + 0.5, lo, hi)


def paste_masks_chunked(probs, boxes, img_h, img_w, threshold=MASK_THRESHOLD, max_bytes=GPU_PASTE_BYTES):
    """mmdetection's GPU paste: whole-image sampling grids for as many instances as fit in
    `max_bytes`, one grid_sample and one host copy per chunk; each instance's window is then
    cut out, so the result has paste_mask's form and, pixel for pixel, its values."""
    n, device = probs.shape[0], probs.device
    windows = [paste_window(b, img_h, img_w) for b in boxes.tolist()]
    chunk = max(1, int(max_bytes // (img_h * img_w * 13)))  # grid 8 B + sample 4 B + bool 1 B a pixel
    out = []
    for start in range(0, n, chunk):
        p, b = probs[start:start + chunk], boxes[start:start + chunk].to(torch.float32)
        bx0, by0, bx1, by1 = b[:, :, None].unbind(1)
        xs = grid_coords(0, img_w, bx0, bx1, device)
        ys = grid_coords(0, img_h, by0, by1, device)
        k = p.shape[0]
        grid = torch.stack([xs[:, None, :].expand(k, img_h, img_w), ys[:, :, None].expand(k, img_h, img_w)], dim=3)
        full = (F.grid_sample(p[:, None].to(torch.float32), grid, align_corners=False)[:, 0] >= threshold)
        full = full.cpu().numpy()
        for i, (x0, y0, x1, y1) in enumerate(windows[start:start + k]):
            out.append(MaskWindow(full[i, y0:max(y1, y0), x0:max(x1, x0)].copy(), x0, y0))
    return out
