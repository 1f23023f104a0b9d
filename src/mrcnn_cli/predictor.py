"""The predictor interface that predict, eval and bench share, and its PyTorch backend."""
import torch

from mrcnn_cli import MrcnnError
from mrcnn_cli.checkpoint import load_checkpoint, model_from_checkpoint
from mrcnn_cli.postprocess import to_detections
from mrcnn_cli.preprocess import pad_batch, prepare


def resolve_device(device='auto'):
    """'auto' picks the first CUDA GPU when there is one, else the CPU."""
    if device in (None, 'auto'):
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise MrcnnError(f"unknown device {device!r} (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == 'cuda' and not torch.cuda.is_available():
        raise MrcnnError(f'device {device} requested but no CUDA GPU is available')
    if dev.type not in ('cpu', 'cuda'):
        raise MrcnnError(f"unsupported device {device!r} (use auto, cpu, cuda or cuda:N)")
    return dev


class Predictor:
    """BGR uint8 image in, Detections out.  Backends implement `run_network`."""

    name = 'base'

    def __init__(self, spec, classes, device, source):
        self.spec, self.classes, self.device, self.source = spec, classes, device, source

    def run_network(self, batch, img_shapes):
        """(B, 3, H, W) padded batch -> per image (boxes, scores, labels, 28x28 mask probs)."""
        raise NotImplementedError

    def predict(self, img):
        """Detections for one BGR image, in original-image pixels, mmdetection's test thresholds."""
        prepared = prepare(img, self.spec.norm, self.device)
        (boxes, scores, labels, probs), = self.run_network(pad_batch([prepared.tensor]), [prepared.img_shape])
        return to_detections(boxes, scores, labels, probs, prepared.scale_factor, prepared.ori_shape)


class TorchPredictor(Predictor):
    name = 'torch'

    def __init__(self, model, classes, device, source):
        super().__init__(model.spec, classes, device, source)
        self.model = model.to(device)

    @torch.inference_mode()
    def run_network(self, batch, img_shapes):
        return self.model(batch.to(self.device), img_shapes)


def load_torch_predictor(model_name=None, weights=None, style=None, device='auto', weights_dir=None):
    """A TorchPredictor from a zoo name (downloaded on first use) and/or a local checkpoint."""
    from mrcnn_cli import zoo
    if model_name is None and weights is None:
        raise MrcnnError('no model given: pass --model NAME (see `mrcnn zoo list`) or --weights PATH')
    dev = resolve_device(device)
    spec = None
    if model_name is not None:
        entry = zoo.get_entry(model_name)
        spec = entry.spec
        if weights is None:
            weights = zoo.ensure_downloaded(entry, weights_dir)
    model, classes = model_from_checkpoint(load_checkpoint(weights), spec=spec, style=style, source=str(weights))
    return TorchPredictor(model, classes, dev, source=str(weights))
