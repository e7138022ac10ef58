"""Mask and batch rules of the ACE++ canvas (docs/CANVAS.md).

A MASK value above 0.5 marks a pixel to edit (NaN counts as 0); an empty mask means "edit everything" (ComfyUI's
``LoadImage`` gives a 64x64 all-zero one for images without alpha); a mask of another size is rescaled when the aspect
ratios agree within 1 %, else a ``ValueError`` (never silently replaced by ones). Inputs of batch 1 serve every item.
"""

from __future__ import annotations

import logging

import torch

from . import validate
from .resize import resize_bilinear_aa, resize_nearest_exact

logger = logging.getLogger(__name__)

#: Relative aspect-ratio difference up to which a mask (or guidance image) of another size is rescaled.
ASPECT_TOLERANCE = 0.01


def _wxh(hw: tuple[int, int]) -> str:
    return f"{hw[1]}x{hw[0]}"


def aspect_matches(src_hw: tuple[int, int], dst_hw: tuple[int, int], tolerance: float = ASPECT_TOLERANCE) -> bool:
    """Whether two (height, width) sizes have the same aspect ratio within ``tolerance`` (relative)."""
    src = src_hw[1] / src_hw[0]
    dst = dst_hw[1] / dst_hw[0]
    return abs(src / dst - 1.0) <= tolerance


def broadcast_batch(tensor: torch.Tensor, batch: int, name: str, batch_owner: str) -> torch.Tensor:
    """Expand a batch of 1 to ``batch`` items along dim 0; a batch of ``batch`` passes; anything else is an error."""
    n = int(tensor.shape[0])
    if n == batch:
        return tensor
    if n == 1:
        return tensor.expand(batch, *tensor.shape[1:])
    raise ValueError(
        f"{name} has a batch of {n} but {batch_owner} has a batch of {batch}; pass a single {name} (it is then used "
        f"for every item) or exactly {batch}."
    )


def normalize_mask(
    mask: torch.Tensor | None, image_hw: tuple[int, int], batch: int, *, name: str = "edit_mask",
    image_name: str = "edit_image", device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Binary ``[batch, H, W]`` mask (0/1 in ``dtype``) for an image of ``image_hw``; None: edit everything."""
    ih, iw = int(image_hw[0]), int(image_hw[1])
    if mask is None:
        return torch.ones((batch, ih, iw), dtype=dtype, device=device)
    mask = validate.check_mask(mask, name)
    if device is not None:
        mask = mask.to(device)
    binary = broadcast_batch(mask > 0.5, batch, name, image_name)
    marked = binary.flatten(1).any(dim=1)  # [batch]
    mh, mw = int(binary.shape[-2]), int(binary.shape[-1])

    if not bool(marked.any()):
        if (mh, mw) != (ih, iw):
            logger.debug(
                "%s is an empty %s mask: treated as no mask (edit all of %s)", name, _wxh((mh, mw)), image_name
            )
        return torch.ones((batch, ih, iw), dtype=dtype, device=binary.device)

    if (mh, mw) != (ih, iw):
        if not aspect_matches((mh, mw), (ih, iw)):
            raise ValueError(
                f"{name} is {_wxh((mh, mw))} but {image_name} is {_wxh((ih, iw))}; their aspect ratios differ by more "
                f"than {ASPECT_TOLERANCE:.0%}, so the mask cannot be matched to the image. Pass the mask made for "
                f"this image (e.g. from the same LoadImage node) or resize it to {_wxh((ih, iw))}."
            )
        logger.info("%s is %s, rescaled (nearest) to %s's %s", name, _wxh((mh, mw)), image_name, _wxh((ih, iw)))
        binary = resize_nearest_exact(binary, (ih, iw))
        vanished = marked & ~binary.flatten(1).any(dim=1)
        if bool(vanished.any()):
            item = int(vanished.nonzero()[0, 0])
            raise ValueError(
                f"{name} item {item} marks so few pixels that none is left after rescaling it from "
                f"{_wxh((mh, mw))} to {image_name}'s {_wxh((ih, iw))}; pass a mask of size {_wxh((ih, iw))}."
            )

    # Empty items mean "edit everything" for that item.
    binary = binary | ~marked.view(batch, 1, 1)
    return binary.to(dtype)


def match_guidance(
    guidance: torch.Tensor, image_hw: tuple[int, int], name: str = "guidance", image_name: str = "edit_image"
) -> torch.Tensor:
    """Bring a guidance image ``[B, C, H', W']`` to ``image_hw`` (antialiased bilinear) if the aspect ratio matches.

    The official annotator path resizes its output to the edit image's size the same way.
    """
    gh, gw = int(guidance.shape[-2]), int(guidance.shape[-1])
    ih, iw = int(image_hw[0]), int(image_hw[1])
    if (gh, gw) == (ih, iw):
        return guidance
    if not aspect_matches((gh, gw), (ih, iw)):
        raise ValueError(
            f"{name} is {_wxh((gh, gw))} but {image_name} is {_wxh((ih, iw))}; their aspect ratios differ by more "
            f"than {ASPECT_TOLERANCE:.0%}. Pass a {name} of size {_wxh((ih, iw))}."
        )
    return resize_bilinear_aa(guidance, (ih, iw))
