"""torchvision's maskrcnn_resnet50_fpn carrying an mmdetection R-50 checkpoint's weights:
the reference peer for `mrcnn bench --compare torchvision`."""
import torch

from mrcnn_cli.errors import MrcnnError

_RENAMES = [  # mmdetection prefix -> torchvision prefix
    ('backbone.', 'backbone.body.'),
    *[(f'neck.lateral_convs.{i}.conv.', f'backbone.fpn.inner_blocks.{i}.0.') for i in range(4)],
    *[(f'neck.fpn_convs.{i}.conv.', f'backbone.fpn.layer_blocks.{i}.0.') for i in range(4)],
    ('rpn_head.rpn_conv.', 'rpn.head.conv.0.0.'),
    ('rpn_head.rpn_cls.', 'rpn.head.cls_logits.'),
    ('rpn_head.rpn_reg.', 'rpn.head.bbox_pred.'),
    ('roi_head.bbox_head.shared_fcs.0.', 'roi_heads.box_head.fc6.'),
    ('roi_head.bbox_head.shared_fcs.1.', 'roi_heads.box_head.fc7.'),
    ('roi_head.bbox_head.fc_cls.', 'roi_heads.box_predictor.cls_score.'),
    ('roi_head.bbox_head.fc_reg.', 'roi_heads.box_predictor.bbox_pred.'),
    *[(f'roi_head.mask_head.convs.{i}.conv.', f'roi_heads.mask_head.{i}.0.') for i in range(4)],
    ('roi_head.mask_head.upsample.', 'roi_heads.mask_predictor.conv5_mask.'),
    ('roi_head.mask_head.conv_logits.', 'roi_heads.mask_predictor.mask_fcn_logits.'),
]


def convert_state_dict(sd):
    """mmdetection names -> torchvision names; classes reordered to torchvision's background-first."""
    out = {}
    for key, value in sd.items():
        if key.endswith('num_batches_tracked'):
            continue
        for old, new in _RENAMES:
            if key.startswith(old):
                out[new + key[len(old):]] = value
                break
    cls_w, cls_b = 'roi_heads.box_predictor.cls_score.weight', 'roi_heads.box_predictor.cls_score.bias'
    out[cls_w] = torch.cat([out[cls_w][-1:], out[cls_w][:-1]])
    out[cls_b] = torch.cat([out[cls_b][-1:], out[cls_b][:-1]])
    for name in ('roi_heads.box_predictor.bbox_pred', ):
        w, b = out[name + '.weight'], out[name + '.bias']
        out[name + '.weight'] = torch.cat([w.new_zeros(4, w.shape[1]), w])
        out[name + '.bias'] = torch.cat([b.new_zeros(4), b])
    name = 'roi_heads.mask_predictor.mask_fcn_logits'
    w, b = out[name + '.weight'], out[name + '.bias']
    out[name + '.weight'] = torch.cat([w.new_zeros(1, *w.shape[1:]), w])
    out[name + '.bias'] = torch.cat([b.new_zeros(1), b])
    return out


def check_peer_spec(spec):
    """torchvision's model is an R-50 with a pytorch-style backbone."""
    if (spec.depth, spec.groups, spec.style) != (50, 1, 'pytorch'):
        raise MrcnnError('--compare torchvision needs an R-50 pytorch-style checkpoint '
                         f'(this one is {spec.backbone_name} {spec.style})')


class TorchvisionPeer:
    """predict_batch(list of BGR images) -> list of per-image outputs, as torchvision users run it (FP32)."""

    name = 'torchvision'

    def __init__(self, mrcnn_model, device, scale=(1333, 800)):
        """mrcnn_model: an mrcnn MaskRCNN as loaded (before the predictor folds its BatchNorms)."""
        from torchvision.models.detection import maskrcnn_resnet50_fpn
        spec = mrcnn_model.spec
        check_peer_spec(spec)
        self.device = torch.device(device)
        model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=spec.num_classes + 1,
                                      min_size=scale[1], max_size=scale[0])   # the same resize bound
        model.load_state_dict(convert_state_dict(mrcnn_model.state_dict()))
        self.model = model.eval().to(self.device)

    @torch.inference_mode()
    def predict_batch(self, images, stage=None):   # no per-stage times: one torchvision call
        tensors = [torch.from_numpy(img[:, :, ::-1].copy()).to(self.device).permute(2, 0, 1).float() / 255
                   for img in images]
        outs = self.model(tensors)
        return [o['scores'] for o in outs]
