"""Thin backends behind the one Predictor interface: PyTorch, ONNX Runtime (and the ONNX export)."""
