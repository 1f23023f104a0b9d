"""Drawing instance masks, boxes and labels on a BGR image with OpenCV."""
import colorsys

import cv2
import numpy as np


def class_color(label, palette=None):
    """BGR colour of a class: the checkpoint's palette (RGB, as mmdetection stores it) when it has
    one, else distinct saturated colours in golden-ratio steps around the hue circle.  A class
    keeps its colour across images, frames and runs."""
    if palette is not None and label < len(palette):
        r, g, b = palette[label]
        return int(b), int(g), int(r)
    r, g, b = colorsys.hsv_to_rgb((0.13 + label * 0.618034) % 1.0, 0.85, 0.95)
    return int(b * 255), int(g * 255), int(r * 255)


def draw_detections(img, det, *, line_width=None, mask_alpha=0.5, labels=True, conf=True, boxes=True, masks=True):
    """A copy of `img` with each instance of `det` (a Detections) drawn in its class's colour:
    the mask blended in with `mask_alpha` and outlined, the box, and a 'class score' label; each
    part can be switched off (`labels=False` hides the whole label, `conf=False` only its score).
    `line_width` defaults to about 1 px per 400 px of the image's shorter side."""
    out = img.copy()
    h, w = out.shape[:2]
    thickness = int(line_width) if line_width else max(1, round(min(h, w) / 400))
    font_scale = max(0.4, min(h, w) / 1000)
    order = range(len(det) - 1, -1, -1)   # highest score drawn last, on top
    colors = [class_color(int(label), det.palette) for label in det.labels]
    windows = det.mask_windows()
    if masks:
        for i in order:
            win = windows[i]
            color = np.array(colors[i], dtype=np.float32)
            m = win.mask
            region = out[win.y0:win.y0 + m.shape[0], win.x0:win.x0 + m.shape[1]]
            region[m] = (region[m] * (1 - mask_alpha) + color * mask_alpha).astype(np.uint8)
            contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(region, contours, -1, colors[i], thickness)
    for i in order:
        x1, y1, x2, y2 = (int(round(v)) for v in det.boxes[i])
        if boxes:
            cv2.rectangle(out, (x1, y1), (x2, y2), colors[i], thickness)
        if labels:   # hide_labels hides the whole label; hide_conf only its score (as Ultralytics)
            text = det.classes[det.labels[i]] + (f' {det.scores[i]:.2f}' if conf else '')
            _label(out, text, x1, y1, colors[i], font_scale)
    return out


def _label(out, text, x1, y1, color, font_scale):
    h = out.shape[0]
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
    ty = y1 - 2 if y1 - th - base - 2 >= 0 else min(y1 + th + 2, h - base)
    cv2.rectangle(out, (x1, ty - th - 2), (x1 + tw + 2, ty + base), color, -1)
    luminance = 0.114 * color[0] + 0.587 * color[1] + 0.299 * color[2]
    ink = (0, 0, 0) if luminance > 140 else (255, 255, 255)
    cv2.putText(out, text, (x1 + 1, ty), cv2.FONT_HERSHEY_SIMPLEX, font_scale, ink, 1, cv2.LINE_AA)
