"""The network with mmdetection semantics: backbone -> FPN -> RPN -> RoI heads (see mask_rcnn.py)."""
