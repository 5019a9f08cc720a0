"""ResNets with any norm plugin: standard, pre-activation, Fixup and normalization-free (NF) variants.

Presets: CIFAR-style ``resnet20/56/110`` (3x3 stem, 3 stages of 16-32-64 channels times ``width``,
1x1 conv + norm projection shortcuts) and ImageNet-style ``resnet18/50`` (7x7 stem + max-pool,
4 stages, torchvision's layout and parameter names: ``conv1, bn1, layer1..4, fc``, blocks with
``conv1, bn1, conv2, bn2[, conv3, bn3], downsample``). The ``bn*`` attributes hold whatever norm was
selected; every norm is built through ``normlight.create_norm(..., layout="channels_first",
site="conv")`` so any (..., C) plugin works on (N, C, H, W) maps.

Variants (``variant=``):
    standard  post-activation (He et al. 2016, "Deep Residual Learning")
    preact    pre-activation  (He et al. 2016, "Identity Mappings in Deep Residual Networks")
    fixup     no norm, Fixup init, scalar biases and branch multiplier (Zhang et al. 2019)
    nf        normalization-free: Scaled WS convs, gamma-scaled ReLU, alpha/beta signal
              propagation, skip gain init 0 (Brock et al. 2021, NF-ResNets / NFNets)
``weight_standardization=True`` swaps the convs of standard/preact for WS convs (Qiao et al. 2019),
meant for groupnorm or bcn. A norm whose module sets ``replaces_activation = True`` (EvoNorm)
replaces the norm + ReLU pair: the ReLU right after it is dropped.

Faithfulness, each shown by a numeric test (tests/models/test_resnet_*.py, tests/layers/test_ws.py, tests/tasks/test_agc.py):
    standard  resnet18/50 + batchnorm == torchvision's, same names, count and output with copied weights
    fixup     last conv per branch and fc are 0, branches output exactly 0, logits 0 (loss = ln K);
              inner branch convs have std He * L^(-1/(2m-2)): ResNet-50 (L=16, m=3) ratio 0.5
    nf        Scaled WS kernels == numpy gain*(W-mean)/sqrt(max(N var, 1e-4)): mean 0, L2 norm = gain;
              clamp (0.05) vs additive eps (0.04975); beta after a transition block = 1/sqrt(1.04)
    WS        kernels == numpy (W-mean)/sqrt(var_unbiased + 1e-5), unbiased std 1
    AGC       W = ones(2, 4), gradient rows of norm 1 -> rows of norm 0.02 (normlight.tasks.agc)
CIFAR choices: shortcuts are 1x1 conv + norm projections (He et al.'s option B), the preact stem is a
bare conv (its first block's norm follows), NF transition blocks (first of every stage) always use a
Scaled WS 1x1 conv shortcut after avg-pool when strided, as in NFNets.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import nn

from normlight.errors import PluginOptionError
from normlight.layers.ws import ScaledWSConv2d, WSConv2d
from normlight.norms.factory import create_norm

RELU_GAMMA = 1.7139588594436646  # E[relu(z)^2]^-1/2 correction for z ~ N(0,1): keeps unit variance (NFNets)
NF_ALPHA = 0.2
VARIANTS = ("standard", "preact", "fixup", "nf")


class Builder:
    """Makes the convs and norms of one network (holds the norm spec, WS flag and block count)."""

    def __init__(self, norm: Any, norm_kwargs: dict | None, weight_standardization: bool, num_layers: int):
        self.norm, self.norm_kwargs = norm, dict(norm_kwargs or {})
        self.conv_cls = WSConv2d if weight_standardization else nn.Conv2d
        self.num_layers = num_layers

    def conv(self, cin: int, cout: int, k: int, stride: int = 1) -> nn.Conv2d:
        """A bias-free k x k conv with 'same' padding (WS conv if weight standardization is on)."""
        return self.conv_cls(cin, cout, k, stride=stride, padding=k // 2, bias=False)

    def norm_layer(self, channels: int, layer_idx: int) -> nn.Module:
        """The selected norm for a (N, C, H, W) map, built with its depth context."""
        return create_norm(
            self.norm,
            channels,
            layout="channels_first",
            site="conv",
            layer_idx=layer_idx,
            num_layers=self.num_layers,
            **self.norm_kwargs,
        )


def act_after(norm: nn.Module) -> nn.Module:
    """ReLU after a norm, or nothing if the norm already contains its activation (EvoNorm)."""
    return nn.Identity() if getattr(norm, "replaces_activation", False) else nn.ReLU(inplace=True)


def zero_output_scale(norm: nn.Module) -> bool:
    """Zero a norm's output gain (``weight`` or ``gamma``) so its branch starts at 0; False if it has none."""
    inner = getattr(norm, "norm", norm)  # the channels-first adapter keeps the plugin in .norm
    for name in ("weight", "gamma"):
        p = getattr(inner, name, None)
        if isinstance(p, nn.Parameter):
            with torch.no_grad():
                p.zero_()
            return True
    return False


# ----------------------------------------------------------------------------------------------
# standard (post-activation) blocks
# ----------------------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    """Post-activation basic block (He et al. 2016).

    ::

        x --conv1--bn1--relu--conv2--bn2--(+)--relu--> out
        |                                  |
        +------- identity | downsample ----+
    """

    expansion = 1

    def __init__(self, b: Builder, cin: int, planes: int, stride: int, idx: int):
        super().__init__()
        self.conv1, self.bn1 = b.conv(cin, planes, 3, stride), b.norm_layer(planes, idx)
        self.act1 = act_after(self.bn1)
        self.conv2, self.bn2 = b.conv(planes, planes, 3), b.norm_layer(planes, idx)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = projection(b, cin, planes, stride, idx)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual sum of the two-conv branch and the (projected) shortcut, then ReLU."""
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)

    def zero_init_last(self) -> None:
        """Start the branch at 0 by zeroing the last norm's gain (no-op for weightless norms)."""
        zero_output_scale(self.bn2)


class Bottleneck(nn.Module):
    """Post-activation bottleneck block, stride on the 3x3 conv (torchvision's ResNet v1.5).

    ::

        x --conv1(1x1)--bn1--relu--conv2(3x3,s)--bn2--relu--conv3(1x1)--bn3--(+)--relu--> out
        |                                                                   |
        +---------------------- identity | downsample --------------------+
    """

    expansion = 4

    def __init__(self, b: Builder, cin: int, planes: int, stride: int, idx: int):
        super().__init__()
        cout = planes * self.expansion
        self.conv1, self.bn1 = b.conv(cin, planes, 1), b.norm_layer(planes, idx)
        self.act1 = act_after(self.bn1)
        self.conv2, self.bn2 = b.conv(planes, planes, 3, stride), b.norm_layer(planes, idx)
        self.act2 = act_after(self.bn2)
        self.conv3, self.bn3 = b.conv(planes, cout, 1), b.norm_layer(cout, idx)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = projection(b, cin, cout, stride, idx)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual sum of the 1x1-3x3-1x1 branch and the (projected) shortcut, then ReLU."""
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)

    def zero_init_last(self) -> None:
        """Start the branch at 0 by zeroing the last norm's gain (no-op for weightless norms)."""
        zero_output_scale(self.bn3)


def projection(b: Builder, cin: int, cout: int, stride: int, idx: int) -> nn.Sequential | None:
    """1x1 conv + norm shortcut when shape changes (torchvision's ``downsample``), else None."""
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(b.conv(cin, cout, 1, stride), b.norm_layer(cout, idx))


# ----------------------------------------------------------------------------------------------
# pre-activation blocks
# ----------------------------------------------------------------------------------------------
class PreActBasicBlock(nn.Module):
    """Pre-activation basic block (He et al. 2016, "Identity Mappings"); the shortcut of a
    shape-changing block projects the pre-activated input.

    ::

        x --bn1--relu--+--conv1--bn2--relu--conv2--(+)--> out
        |              |                            |
        +-- identity --+---- or downsample(conv) ---+
    """

    expansion = 1

    def __init__(self, b: Builder, cin: int, planes: int, stride: int, idx: int):
        super().__init__()
        self.bn1 = b.norm_layer(cin, idx)
        self.act1 = act_after(self.bn1)
        self.conv1 = b.conv(cin, planes, 3, stride)
        self.bn2 = b.norm_layer(planes, idx)
        self.act2 = act_after(self.bn2)
        self.conv2 = b.conv(planes, planes, 3)
        self.downsample = None if stride == 1 and cin == planes else b.conv(cin, planes, 1, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x + conv2(act(bn2(conv1(act(bn1(x))))))."""
        pre = self.act1(self.bn1(x))
        shortcut = x if self.downsample is None else self.downsample(pre)
        out = self.conv2(self.act2(self.bn2(self.conv1(pre))))
        return out + shortcut

    def zero_init_last(self) -> None:
        """Start the branch at 0 by zeroing its last conv."""
        nn.init.zeros_(self.conv2.weight)


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck block (He et al. 2016, "Identity Mappings").

    ::

        x --bn1--relu--+--conv1(1x1)--bn2--relu--conv2(3x3,s)--bn3--relu--conv3(1x1)--(+)--> out
        |              |                                                               |
        +-- identity --+---------------------- or downsample(conv) -------------------+
    """

    expansion = 4

    def __init__(self, b: Builder, cin: int, planes: int, stride: int, idx: int):
        super().__init__()
        cout = planes * self.expansion
        self.bn1 = b.norm_layer(cin, idx)
        self.act1 = act_after(self.bn1)
        self.conv1 = b.conv(cin, planes, 1)
        self.bn2 = b.norm_layer(planes, idx)
        self.act2 = act_after(self.bn2)
        self.conv2 = b.conv(planes, planes, 3, stride)
        self.bn3 = b.norm_layer(planes, idx)
        self.act3 = act_after(self.bn3)
        self.conv3 = b.conv(planes, cout, 1)
        self.downsample = None if stride == 1 and cin == cout else b.conv(cin, cout, 1, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x + conv3(act(bn3(conv2(act(bn2(conv1(act(bn1(x)))))))))."""
        pre = self.act1(self.bn1(x))
        shortcut = x if self.downsample is None else self.downsample(pre)
        out = self.conv2(self.act2(self.bn2(self.conv1(pre))))
        out = self.conv3(self.act3(self.bn3(out)))
        return out + shortcut

    def zero_init_last(self) -> None:
        """Start the branch at 0 by zeroing its last conv."""
        nn.init.zeros_(self.conv3.weight)


# ----------------------------------------------------------------------------------------------
# Fixup blocks (no norm)
# ----------------------------------------------------------------------------------------------
def scalar(value: float) -> nn.Parameter:
    """A learnable scalar (Fixup's biases and multiplier)."""
    return nn.Parameter(torch.full((1,), float(value)))


class FixupBasicBlock(nn.Module):
    """Fixup basic block (Zhang et al. 2019): scalar biases before each conv and activation, a scalar
    multiplier on the branch; init (in ``init_fixup``) zeroes conv2 so the branch starts at 0.

    ::

        x --(+b1a)--conv1--(+b1b)--relu--(+b2a)--conv2--(*scale)--(+b2b)--(+)--relu--> out
        |     |                                                              |
        +-----+------------- identity | downsample(x + b1a) ----------------+
    """

    expansion = 1
    convs_per_branch = 2

    def __init__(self, b: Builder, cin: int, planes: int, stride: int, idx: int):
        super().__init__()
        self.bias1a, self.bias1b, self.bias2a, self.bias2b = scalar(0), scalar(0), scalar(0), scalar(0)
        self.scale = scalar(1)
        self.conv1 = b.conv(cin, planes, 3, stride)
        self.conv2 = b.conv(planes, planes, 3)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None if stride == 1 and cin == planes else b.conv(cin, planes, 1, stride)

    def branch_convs(self) -> list[nn.Conv2d]:
        """Convs of the residual branch in order (the last is zero-initialized)."""
        return [self.conv1, self.conv2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """relu(scale * conv2(relu(conv1(x + b1a) + b1b) + b2a) + b2b + shortcut)."""
        xa = x + self.bias1a
        out = self.relu(self.conv1(xa) + self.bias1b)
        out = self.conv2(out + self.bias2a) * self.scale + self.bias2b
        shortcut = x if self.downsample is None else self.downsample(xa)
        return self.relu(out + shortcut)


class FixupBottleneck(nn.Module):
    """Fixup bottleneck block (Zhang et al. 2019); conv3 starts at 0.

    ::

        x --(+b1a)--conv1--(+b1b)--relu--(+b2a)--conv2--(+b2b)--relu--(+b3a)--conv3--(*scale)--(+b3b)--(+)--relu-->
        |     |                                                                                       |
        +-----+------------------------- identity | downsample(x + b1a) -----------------------------+
    """

    expansion = 4
    convs_per_branch = 3

    def __init__(self, b: Builder, cin: int, planes: int, stride: int, idx: int):
        super().__init__()
        cout = planes * self.expansion
        self.bias1a, self.bias1b, self.bias2a, self.bias2b = scalar(0), scalar(0), scalar(0), scalar(0)
        self.bias3a, self.bias3b, self.scale = scalar(0), scalar(0), scalar(1)
        self.conv1 = b.conv(cin, planes, 1)
        self.conv2 = b.conv(planes, planes, 3, stride)
        self.conv3 = b.conv(planes, cout, 1)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None if stride == 1 and cin == cout else b.conv(cin, cout, 1, stride)

    def branch_convs(self) -> list[nn.Conv2d]:
        """Convs of the residual branch in order (the last is zero-initialized)."""
        return [self.conv1, self.conv2, self.conv3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """relu(scale * conv3(...) + b3b + shortcut) with a scalar bias before every conv and ReLU."""
        xa = x + self.bias1a
        out = self.relu(self.conv1(xa) + self.bias1b)
        out = self.relu(self.conv2(out + self.bias2a) + self.bias2b)
        out = self.conv3(out + self.bias3a) * self.scale + self.bias3b
        shortcut = x if self.downsample is None else self.downsample(xa)
        return self.relu(out + shortcut)


# ----------------------------------------------------------------------------------------------
# NF blocks (normalization-free, Scaled WS)
# ----------------------------------------------------------------------------------------------
class GammaReLU(nn.Module):
    """ReLU times 1.7139588594436646, so a unit-Gaussian input keeps unit second moment (NFNets)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """relu(x) * gamma."""
        return torch.relu(x) * RELU_GAMMA


class NFBlock(nn.Module):
    """NF-ResNet block (Brock et al. 2021): the branch sees the input scaled by beta = 1/expected_std
    and is added back times alpha * skip_gain (skip_gain init 0). A transition block (first of a stage)
    takes its shortcut from the scaled pre-activation through avg-pool (if strided) + Scaled WS 1x1 conv.

    ::

        h --act--(*beta)--+--conv1--act--conv2[--act--conv3]--(*alpha*skip_gain)--(+)--> out
        |                 |                                                      |
        +-- identity -----+------- or (transition) [avgpool]--conv_shortcut -----+
    """

    def __init__(
        self,
        cin: int,
        planes: int,
        stride: int,
        bottleneck: bool,
        transition: bool,
        beta: float,
        alpha: float = NF_ALPHA,
    ):
        super().__init__()
        self.expansion = 4 if bottleneck else 1
        cout = planes * self.expansion
        self.beta, self.alpha = beta, alpha
        self.act = GammaReLU()
        if bottleneck:
            convs = [
                ScaledWSConv2d(cin, planes, 1),
                ScaledWSConv2d(planes, planes, 3, stride, padding=1),
                ScaledWSConv2d(planes, cout, 1),
            ]
        else:
            convs = [ScaledWSConv2d(cin, planes, 3, stride, padding=1), ScaledWSConv2d(planes, planes, 3, padding=1)]
        self.convs = nn.ModuleList(convs)
        self.skip_gain = nn.Parameter(torch.zeros(()))
        if transition:
            pool = nn.AvgPool2d(2, ceil_mode=True, count_include_pad=False) if stride > 1 else nn.Identity()
            self.downsample = nn.Sequential(pool, ScaledWSConv2d(cin, cout, 1))
        else:
            if stride != 1 or cin != cout:
                raise ValueError("an NF block that changes shape must be a transition block")
            self.downsample = None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h' = shortcut + alpha * skip_gain * f(act(h) * beta)."""
        pre = self.act(h) * self.beta
        shortcut = h if self.downsample is None else self.downsample(pre)
        out = pre
        for i, conv in enumerate(self.convs):
            out = conv(out if i == 0 else self.act(out))
        return shortcut + out * (self.alpha * self.skip_gain)


# ----------------------------------------------------------------------------------------------
# the network: shared stages and head; each variant family builds its own stem, blocks and ending
# ----------------------------------------------------------------------------------------------
class ResNet(nn.Module):
    """A ResNet (any variant) as a plain ``nn.Module``: ``forward(images) -> logits``.

    ``blocks`` lists the residual blocks in depth order; ``forward_features`` returns the last map
    before pooling (used for signal-propagation checks). ``spec`` holds the construction arguments.
    Construct it through :func:`build_resnet`, which picks :class:`NormedResNet` (standard, preact) or
    :class:`NormFreeResNet` (fixup, nf) by ``variant``.
    """

    family = "resnet"
    placement_cls = None

    def __init__(
        self,
        stage_depths: list[int],
        stage_widths: list[int],
        *,
        bottleneck: bool,
        imagenet_stem: bool,
        norm: Any = None,
        norm_kwargs: dict | None = None,
        variant: str = "standard",
        weight_standardization: bool = False,
        num_classes: int = 10,
        in_chans: int = 3,
        img_size: int = 32,
        zero_init_last: bool = False,
        spec: dict | None = None,
    ):
        super().__init__()
        self.num_classes, self.in_chans, self.img_size, self.variant = num_classes, in_chans, img_size, variant
        self.spec = dict(
            spec or {},
            norm=norm if not callable(norm) else repr(norm),
            norm_kwargs=dict(norm_kwargs or {}),
            variant=variant,
            weight_standardization=weight_standardization,
            num_classes=num_classes,
            in_chans=in_chans,
            img_size=img_size,
            zero_init_last=zero_init_last,
            placement=None,
        )
        num_blocks = sum(stage_depths)
        b = Builder(norm, norm_kwargs, weight_standardization, num_blocks)
        k, s = (7, 2) if imagenet_stem else (3, 1)
        self.build_stem(b, in_chans, stage_widths[0], k, s)  # torchvision names: conv1, bn1, relu, maxpool
        self.maxpool = nn.MaxPool2d(3, 2, 1) if imagenet_stem else nn.Identity()
        cin, idx = stage_widths[0], 0
        self.stage_names = []
        for si, (depth, width) in enumerate(zip(stage_depths, stage_widths)):
            blocks = []
            for bi in range(depth):
                blk = self.build_block(b, cin, width, 2 if (si > 0 and bi == 0) else 1, bottleneck, idx, bi == 0)
                blocks.append(blk)
                cin, idx = width * blk.expansion, idx + 1
            setattr(self, f"layer{si + 1}", nn.Sequential(*blocks))
            self.stage_names.append(f"layer{si + 1}")
        self.build_ending(b, cin, num_blocks)
        self.num_features = cin
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():  # He (fan-out) init as torchvision; norms keep their plugin's init, NF its own
            if type(m) in (nn.Conv2d, WSConv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        self.init_variant(bottleneck, num_blocks, zero_init_last)

    # --- what a variant family defines ------------------------------------------------------------
    def build_stem(self, b: Builder, in_chans: int, width: int, k: int, s: int) -> None:
        """Create ``conv1`` and whatever the variant puts after it."""
        raise NotImplementedError

    def build_block(
        self, b: Builder, cin: int, planes: int, stride: int, bottleneck: bool, idx: int, first_of_stage: bool
    ) -> nn.Module:
        """One residual block."""
        raise NotImplementedError

    def build_ending(self, b: Builder, channels: int, num_blocks: int) -> None:
        """Create what runs after the last stage, before pooling."""

    def init_variant(self, bottleneck: bool, num_blocks: int, zero_init_last: bool) -> None:
        """Variant-specific init after the shared He init."""

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """The stem after ``conv1`` (before the max-pool)."""
        return x

    def ending(self, x: torch.Tensor) -> torch.Tensor:
        """After the last stage, before pooling."""
        return x

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """After global average pooling, before ``fc``."""
        return x

    # --- shared forward ---------------------------------------------------------------------------
    @property
    def blocks(self) -> list[nn.Module]:
        """Residual blocks in depth order (a list, so nothing is registered twice)."""
        return [blk for name in self.stage_names for blk in getattr(self, name)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and all stages: the final (N, C, H', W') map before pooling."""
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"ResNet expects images of shape (N, {self.in_chans}, H, W), got {tuple(x.shape)}")
        if self.training and x.shape[0] == 1 and self.has_batch_stat_norm():
            warnings.warn(
                "ResNet trains with batch size 1 and a batch-statistic norm "
                f"({self.spec['norm']}): each sample is normalized by its own statistics and the running "
                "estimates will not match eval. Use a larger batch, or groupnorm with "
                "weight_standardization=True, evonorm_s0, or variant='nf'.",
                UserWarning,
                stacklevel=3,
            )
        x = self.maxpool(self.stem(self.conv1(x)))
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return self.ending(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, in_chans, H, W) -> logits (N, num_classes)."""
        return self.fc(self.pooled(torch.flatten(self.avgpool(self.forward_features(x)), 1)))

    def has_batch_stat_norm(self) -> bool:
        """True if any norm in the network normalizes with statistics across the batch."""
        return any(
            getattr(m, "uses_batch_statistics", False) or isinstance(m, nn.modules.batchnorm._BatchNorm)
            for m in self.modules()
        )


class NormedResNet(ResNet):
    """standard (post-activation, conv-norm-relu stem) and preact (bare-conv stem, final norm + relu)."""

    def build_stem(self, b: Builder, in_chans: int, width: int, k: int, s: int) -> None:
        """conv1, and for 'standard' its norm (bn1) and activation."""
        self.conv1 = b.conv(in_chans, width, k, s)
        if self.variant == "standard":
            self.bn1 = b.norm_layer(width, 0)
            self.relu = act_after(self.bn1)

    def build_block(self, b, cin, planes, stride, bottleneck, idx, first_of_stage):
        """Post- or pre-activation basic/bottleneck block."""
        cls = {
            ("standard", False): BasicBlock,
            ("standard", True): Bottleneck,
            ("preact", False): PreActBasicBlock,
            ("preact", True): PreActBottleneck,
        }[self.variant, bottleneck]
        return cls(b, cin, planes, stride, idx)

    def build_ending(self, b: Builder, channels: int, num_blocks: int) -> None:
        """preact ends with norm + relu."""
        if self.variant == "preact":
            self.norm_final = b.norm_layer(channels, num_blocks - 1)
            self.act_final = act_after(self.norm_final)

    def init_variant(self, bottleneck: bool, num_blocks: int, zero_init_last: bool) -> None:
        """Optionally start every branch at 0."""
        if zero_init_last:
            for blk in self.blocks:
                blk.zero_init_last()

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """bn1 + relu ('standard'); the preact stem is a bare conv."""
        return self.relu(self.bn1(x)) if self.variant == "standard" else x

    def ending(self, x: torch.Tensor) -> torch.Tensor:
        """The preact final norm + relu."""
        return self.act_final(self.norm_final(x)) if self.variant == "preact" else x


class NormFreeResNet(ResNet):
    """fixup (scalar biases, zero-init branches and fc, depth-scaled init) and nf (Scaled WS, alpha/beta)."""

    def build_stem(self, b: Builder, in_chans: int, width: int, k: int, s: int) -> None:
        """A Scaled WS stem conv (nf) or a plain conv with a scalar bias before the ReLU (fixup)."""
        if self.variant == "nf":
            self.conv1 = ScaledWSConv2d(in_chans, width, k, s, padding=k // 2)
            self.expected_std = 1.0  # the signal's expected std entering the next NF block
        else:
            self.conv1 = b.conv(in_chans, width, k, s)
            self.bias1 = scalar(0)
            self.relu = nn.ReLU(inplace=True)

    def build_block(self, b, cin, planes, stride, bottleneck, idx, first_of_stage):
        """A Fixup block, or an NF block with beta = 1 / expected std (reset at each transition block)."""
        if self.variant == "fixup":
            return (FixupBottleneck if bottleneck else FixupBasicBlock)(b, cin, planes, stride, idx)
        blk = NFBlock(cin, planes, stride, bottleneck, transition=first_of_stage, beta=1.0 / self.expected_std)
        self.expected_std = math.sqrt((1.0 if first_of_stage else self.expected_std) ** 2 + NF_ALPHA**2)
        return blk

    def build_ending(self, b: Builder, channels: int, num_blocks: int) -> None:
        """nf ends with a gamma-scaled ReLU, fixup adds a scalar bias after pooling."""
        if self.variant == "nf":
            self.act_final = GammaReLU()
        else:
            self.bias2 = scalar(0)

    def init_variant(self, bottleneck: bool, num_blocks: int, zero_init_last: bool) -> None:
        """Fixup: inner branch convs N(0, He * L^(-1/(2m-2))), last branch conv and fc zero."""
        if self.variant != "fixup":
            return
        depth_scale = num_blocks ** (-1.0 / (2 * (3 if bottleneck else 2) - 2))
        for blk in self.blocks:
            *inner, last = blk.branch_convs()
            for conv in inner:  # N(0, sqrt(2 / (out_ch * k * k)) * L^(-1/(2m-2)))
                fan_out = conv.weight.shape[0] * conv.weight[0, 0].numel()
                nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / fan_out) * depth_scale)
            nn.init.zeros_(last.weight)
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """fixup: relu(x + bias1)."""
        return self.relu(x + self.bias1) if self.variant == "fixup" else x

    def ending(self, x: torch.Tensor) -> torch.Tensor:
        """nf: the final gamma-scaled ReLU."""
        return self.act_final(x) if self.variant == "nf" else x

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """fixup: + bias2 before fc."""
        return x + self.bias2 if self.variant == "fixup" else x


def build_resnet(
    stage_depths: list[int],
    stage_widths: list[int],
    *,
    variant: str = "standard",
    norm: Any = None,
    weight_standardization: bool = False,
    **kwargs: Any,
) -> ResNet:
    """Check the variant's options and build it (standard/preact take a norm; fixup/nf are norm-free)."""
    if variant not in VARIANTS:
        raise PluginOptionError(f"ResNet variant {variant!r} is unknown; choose one of {', '.join(VARIANTS)}")
    if variant in ("fixup", "nf"):
        if norm not in (None, "identity", "none"):
            raise PluginOptionError(
                f"ResNet variant {variant!r} is normalization-free and takes no norm "
                f"(got norm={norm!r}); use variant='standard' or 'preact' to pick a norm"
            )
        if weight_standardization:
            raise PluginOptionError(
                f"ResNet variant {variant!r} takes no weight_standardization (nf has its own "
                "Scaled WS convs; WS would undo Fixup's init scaling)"
            )
        return NormFreeResNet(stage_depths, stage_widths, variant=variant, norm=norm, **kwargs)
    return NormedResNet(
        stage_depths,
        stage_widths,
        variant=variant,
        norm="batchnorm" if norm is None else norm,
        weight_standardization=weight_standardization,
        **kwargs,
    )


def cifar_resnet(depth: int, *, bottleneck: bool = False, width: float = 1.0, **kwargs: Any) -> ResNet:
    """CIFAR-style ResNet of ``depth`` = 6n+2 layers (basic) or 9n+2 (bottleneck): 3 stages, 16-32-64 x width."""
    per_block = 3 if bottleneck else 2
    n, rest = divmod(depth - 2, 3 * per_block)
    if n < 1 or rest:
        raise PluginOptionError(f"CIFAR ResNet depth must be {3 * per_block}n+2 (e.g. 20, 56, 110), got {depth}")
    return build_resnet([n] * 3, _widths(CIFAR_WIDTHS, width), bottleneck=bottleneck, imagenet_stem=False, **kwargs)


def _widths(base: tuple[int, ...], width: float) -> list[int]:
    return [max(1, round(w * width)) for w in base]


CIFAR_WIDTHS, IMAGENET_WIDTHS = (16, 32, 64), (64, 128, 256, 512)
CIFAR = dict(bottleneck=False, imagenet_stem=False, num_classes=10, img_size=32, base_widths=CIFAR_WIDTHS)
IMAGENET = dict(imagenet_stem=True, num_classes=1000, img_size=224, base_widths=IMAGENET_WIDTHS)


def _preset(name: str, defaults: dict, kwargs: dict) -> ResNet:
    """Build preset ``name``: its architecture ``defaults`` overridden by the user's ``kwargs``.

    Options (all presets): norm, norm_kwargs, variant (standard|preact|fixup|nf), weight_standardization,
    width (channel multiplier), num_classes, in_chans, img_size, zero_init_last.
    """
    args = {**defaults, **kwargs}
    width = args.pop("width", 1.0)
    widths = _widths(args.pop("base_widths"), width)
    return build_resnet(args.pop("stage_depths"), widths, spec={"name": name, "width": width}, **args)


def resnet20(**kwargs: Any) -> ResNet:
    """CIFAR ResNet-20 (3x3 basic blocks, 0.27M params at width 1). ``norm`` defaults to batchnorm
    (none for the normalization-free variants 'fixup' and 'nf')."""
    return _preset("resnet20", dict(CIFAR, stage_depths=[3, 3, 3]), kwargs)


def resnet56(**kwargs: Any) -> ResNet:
    """CIFAR ResNet-56 (9 basic blocks per stage). Options as :func:`resnet20`."""
    return _preset("resnet56", dict(CIFAR, stage_depths=[9, 9, 9]), kwargs)


def resnet110(**kwargs: Any) -> ResNet:
    """CIFAR ResNet-110 (18 basic blocks per stage). Options as :func:`resnet20`."""
    return _preset("resnet110", dict(CIFAR, stage_depths=[18, 18, 18]), kwargs)


def resnet18(**kwargs: Any) -> ResNet:
    """ImageNet ResNet-18 (torchvision layout and parameter names; same output as torchvision with batchnorm)."""
    return _preset("resnet18", dict(IMAGENET, stage_depths=[2, 2, 2, 2], bottleneck=False), kwargs)


def resnet50(**kwargs: Any) -> ResNet:
    """ImageNet ResNet-50 v1.5 (bottlenecks, stride on the 3x3 conv; torchvision layout and names)."""
    return _preset("resnet50", dict(IMAGENET, stage_depths=[3, 4, 6, 3], bottleneck=True), kwargs)
