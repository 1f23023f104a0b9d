"""`ModelChoice`: which model runs, where and how, as one value that the commands build once from
their options and `load`, predict, eval, bench and export all take."""
from __future__ import annotations

import os
from dataclasses import dataclass, fields
from enum import Enum

from mrcnn_cli.errors import MrcnnError
from mrcnn_cli.model.spec import TEST_SCALE


class Precision(str, Enum):
    """The precision the network runs in; equal to its name as a str ('bf16')."""
    FP32 = 'fp32'
    FP16 = 'fp16'
    BF16 = 'bf16'
    INT8 = 'int8'     # an INT8 file from `mrcnn export --int8`, run by OpenVINO

    def __str__(self) -> str:
        return self.value

    @classmethod
    def of(cls, value: str | Precision) -> Precision:
        try:
            return cls(str(value).lower())
        except ValueError:
            raise MrcnnError(f"unknown precision {value!r} (use one of {', '.join(p.value for p in cls)})") from None


PathLike = str | os.PathLike


@dataclass(frozen=True)
class ModelChoice:
    """Everything that says which model runs where: a zoo `name` and/or a checkpoint (`weights`),
    or an `mrcnn export` file (`onnx`); the `backend` that runs it (None: onnx for an ONNX file,
    else torch); the backbone `style` when the file does not say it; the `device`; the network's
    `precision`; `compile` (torch.compile); the test-time `scale` (long, short); where zoo files
    are kept (`weights_dir`); ONNX Runtime's provider (`ort_provider`)."""
    name: str | os.PathLike | None = None     # a zoo name (or, given to load, a model file)
    weights: PathLike | None = None
    onnx: PathLike | None = None
    backend: str | None = None
    style: str | None = None
    device: str = 'auto'
    precision: Precision = Precision.FP32
    compile: bool = False
    scale: tuple[int, int] = TEST_SCALE
    weights_dir: PathLike | None = None
    ort_provider: str | None = None

    def __post_init__(self) -> None:
        from mrcnn_cli.errors import option
        object.__setattr__(self, 'precision', Precision.of(self.precision))
        object.__setattr__(self, 'scale', parse_scale(self.scale))
        if self.style not in (None, 'pytorch', 'caffe'):
            raise MrcnnError(f"{option('style', self.style)}: the backbone style is 'pytorch' or 'caffe'")


def parse_scale(scale: object) -> tuple[int, int]:
    """A test-time resize bound as (long, short): a pair of ints, or text 'LONG,SHORT' ('1333,800')."""
    from mrcnn_cli.errors import option
    try:
        parts = scale.replace('x', ',').split(',') if isinstance(scale, str) else scale
        long, short = (int(v) for v in parts)  # type: ignore[union-attr, attr-defined]
    except (TypeError, ValueError):
        raise MrcnnError(f'{option("scale", scale)}: give two sizes, long and short (1333,800)') from None
    return long, short


OPTION_NAMES = tuple(f.name for f in fields(ModelChoice))
