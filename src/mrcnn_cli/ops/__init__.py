"""Plain tensor functions with mmdetection/mmcv semantics: box math, anchors, NMS, RoIAlign, mask paste."""
