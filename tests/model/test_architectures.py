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


@pytest.mark.slow
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


def test_bottleneck_is_torchvisions_block():
    """The backbone's block, kept in mrcnn so a model builds without the torchvision package, is
    torchvision's: the same state-dict keys and bit-identical outputs with the same weights."""
    from torchvision.models.resnet import Bottleneck as TorchvisionBottleneck

    from mrcnn_cli.model.backbone import Bottleneck
    gen = torch.Generator().manual_seed(0)
    def downsample(inplanes, planes, stride):
        return (torch.nn.Sequential(torch.nn.Conv2d(inplanes, planes * 4, 1, stride=stride, bias=False),
                                    torch.nn.BatchNorm2d(planes * 4)) if stride != 1 else None)
    for inplanes, planes, stride, groups, width in ((256, 64, 1, 1, 64), (256, 128, 2, 32, 4), (512, 256, 2, 1, 64)):
        ref = TorchvisionBottleneck(inplanes, planes, stride, downsample(inplanes, planes, stride), groups,
                                    width).eval()
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                for t in (m.running_mean, m.bias):
                    t.data = torch.rand(t.shape, generator=gen) - 0.5
                for t in (m.running_var, m.weight):
                    t.data = torch.rand(t.shape, generator=gen) + 0.5
        ours = Bottleneck(inplanes, planes, stride, downsample(inplanes, planes, stride), groups, width).eval()
        assert list(ours.state_dict()) == list(ref.state_dict())
        ours.load_state_dict(ref.state_dict())
        x = torch.randn(2, inplanes, 24, 40, generator=gen)
        with torch.no_grad():
            assert torch.equal(ours(x), ref(x))


@pytest.mark.slow
def test_kernels_are_torchvisions_ops_and_predicting_does_not_import_torchvision(checkpoint):
    import subprocess
    import sys

    import torchvision.ops

    from mrcnn_cli.ops import kernels
    gen = torch.Generator().manual_seed(1)
    xy = torch.rand(300, 2, generator=gen) * 200
    boxes = torch.cat([xy, xy + torch.rand(300, 2, generator=gen) * 60 + 1], 1)
    scores = torch.rand(300, generator=gen)
    assert torch.equal(kernels.nms(boxes, scores, 0.5), torchvision.ops.nms(boxes, scores, 0.5))
    feat = torch.randn(2, 16, 50, 60, generator=gen)
    rois = torch.cat([torch.randint(0, 2, (300, 1), generator=gen).float(), boxes / 4], 1)
    for args in (((7, 7), 0.25, 0, True), ((14, 14), 0.5, 2, False)):
        assert torch.equal(kernels.roi_align(feat, rois, *args), torchvision.ops.roi_align(feat, rois, *args))
    code = ('import sys, mrcnn_cli; m = mrcnn_cli.load(weights=sys.argv[1], style="pytorch", device="cpu", '
            'scale=(640, 384)); d = m(sys.argv[2]); assert len(d); '
            'print(sorted(n for n in sys.modules if n.split(".")[0] in ("torchvision", "onnxruntime", "pycocotools")))')
    proc = subprocess.run([sys.executable, '-c', code, str(checkpoint('r50')), str(COCO_IMAGES / '000000011813.jpg')],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == '[]'    # none of them imported to load a model and predict
