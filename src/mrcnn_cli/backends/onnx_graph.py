"""The graph `mrcnn export` writes, as the backends that run it see it: its input and output
names, and one image per call in, one NetworkOutput out."""
import numpy as np
import torch

from mrcnn_cli.backends.base import Backend
from mrcnn_cli.backends.onnx_metadata import int8_agreement
from mrcnn_cli.engine.timing import no_stage
from mrcnn_cli.model.roi_heads import NetworkOutput

INPUT_NAMES = ['image', 'img_shape']
OUTPUT_NAMES = ['boxes', 'scores', 'labels', 'mask_probs']


def graph_inputs(image: torch.Tensor, img_shape) -> dict[str, np.ndarray]:
    """The graph's inputs for one prepared image: its padded (3, H, W) tensor and unpadded (h, w)."""
    return {'image': image[None].cpu().numpy(), 'img_shape': np.asarray(img_shape, dtype=np.int64)}


class GraphBackend(Backend):
    """A backend of the exported graph (onnxruntime, OpenVINO): it implements `run_graph`."""

    batches = False      # the graph takes one image per call
    runs_graph = True
    metadata: dict[str, str]   # the file's metadata_props (rt_info for an OpenVINO IR)

    @property
    def agreement(self) -> dict | None:
        """An INT8 file's accuracy guard, as its export measured it (None for other files)."""
        return int8_agreement(self.metadata)

    def run_graph(self, inputs):
        """{'image': 1x3xHxW float32, 'img_shape': (2,) int64} -> the four outputs as numpy arrays
        the caller may keep."""
        raise NotImplementedError

    def run_network(self, batch, img_shapes, stage=no_stage):
        results = []
        for image, shape in zip(batch, img_shapes):   # the graph takes one image per call
            with stage('network'):
                outs = self.run_graph(graph_inputs(image, shape))
            results.append(NetworkOutput(*(torch.from_numpy(o) for o in outs)))
        return results
