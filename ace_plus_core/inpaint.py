"""Canvas pixels and masks prepared for VAE encoding as ACE++ conditioning, as ComfyUI's InpaintModelConditioning
does; every tensor that is encoded comes from the same cropped pixels (unlike the official nodes). Masks stay soft."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import validate
from .masks import check_aspect

LATENT_FACTOR = 8


def prepare_pixels_and_mask(
    pixels: torch.Tensor, mask: torch.Tensor, *, pixels_name: str = "pixels", mask_name: str = "mask"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(pixels ``[B, h, w, 3]``, mask ``[B, 1, h, w]``): ``pixels`` centre-cropped to multiples of 8, ``mask`` resized
    bilinearly to the image first (as ComfyUI does; unchanged at the canvas size) and cropped the same way."""
    pixels = validate.rgb(validate.check_image(pixels, pixels_name))
    if pixels.shape[1] < LATENT_FACTOR or pixels.shape[2] < LATENT_FACTOR:
        raise ValueError(
            f"{pixels_name} is {pixels.shape[2]}x{pixels.shape[1]}; the VAE needs at least {LATENT_FACTOR}x"
            f"{LATENT_FACTOR} pixels. Connect the canvas from an ACE++ processor or canvas node."
        )
    mask = validate.check_mask(mask, mask_name, soft=True).to(pixels.device, torch.float32)
    batch = pixels.shape[0]
    if mask.shape[0] not in (1, batch):
        raise ValueError(f"{mask_name} has a batch of {mask.shape[0]} but {pixels_name} has {batch}; "
                         "give one mask for all images or one per image.")
    height, width = pixels.shape[1], pixels.shape[2]
    if mask.shape[-2:] != (height, width):
        check_aspect(tuple(mask.shape[-2:]), (height, width), mask_name, pixels_name,
                     "Connect the mask made with this canvas.")
        mask = F.interpolate(mask.unsqueeze(1), size=(height, width), mode="bilinear").squeeze(1)
    mask = mask.expand(batch, -1, -1).unsqueeze(1)
    # Centred crop to multiples of 8 (ComfyUI's inpaint rule).
    top, left = (height % LATENT_FACTOR) // 2, (width % LATENT_FACTOR) // 2
    h, w = height // LATENT_FACTOR * LATENT_FACTOR, width // LATENT_FACTOR * LATENT_FACTOR
    return pixels[:, top : top + h, left : left + w], mask[:, :, top : top + h, left : left + w]


def check_same_size(a: torch.Tensor, a_name: str, b: torch.Tensor, b_name: str) -> None:
    a = validate.check_image(a, a_name)
    b = validate.check_image(b, b_name)
    if a.shape[:3] != b.shape[:3]:
        raise ValueError(
            f"{a_name} is {a.shape[2]}x{a.shape[1]} (batch {a.shape[0]}) but {b_name} is {b.shape[2]}x{b.shape[1]} "
            f"(batch {b.shape[0]}); connect both from the same ACE++ FFT processor or canvas node."
        )
