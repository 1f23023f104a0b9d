"""From network outputs in resized coordinates to Detections on the original image."""
import torch

from mrcnn_cli.engine.detections import Detections
from mrcnn_cli.ops.paste import paste_masks


def to_detections(out, scale_factor, ori_shape, classes, palette=None):
    """A NetworkOutput's boxes rescaled to the original image (divided, as mmdet does) and its
    masks pasted there (mmdetection's paste, threshold 0.5)."""
    img_h, img_w = ori_shape
    boxes = out.boxes.float() / out.boxes.new_tensor(scale_factor, dtype=torch.float32).repeat(2)
    windows = paste_masks(out.mask_probs.float(), boxes, img_h, img_w)
    return Detections(boxes.cpu().numpy(), out.scores.float().cpu().numpy(), out.labels.cpu().numpy(),
                      windows, img_h, img_w, classes, palette)
