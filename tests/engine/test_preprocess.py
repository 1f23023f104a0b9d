import numpy as np
import torch

from mrcnn_cli.engine.preprocess import normalize, pad_batch, prepare, rescale_size
from mrcnn_cli.model.spec import CAFFE_NORM, PYTORCH_NORM


def test_rescale_size_matches_mmcv_rounding():
    assert rescale_size(640, 427) == (1199, 800)     # mmdetection's demo: img_shape (800, 1199)
    assert rescale_size(427, 640) == (800, 1199)
    assert rescale_size(2000, 500) == (1333, 333)    # long side bound wins
    assert rescale_size(100, 100) == (800, 800)


def test_normalize_pytorch_and_caffe_styles():
    img = np.zeros((2, 2, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 10, 20, 30   # B, G, R
    x = normalize(img, PYTORCH_NORM)
    assert torch.allclose(x[:, 0, 0], torch.tensor([(30 - 123.675) / 58.395, (20 - 116.28) / 57.12,
                                                     (10 - 103.53) / 57.375]))
    x = normalize(img, CAFFE_NORM)
    assert torch.allclose(x[:, 0, 0], torch.tensor([10 - 103.53, 20 - 116.28, 30 - 123.675]))


def test_pad_to_multiple_of_32_with_zeros_after_normalising():
    p = prepare(np.full((427, 640, 3), 255, np.uint8), PYTORCH_NORM)
    assert p.img_shape == (800, 1199) and p.ori_shape == (427, 640)
    assert p.scale_factor == (1199 / 640, 800 / 427)
    batch = pad_batch([p.tensor])
    assert batch.shape == (1, 3, 800, 1216)
    assert (batch[..., 1199:] == 0).all() and (batch[..., :1199] != 0).all()
