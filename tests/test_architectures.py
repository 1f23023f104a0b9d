"""Every zoo architecture has exactly the key layout of mmdetection's own model."""
import pytest
import torch

from mrcnn_cli.io import zoo
from mrcnn_cli.io.checkpoint import infer_spec
from mrcnn_cli.io.images import read_image
from mrcnn_cli.model.backbone import ResNet
from mrcnn_cli.model.mask_rcnn import build_model
from mrcnn_cli.model.spec import X101_32X8D_NORM

from conftest import COCO_IMAGES, KEYS

LAYOUTS = {
    'mask-rcnn_r50_fpn_1x_coco': 'mmdet_mask-rcnn_r50_fpn_1x_coco.txt',
    'mask-rcnn_r50-caffe_fpn_1x_coco': 'mmdet_mask-rcnn_r50-caffe_fpn_1x_coco.txt',
    'mask-rcnn_r101_fpn_1x_coco': 'mmdet_mask-rcnn_r101_fpn_1x_coco.txt',
    'mask-rcnn_r101-caffe_fpn_1x_coco': 'mmdet_mask-rcnn_r101-caffe_fpn_1x_coco.txt',
    'mask-rcnn_x101-32x4d_fpn_1x_coco': 'mmdet_mask-rcnn_x101-32x4d_fpn_1x_coco.txt',
    'mask-rcnn_x101-64x4d_fpn_1x_coco': 'mmdet_mask-rcnn_x101-64x4d_fpn_1x_coco.txt',
    'mask-rcnn_x101-32x8d_fpn_1x_coco': 'mmdet_mask-rcnn_x101-32x8d_fpn_1x_coco.txt',
}


def read_layout(name):
    out = {}
    for line in (KEYS / name).read_text().splitlines():
        key, shape = line.split('\t')[:2]
        out[key] = tuple(int(d) for d in shape.strip('[]').split(',') if d.strip())
    return out


@pytest.mark.parametrize('model_name', LAYOUTS)
def test_state_dict_layout_equals_mmdetection(model_name):
    layout = read_layout(LAYOUTS[model_name])
    with torch.device('meta'):
        model = build_model(zoo.get_entry(model_name).spec)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == layout


@pytest.mark.parametrize('model_name', LAYOUTS)
def test_architecture_inferred_from_shapes(model_name):
    sd = {k: torch.empty(s, device='meta') for k, s in read_layout(LAYOUTS[model_name]).items()}
    spec = zoo.get_entry(model_name).spec
    assert infer_spec(sd, style=spec.style) == spec


def test_every_zoo_row_has_a_known_architecture():
    names = {e.backbone for e in zoo.entries()}
    specs = {zoo.get_entry(e.name).spec.backbone_name for e in zoo.entries()}
    assert specs == {'R-50', 'R-101', 'X-101-32x4d', 'X-101-64x4d', 'X-101-32x8d'}, names
    assert zoo.get_entry('mask-rcnn_x101-32x8d_fpn_1x_coco').spec.norm == X101_32X8D_NORM


@pytest.mark.parametrize('style', ['pytorch', 'caffe'])
def test_backbone_strides(style):
    net = ResNet(50, style=style).eval()
    feats = net(torch.zeros(1, 3, 64, 96))
    assert [tuple(f.shape[1:]) for f in feats] == [(256, 16, 24), (512, 8, 12), (1024, 4, 6), (2048, 2, 3)]
    first = net.layer2[0]
    strided = first.conv1 if style == 'caffe' else first.conv2
    other = first.conv2 if style == 'caffe' else first.conv1
    assert strided.stride == (2, 2) and other.stride == (1, 1)


def test_resnext_checkpoint_end_to_end(torch_predictor):
    p = torch_predictor('x101_32x4d')
    assert p.spec.backbone_name == 'X-101-32x4d' and p.spec.style == 'pytorch'
    det = p(read_image(COCO_IMAGES / '000000397133.jpg'))
    assert len(det) > 0
    assert (det.boxes[:, [0, 2]] <= det.width).all() and (det.boxes[:, [1, 3]] <= det.height).all()
    assert (det.boxes >= 0).all() and ((det.scores > 0.05) & (det.scores <= 1)).all()
    assert (det.scores[:-1] >= det.scores[1:]).all()
    assert det.masks.any(axis=(1, 2)).any()


@pytest.mark.parametrize('depth,groups,width,style', [(50, 1, 64, 'caffe'), (101, 32, 4, 'pytorch')])
def test_folded_batchnorm_is_the_same_function(depth, groups, width, style):
    """Folding needs every conv/BN pair found (caffe stride swap, grouped ResNeXt convs included)."""
    torch.manual_seed(0)
    net = ResNet(depth, groups, width, style).eval()
    for m in net.modules():  # non-trivial statistics, so a missed or misplaced fold shows
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(1, 3, 96, 64)
    with torch.no_grad():
        ref = net(x)
        got = net.fold_batchnorm()(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    for a, b in zip(ref, got):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(a.abs().max()))
