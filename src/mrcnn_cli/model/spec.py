"""What fixes a checkpoint's architecture and preprocessing, and the defaults the command line and
the library share (kept here, light to import, so that `mrcnn --help` loads no numpy)."""
from dataclasses import dataclass

TEST_SCALE = (1333, 800)   # mmdetection's test-time bound: long side <= 1333, short side <= 800
# The one default lowest score: what `model(img)`, `mrcnn predict`, `plot` and `mrcnn serve` keep unless told
# otherwise (inside the model mmdetection's 0.05 / 100 per image always apply; eval keeps all of those).
DEFAULT_SCORE_THR = 0.3
TRACK_SCORE_THR = 0.1       # tracking: ByteTrack's second stage continues tracks with low-scoring detections
RECONNECT_TRIES = 5         # a live stream that drops is opened again up to this many times


@dataclass(frozen=True)
class Normalization:
    """The input normalisation a model was trained with: (x - mean) / std after the channel order."""
    mean: tuple
    std: tuple
    to_rgb: bool


PYTORCH_NORM = Normalization((123.675, 116.28, 103.53), (58.395, 57.12, 57.375), to_rgb=True)
CAFFE_NORM = Normalization((103.53, 116.28, 123.675), (1.0, 1.0, 1.0), to_rgb=False)
# mask-rcnn_x101-32x8d configs: detectron2-pretrained backbone, BGR input with std.
X101_32X8D_NORM = Normalization((103.53, 116.28, 123.675), (57.375, 57.12, 58.395), to_rgb=False)


@dataclass(frozen=True)
class ModelSpec:
    """Everything that fixes a checkpoint's architecture and preprocessing."""
    depth: int = 50
    groups: int = 1
    width_per_group: int = 64
    style: str = 'pytorch'
    num_classes: int = 80
    norm: Normalization | None = None

    def __post_init__(self):
        if self.norm is None:
            object.__setattr__(self, 'norm', default_norm(self))

    @property
    def backbone_name(self):
        if self.groups == 1:
            return f'R-{self.depth}'
        return f'X-{self.depth}-{self.groups}x{self.width_per_group}d'


def default_norm(spec):
    """The preprocessing mmdetection's configs pair with this backbone and style."""
    if spec.style == 'caffe':
        return CAFFE_NORM
    if (spec.depth, spec.groups, spec.width_per_group) == (101, 32, 8):
        return X101_32X8D_NORM
    return PYTORCH_NORM
