"""Whether the network is being traced for ONNX export (the ops take export-friendly forms then)."""
import torch


def exporting():
    """True while torch.onnx traces the model: shapes are dynamic, Python branches on data are not."""
    return torch.onnx.is_in_onnx_export()
