"""Drawing instance masks, boxes and labels on a BGR image with OpenCV."""
import colorsys

import cv2
import numpy as np


def instance_color(i):
    """Distinct, saturated BGR colours: golden-ratio steps around the hue circle."""
    r, g, b = colorsys.hsv_to_rgb((0.13 + i * 0.618034) % 1.0, 0.85, 0.95)
    return int(b * 255), int(g * 255), int(r * 255)


def draw_detections(img, det, classes, keep, alpha=0.5):
    """A copy of `img` with every kept instance's mask, box and 'class score' label."""
    out = img.copy()
    h, w = out.shape[:2]
    thickness = max(1, round(min(h, w) / 400))
    font_scale = max(0.4, min(h, w) / 1000)
    order = [i for i in range(len(det)) if keep[i]][::-1]  # highest score drawn last, on top
    for rank, i in enumerate(order):
        color = np.array(instance_color(len(order) - 1 - rank), dtype=np.float32)
        m, (x0, y0) = det.masks[i]
        region = out[y0:y0 + m.shape[0], x0:x0 + m.shape[1]]
        region[m] = (region[m] * (1 - alpha) + color * alpha).astype(np.uint8)
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(region, contours, -1, color.tolist(), thickness)
    for rank, i in enumerate(order):
        color = instance_color(len(order) - 1 - rank)
        x1, y1, x2, y2 = (int(round(v)) for v in det.boxes[i])
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness)
        text = f'{classes[det.labels[i]]} {det.scores[i]:.2f}'
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        ty = y1 - 2 if y1 - th - base - 2 >= 0 else min(y1 + th + 2, h - base)
        cv2.rectangle(out, (x1, ty - th - 2), (x1 + tw + 2, ty + base), color, -1)
        luminance = 0.114 * color[0] + 0.587 * color[1] + 0.299 * color[2]
        ink = (0, 0, 0) if luminance > 140 else (255, 255, 255)
        cv2.putText(out, text, (x1 + 1, ty), cv2.FONT_HERSHEY_SIMPLEX, font_scale, ink, 1, cv2.LINE_AA)
    return out
