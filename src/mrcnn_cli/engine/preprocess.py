"""mmdetection's test-time preprocessing: keep-ratio resize, normalise, pad to 32."""
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from mrcnn_cli.model.spec import TEST_SCALE

SIZE_DIVISOR = 32


def check_scale(scale):
    """A (long, short) resize bound of two positive ints; MrcnnError otherwise."""
    from mrcnn_cli.errors import MrcnnError
    try:
        long, short = (int(v) for v in scale)
    except (TypeError, ValueError):
        raise MrcnnError(f'scale must be two sizes (long, short), e.g. 1333,800, not {scale!r}') from None
    if not 32 <= short <= long <= 8192:
        raise MrcnnError(f'scale {long},{short}: need 32 <= short <= long <= 8192')
    return long, short


def rescale_size(w, h, scale=TEST_SCALE):
    """mmcv.rescale_size for a (long, short) bound: new (w, h) and the scale factor."""
    factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
    return int(w * float(factor) + 0.5), int(h * float(factor) + 0.5)


def resize(img, scale=TEST_SCALE):
    """Keep-ratio resize with cv2 bilinear; returns the image and (w_scale, h_scale) as mmdet stores it."""
    h, w = img.shape[:2]
    new_w, new_h = rescale_size(w, h, scale)
    out = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return out, (new_w / w, new_h / h)


def normalize(img, norm, device='cpu', out=None):
    """HxWx3 BGR uint8 -> 3xHxW float32: channel order, then (x - mean) / std, as DetDataPreprocessor.
    `out` (3xHxW float32, e.g. a view of a padded tensor) receives the result in place: the same
    float operations, without the temporaries."""
    x = torch.from_numpy(np.ascontiguousarray(img))
    if torch.device(device).type == 'cuda':   # uint8 up from pinned memory: a quarter of the bytes, async
        x = x.pin_memory().to(device, non_blocking=True)
    x = x.permute(2, 0, 1)
    if norm.to_rgb:
        x = x.flip(0)
    if out is None:
        out = torch.empty(x.shape, dtype=torch.float32, device=device)
    out.copy_(x)
    mean = torch.tensor(norm.mean, device=device).view(3, 1, 1)
    std = torch.tensor(norm.std, device=device).view(3, 1, 1)
    return out.sub_(mean).div_(std)


def padded_shape(img_shape, divisor=SIZE_DIVISOR):
    """(h, w) rounded up to multiples of `divisor`."""
    return tuple(-(-s // divisor) * divisor for s in img_shape)


def pad_batch(tensors, divisor=SIZE_DIVISOR):
    """Stack 3xHxW tensors, zero-padded bottom/right to the largest size rounded up to `divisor`."""
    h, w = padded_shape((max(t.shape[1] for t in tensors), max(t.shape[2] for t in tensors)), divisor)
    if all(t.shape[1:] == (h, w) for t in tensors):   # already padded (as `prepare` makes them)
        return tensors[0].unsqueeze(0) if len(tensors) == 1 else torch.stack(tensors)
    out = tensors[0].new_zeros(len(tensors), 3, h, w)
    for i, t in enumerate(tensors):
        out[i, :, :t.shape[1], :t.shape[2]] = t
    return out


@dataclass
class Prepared:
    """One image ready for the network, with what is needed to map results back."""
    tensor: torch.Tensor          # 3 x H x W, normalised, zero-padded to multiples of SIZE_DIVISOR
    img_shape: tuple              # (h, w) after resize, before padding
    scale_factor: tuple           # (w_scale, h_scale)
    ori_shape: tuple              # (H, W) of the input


def prepare(img, norm, device='cpu', scale=TEST_SCALE):
    """Resize, normalise and pad one BGR image; normalised straight into the padded tensor."""
    resized, factor = resize(img, scale)
    h, w = resized.shape[:2]
    tensor = torch.zeros((3, *padded_shape((h, w))), dtype=torch.float32, device=device)
    normalize(resized, norm, device, out=tensor[:, :h, :w])
    return Prepared(tensor, (h, w), factor, img.shape[:2])
