"""Thin backends behind one interface (backends.base.Backend, a Runner): PyTorch, ONNX Runtime (and the ONNX export)."""
