"""`Runner`: what the stream, the server's batcher and the benchmark run.  A backend is one (see
backends.base.Backend); so is anything that prepares images and turns prepared batches into
Detections, e.g. bench's replaying or timing wrappers.  Stage timing goes through `stage`, a
context factory (engine.timing.StageTimer) that a runner enters around each of its stages."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from mrcnn_cli.engine.detections import Detections
from mrcnn_cli.engine.postprocess import to_detections
from mrcnn_cli.engine.preprocess import Prepared, pad_batch
from mrcnn_cli.engine.timing import no_stage

if TYPE_CHECKING:
    import torch

    from mrcnn_cli.model.roi_heads import NetworkOutput

# `stage('network')` is a context manager timing what runs inside it (no_stage times nothing)
Stage = Callable[[str], AbstractContextManager[Any]]
# (B, 3, H, W) padded batch, each image's (h, w) before padding, stage -> one NetworkOutput per image
RunNetwork = Callable[['torch.Tensor', Sequence[tuple[int, int]], Stage], list['NetworkOutput']]
Palette = Sequence[tuple[int, int, int]]


@runtime_checkable
class Runner(Protocol):
    """BGR uint8 images in, Detections out, in two steps that may run on different threads:
    `prepare` (thread-safe: the stream and the server prepare the next images while the network
    runs) and `predict_prepared` (one model thread), whose results for a batch are identical to
    those of its images one by one."""

    @property
    def classes(self) -> tuple[str, ...]: ...

    @property
    def scale(self) -> tuple[int, int]: ...

    def prepare(self, image: np.ndarray) -> Prepared: ...

    def predict_prepared(self, prepared: Sequence[Prepared], stage: Stage = no_stage) -> list[Detections]: ...


def detections_of(prepared: Sequence[Prepared], run_network: RunNetwork, classes: Sequence[str],
                  palette: Palette | None = None, stage: Stage = no_stage) -> list[Detections]:
    """Detections for prepared images through `run_network`.  Only images whose padded sizes are
    equal share a network batch (video frames always do): extra padding would change the features
    near the border and so the detections."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, p in enumerate(prepared):
        groups.setdefault(tuple(p.tensor.shape[1:]), []).append(i)
    results: dict[int, Detections] = {}
    for members in groups.values():
        with stage('preprocess'):
            batch = pad_batch([prepared[i].tensor for i in members])
        outs = run_network(batch, [prepared[i].img_shape for i in members], stage)
        with stage('paste'):
            for i, out in zip(members, outs):
                results[i] = to_detections(out, prepared[i].scale_factor, prepared[i].ori_shape, classes, palette)
    return [results[i] for i in range(len(prepared))]
