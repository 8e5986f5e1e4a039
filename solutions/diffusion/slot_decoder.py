"""A slot-conditioned latent diffusion decoder (as in LSD and SlotDiffusion, 2023).

    image (B, 3, H, W) in [0, 1] --the Slot Attention lab's encoder--> slots (B, K, D),
                                                                         attention (B, K, N)
    image --the frozen scene autoencoder (scene_autoencoder.py)--> z0 = scale * encode(image)
                                                                         (B, c, h, w)
    z0 --DDPM--> z_t;   UNet(z_t, t, cond = slots) predicts the noise, cross-attending to the
                        K slots

Trained end to end (slots + UNet): the gradient of the diffusion loss reaches the slot encoder
through the UNet's cross-attention, so the slots must carry what the denoiser needs to rebuild
the image's latents. The autoencoder is pretrained and frozen (no gradient into it), and its
latents get one scale factor (latent_scale) so that z0 has about unit variance, as DDPM's
forward process ends at N(0, I). Samples: DDPM from z_T ~ N(0, I) with the slots as the
condition, then decode(z0 / scale).

The attention of slot attention's last iteration assigns every feature-map position to the
slots; its argmax over slots is a segmentation, scored with ARI / foreground ARI as in the
Slot Attention lab.

The encoder is the Slot Attention lab's (given: slots_model.py). Parameter names:
encoder.*, slot_attention.* (as there), unet.* (unet.py's UNet with cond_dim = slot_dim and
in_channels / image_size those of the latents).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .ddpm import diffusion_loss
from .slots_model import Encoder, SlotAttention, SlotConfig
from .unet import UNet, UNetConfig


class SlotDiffusion(nn.Module):
    """The slot encoder (Encoder + SlotAttention of the slots lab) and a slot-conditioned UNet."""

    def __init__(self, slot_config: SlotConfig, unet_config: UNetConfig):
        super().__init__()
        c = slot_config
        if unet_config.cond_dim != c.slot_dim:
            raise ValueError(f"the UNet's cond_dim ({unet_config.cond_dim}) must be the slots' "
                             f"width slot_dim ({c.slot_dim})")
        self.slot_config, self.unet_config = slot_config, unet_config
        self.encoder = Encoder(c.in_channels, c.hidden, c.encoder_layers, c.slot_dim)
        self.slot_attention = SlotAttention(c.num_slots, c.slot_dim, c.iters, c.mlp_dim, c.eps)
        self.unet = UNet(unet_config)

    def encode(self, image: torch.Tensor):
        """image (B, C, H, W) in [0, 1] -> slots (B, K, D), attention (B, K, N)."""
        return self.slot_attention(self.encoder(image))


# ---------------------------------------------------------------------- diffusion.slot_decoder

def slot_diffusion_loss(model, schedule: dict, images: torch.Tensor, autoencoder,
                        scale: float) -> torch.Tensor:
    """The end-to-end loss of a batch of images (B, 3, H, W) in [0, 1]: the slots of the clean
    images condition the UNet, which learns the DDPM loss on the autoencoder's scaled latents:

        slots, _ = model.encode(images)                       (B, K, D), in the graph
        z0 = scale * autoencoder.encode(images)               (B, c, h, w), no gradient
        loss = diffusion_loss(model.unet, schedule, z0, slots)

    Three musts: the slots stay in the graph (no .detach(), no torch.no_grad()): the encoder
    learns through this loss; the autoencoder is frozen: no gradient may flow into it (encode
    under torch.no_grad(), or detach z0); the latents are multiplied by `scale`. The
    autoencoder takes the images in [0, 1], as the slot encoder does. Call diffusion_loss (the
    grader replaces it). Returns a scalar."""
    ### BEGIN SOLUTION
    # TODO(diffusion.slot_decoder): encode the images into slots (keep the graph), encode them
    #   with the autoencoder without gradient, scale the latents, then diffusion_loss on the UNet
    #   with the slots as the condition.
    slots, _ = model.encode(images)                                   # (B, K, D)
    with torch.no_grad():
        z0 = scale * autoencoder.encode(images)                       # (B, c, h, w)
    return diffusion_loss(model.unet, schedule, z0, slots)
    ### END SOLUTION


def slot_masks(attention: torch.Tensor, height: int, width: int, size: tuple[int, int]) -> torch.Tensor:
    """A segmentation from slot attention's attention (B, K, N), N = height * width positions of
    the feature map in row-major order: reshape to (B, K, height, width), resize to `size`
    (H, W) with nearest-neighbour interpolation (F.interpolate, mode "nearest"), and take the
    argmax over the K slots. Returns ids (B, H, W), int64."""
    ### BEGIN SOLUTION
    # TODO(diffusion.slot_decoder): view as (B, K, height, width) (rows first), F.interpolate to
    #   size, argmax over dim 1.
    B, K, N = attention.shape
    maps = attention.reshape(B, K, height, width)                     # (B, K, h, w)
    maps = F.interpolate(maps, size=tuple(size), mode="nearest")      # (B, K, H, W)
    return maps.argmax(dim=1)                                         # (B, H, W)
    ### END SOLUTION
