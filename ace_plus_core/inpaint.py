"""Canvas pixels and masks prepared for VAE encoding as ACE++ conditioning (pure torch).

As ComfyUI's InpaintModelConditioning, sides are center-cropped to multiples of 8 and the mask resized to the image
and cropped the same way; every tensor that is encoded comes from the same cropped pixels (unlike the official
nodes). The mask keeps soft values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import validate
from .masks import ASPECT_TOLERANCE, aspect_matches

LATENT_FACTOR = 8


def check_image(image: torch.Tensor, name: str) -> torch.Tensor:
    """The checked RGB IMAGE ``[B, H, W, 3]`` (:func:`.validate.check_image`), at least 8x8 pixels."""
    image = validate.rgb(validate.check_image(image, name))
    if image.shape[1] < LATENT_FACTOR or image.shape[2] < LATENT_FACTOR:
        raise ValueError(
            f"{name} is {image.shape[2]}x{image.shape[1]}; the VAE needs at least {LATENT_FACTOR}x{LATENT_FACTOR} "
            "pixels. Connect the canvas from an ACE++ processor or canvas node."
        )
    return image


def crop_box_multiple_of_8(height: int, width: int) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the centered crop to multiples of 8 (ComfyUI's inpaint rule)."""
    h = height // LATENT_FACTOR * LATENT_FACTOR
    w = width // LATENT_FACTOR * LATENT_FACTOR
    return (height % LATENT_FACTOR) // 2, (width % LATENT_FACTOR) // 2, h, w


def prepare_pixels_and_mask(
    pixels: torch.Tensor, mask: torch.Tensor, *, pixels_name: str = "pixels", mask_name: str = "mask"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop ``pixels`` [B,H,W,C] to multiples of 8 and bring ``mask`` to the same size and batch.

    Returns (pixels [B,h,w,3], mask [B,1,h,w]); the mask is resized bilinearly to the image first (as ComfyUI
    and the official nodes do), so a mask made at the canvas size passes through unchanged; a mask whose aspect
    ratio differs by more than 1 % is a ``ValueError``.
    """
    pixels = check_image(pixels, pixels_name)
    mask = validate.check_mask(mask, mask_name, soft=True).to(pixels.device, torch.float32)
    batch = pixels.shape[0]
    if mask.shape[0] not in (1, batch):
        raise ValueError(
            f"{mask_name} has a batch of {mask.shape[0]} but {pixels_name} has {batch}; "
            "give one mask for all images or one per image."
        )
    height, width = pixels.shape[1], pixels.shape[2]
    if mask.shape[-2:] != (height, width):
        if not aspect_matches((mask.shape[-2], mask.shape[-1]), (height, width)):
            raise ValueError(
                f"{mask_name} is {mask.shape[-1]}x{mask.shape[-2]} but {pixels_name} is {width}x{height}; their aspect "
                f"ratios differ by more than {ASPECT_TOLERANCE:.0%}. Connect the mask made with this canvas."
            )
        mask = F.interpolate(mask.unsqueeze(1), size=(height, width), mode="bilinear").squeeze(1)
    mask = mask.expand(batch, -1, -1).unsqueeze(1)
    top, left, h, w = crop_box_multiple_of_8(height, width)
    pixels = pixels[:, top : top + h, left : left + w]
    mask = mask[:, :, top : top + h, left : left + w]
    return pixels, mask


def check_same_size(a: torch.Tensor, a_name: str, b: torch.Tensor, b_name: str) -> None:
    a = validate.check_image(a, a_name)
    b = validate.check_image(b, b_name)
    if a.shape[:3] != b.shape[:3]:
        raise ValueError(
            f"{a_name} is {a.shape[2]}x{a.shape[1]} (batch {a.shape[0]}) but {b_name} is {b.shape[2]}x{b.shape[1]} "
            f"(batch {b.shape[0]}); connect both from the same ACE++ FFT processor or canvas node."
        )
