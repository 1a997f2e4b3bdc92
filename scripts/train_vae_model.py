"""The model side of scripts/train_vae.py: geometry, initialisation, image-pooled GroupNorm, losses, schedule.

Why a pooled GroupNorm: GroupNorm normalises with the statistics of the whole image it is given,
so what the model learns depends on the size of its training images. Training on whole
multi-megapixel photographs is out of reach on a CPU; training on several crops of one image whose
GroupNorms share one set of statistics is not: the pooled statistics are those of the image the
crops were cut from (up to the crops' sampling), whatever its size, while the cost is that of the
crops. Its margin option leaves the crops' edges out of the statistics, since zero padding shows
there and nowhere inside a large image. See docs/default-model.md, "Size and colour".
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vaecli.config import VAEConfig
from vaecli.model import AutoencoderKL
from vaecli.model.normalization import ChannelAffine

GEOMETRY_KEYS = ("ch", "ch_mult", "num_res_blocks", "z_channels", "attn_type", "norm_num_groups", "norm_type")


def build_config(geometry: dict) -> VAEConfig:
    return VAEConfig(
        ch=geometry["ch"],
        ch_mult=tuple(geometry["ch_mult"]),
        num_res_blocks=geometry["num_res_blocks"],
        z_channels=geometry["z_channels"],
        attn_type=geometry["attn_type"],
        norm_num_groups=geometry.get("norm_num_groups", 32),  # checkpoints from before the option used 32
        norm_type=geometry.get("norm_type", "group"),  # and GroupNorm
        resolution=256,
        embed_dim=None,  # no quant convs: the encoder emits the latent moments directly, as in SD3/FLUX
    )


class ImagePooledGroupNorm(nn.GroupNorm):
    """GroupNorm whose statistics are shared by each run of `crops_per_image` consecutive batch items.

    Items i*k .. i*k+k-1 are crops of one image: their groups are normalised with the mean and
    variance over all k crops, exactly as GroupNorm over the crops laid side by side would.
    `margin` (a fraction of the crop side) leaves a band at each crop edge out of the statistics:
    there the convolutions' zero padding shows, which inside a large image it never does, so the
    statistics are those of a large image's interior. Same parameters (and state_dict) as
    nn.GroupNorm; k = 1 with no margin is nn.GroupNorm itself.
    """

    crops_per_image: int = 1
    margin: float = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, b, c, h, w = self.crops_per_image, *x.shape
        m = round(self.margin * h)
        if k == 1 and m == 0:
            return super().forward(x)
        inner = x[..., m : h - m, m : w - m]  # (B, C, h', w')
        grouped = inner.reshape(b // k, k, c, -1).transpose(1, 2).reshape(b // k, self.num_groups, -1)  # (images, groups, K*C/G*h'*w')
        var, mean = torch.var_mean(grouped, dim=-1, correction=0)  # (images, groups)
        scale = self.weight.view(1, self.num_groups, -1) * torch.rsqrt(var + self.eps)[..., None]  # (images, groups, C/G)
        shift = self.bias.view(1, self.num_groups, -1) - mean[..., None] * scale
        per_item = (b // k, 1, c, 1, 1)
        scale = scale.reshape(per_item).expand(-1, k, -1, -1, -1).reshape(b, c, 1, 1)  # each crop gets its image's
        shift = shift.reshape(per_item).expand(-1, k, -1, -1, -1).reshape(b, c, 1, 1)
        return x * scale + shift


def set_stats_margin(model: nn.Module, margin: float) -> None:
    """Leave `margin` (a fraction of the crop side) of every crop edge out of the pooled GroupNorm statistics."""
    for module in model.modules():
        if isinstance(module, ImagePooledGroupNorm):
            module.margin = margin


def pool_group_norms(model: nn.Module, crops_per_image: int) -> None:
    """Make every GroupNorm of `model` pool its statistics over `crops_per_image` consecutive items."""
    for module in model.modules():
        if isinstance(module, nn.GroupNorm):
            module.__class__ = ImagePooledGroupNorm
            module.crops_per_image = crops_per_image


@torch.no_grad()
def fold_norm_statistics(model: AutoencoderKL, batches) -> dict[str, torch.Tensor]:
    """The state dict of `model` (GroupNorms) for the same model with `norm_type: affine`.

    Each GroupNorm's per-group mean and variance, measured per image on `batches` (each image
    normalised on its own, as the model was trained), are averaged over the images and folded into
    its weight and bias (ChannelAffine.fold_statistics): for an image whose statistics are the
    average ones, the affine model computes what the GroupNorm one did. Fine-tuning does the rest.
    """
    norms = {name: m for name, m in model.named_modules() if isinstance(m, nn.GroupNorm)}
    recorded: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {name: [] for name in norms}  # per batch: (var, mean), each (B, G)

    def record(name: str):
        def hook(norm: nn.GroupNorm, inputs: tuple) -> None:
            x = inputs[0]
            recorded[name].append(torch.var_mean(x.double().reshape(x.shape[0], norm.num_groups, -1), dim=-1, correction=0))

        return hook

    hooks = [m.register_forward_pre_hook(record(name)) for name, m in norms.items()]
    try:
        for x in batches:
            model.decode(model.encode(x).mode())
    finally:
        for h in hooks:
            h.remove()
    state = dict(model.state_dict())
    for name, stats in recorded.items():
        var, mean = (torch.cat(per_image).mean(dim=0) for per_image in zip(*stats))  # each (G,): the average over the images
        affine = ChannelAffine.fold_statistics(norms[name], mean, var)
        state[f"{name}.weight"], state[f"{name}.bias"] = affine.weight.detach(), affine.bias.detach()
    return state


@torch.no_grad()
def init_posterior_logvar(model: AutoencoderKL, logvar: float) -> None:
    """Start the posterior nearly deterministic: bias the encoder's logvar channels to `logvar`.

    At the default init the logvar is ~0, so posterior samples are unit-variance noise that swamps
    the small initial means and the decoder learns nothing until the encoder has pushed the variance
    down; with a KL weight of 1e-6 trained LDM autoencoders end with tiny variances anyway. Starting
    there saves much of a short CPU run.
    """
    conv = model.encoder.conv_out
    conv.bias[conv.out_channels // 2 :] = logvar  # moments are (mean, logvar) along channels


@torch.no_grad()
def init_group_offsets(model: AutoencoderKL, offset: float) -> None:
    """Give the features before each GroupNorm -> conv_out opposite constant offsets within each group.

    GroupNorm normalises each group of channels jointly, per image: the group's common mean and scale
    are erased, so the image's global colour (or the latent's global mean) can reach conv_out only as
    differences between the group's channels, measured against a known scale. Offsets alternating
    +offset / -offset along the channels (the bias of the last residual conv) are that known scale:
    each group's spread is dominated by them, so normalised values stay roughly linear in the
    absolute signal. The norm's shift lifts the negative channels into SiLU's linear part. Measured
    with GroupNorm(32) over 64 channels (pairs, the tightest case): held-out retina (strong colour
    cast) 11.5 -> 19.4 dB after 300 steps. Wider groups (`--norm-num-groups 8`) need this less.
    """
    for conv, norm in (
        (model.decoder.up[0].block[-1].conv2, model.decoder.norm_out),
        (model.encoder.mid.block_2.conv2, model.encoder.norm_out),
    ):
        conv.bias[0::2] += offset  # even/odd channels alternate within every group (groups hold >= 2)
        conv.bias[1::2] -= offset
        norm.bias[1::2] += 2.0


def colour_loss(x: torch.Tensor, xrec: torch.Tensor, crops_per_image: int) -> torch.Tensor:
    """Squared difference of each image's channel means (pooled over its crops), averaged: the cast a user sees."""
    b, c = x.shape[:2]
    diff = (x - xrec).view(b // crops_per_image, crops_per_image, c, -1).mean(dim=(1, 3))  # (images, C)
    return diff.pow(2).mean()


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def adaptive_gan_weight(rec_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor) -> torch.Tensor:
    """||d rec / d w|| / ||d g / d w|| at the decoder's last layer: the GAN term never dominates (Esser et al.)."""
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    return (rec_grad.norm() / (g_grad.norm() + 1e-4)).clamp(0.0, 1e4).detach()


def lr_at(step: int, args) -> float:
    """Linear warm-up, then cosine decay from --lr to --lr-final at --steps."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    t = min(1.0, (step - args.warmup) / max(1, args.steps - args.warmup))
    return args.lr_final + 0.5 * (args.lr - args.lr_final) * (1 + math.cos(math.pi * t))
