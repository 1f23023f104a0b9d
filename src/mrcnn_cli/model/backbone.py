"""ResNet / ResNeXt backbones with mmdetection's parameter names."""
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

STAGE_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
STAGE_PLANES = (64, 128, 256, 512)


class Bottleneck(nn.Module):
    """torchvision's ResNet Bottleneck (its `torchvision.models.resnet.Bottleneck`, the same
    modules, names and operations; the stride on the 3x3 conv), kept here so that building a
    model does not import the torchvision package (a second of start-up)."""
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    """ResNet-50/101 and ResNeXt-101 returning C2..C5 (strides 4, 8, 16, 32).

    style 'pytorch' strides on the 3x3 conv, 'caffe' on the first 1x1 conv of each stage.
    ResNeXt width = floor(planes * width_per_group / 64) * groups, as mmdetection computes it.
    Normalisation is eval-mode BatchNorm (eps 1e-5) with the checkpoint's running stats.
    """

    def __init__(self, depth=50, groups=1, width_per_group=64, style='pytorch'):
        super().__init__()
        if depth not in STAGE_BLOCKS:
            raise ValueError(f'unsupported ResNet depth {depth}')
        if style not in ('pytorch', 'caffe'):
            raise ValueError(f"style must be 'pytorch' or 'caffe', not {style!r}")
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = 64
        for i, (blocks, planes) in enumerate(zip(STAGE_BLOCKS[depth], STAGE_PLANES)):
            stride = 1 if i == 0 else 2
            downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes * Bottleneck.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * Bottleneck.expansion))
            first = Bottleneck(inplanes, planes, stride, downsample, groups, width_per_group)
            if style == 'caffe' and stride != 1:
                first.conv1.stride, first.conv2.stride = (stride, stride), (1, 1)
            inplanes = planes * Bottleneck.expansion
            rest = [Bottleneck(inplanes, planes, 1, None, groups, width_per_group) for _ in range(blocks - 1)]
            self.add_module(f'layer{i + 1}', nn.Sequential(first, *rest))
        self.out_channels = tuple(p * Bottleneck.expansion for p in STAGE_PLANES)

    def fold_batchnorm(self):
        """Fold every eval-mode BatchNorm into the conv before it, for inference: one op instead
        of two; the same function up to float rounding."""
        def fold(parent, conv, bn):
            setattr(parent, conv, fuse_conv_bn_eval(getattr(parent, conv), getattr(parent, bn)))
            setattr(parent, bn, nn.Identity())
        fold(self, 'conv1', 'bn1')
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in layer:
                for i in (1, 2, 3):
                    fold(block, f'conv{i}', f'bn{i}')
                if block.downsample is not None:
                    fold(block.downsample, '0', '1')
        return self

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            outs.append(x)
        return outs
