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


def wxh(hw: tuple[int, int]) -> str:
    """(h, w) as ComfyUI shows sizes: width x height."""
    return f"{hw[1]}x{hw[0]}"


def check_aspect(src_hw: tuple[int, int], dst_hw: tuple[int, int], name: str, image_name: str, fix: str) -> None:
    """A ``ValueError`` naming both inputs (and ``fix``) unless the (h, w) sizes' aspect ratios agree within 1 %."""
    if abs((src_hw[1] / src_hw[0]) / (dst_hw[1] / dst_hw[0]) - 1.0) > ASPECT_TOLERANCE:
        raise ValueError(f"{name} is {wxh(src_hw)} but {image_name} is {wxh(dst_hw)}; their aspect ratios differ by "
                         f"more than {ASPECT_TOLERANCE:.0%}. {fix}")


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
                "%s is an empty %s mask: treated as no mask (edit all of %s)", name, wxh((mh, mw)), image_name
            )
        return torch.ones((batch, ih, iw), dtype=dtype, device=binary.device)

    if (mh, mw) != (ih, iw):
        check_aspect((mh, mw), (ih, iw), name, image_name, "Pass the mask made for this image (e.g. from the same "
                     f"LoadImage node) or resize it to {wxh((ih, iw))}.")
        logger.info("%s is %s, rescaled (nearest) to %s's %s", name, wxh((mh, mw)), image_name, wxh((ih, iw)))
        binary = resize_nearest_exact(binary, (ih, iw))
        vanished = marked & ~binary.flatten(1).any(dim=1)
        if bool(vanished.any()):
            item = int(vanished.nonzero()[0, 0])
            raise ValueError(
                f"{name} item {item} marks so few pixels that none is left after rescaling it from "
                f"{wxh((mh, mw))} to {image_name}'s {wxh((ih, iw))}; pass a mask of size {wxh((ih, iw))}."
            )

    # Empty items mean "edit everything" for that item.
    binary = binary | ~marked.view(batch, 1, 1)
    return binary.to(dtype)


def empty_mask_warning(mask: torch.Tensor | None, name: str = "edit_mask", image_name: str = "edit_image") -> str | None:
    """The warning for a connected mask that marks no pixel (in every item, or in some): those items are regenerated
    whole (the rule above). None when every item marks something or no mask is connected. ``mask``: one the canvas
    accepted (``[B, H, W]``, ``[H, W]`` or ``[B, 1, H, W]``)."""
    if mask is None:
        return None
    m = mask[:, 0] if mask.ndim == 4 else mask[None] if mask.ndim == 2 else mask
    empty = (~(m > 0.5).flatten(1).any(dim=1)).nonzero().flatten().tolist()
    if not empty:
        return None
    which = f"{name} marks no pixel" if len(empty) == m.shape[0] else f"{name} items {empty} mark no pixel"
    return (f"{which} (all black, or LoadImage's placeholder for an image without alpha): the whole {image_name} "
            f"will be regenerated. To edit a region, mark it white in the mask (right-click the image > Open in "
            f"MaskEditor, or load a mask image); to regenerate everything on purpose, disconnect {name}.")


def outpaint_mask(
    mask: torch.Tensor | None, image_hw: tuple[int, int], batch: int, outpaint: tuple[int, int, int, int], *,
    name: str = "edit_mask", new_area: float = 1.0, device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The mask ``[batch, H + top + bottom, W + left + right]`` of an image extended by ``outpaint`` (top, bottom,
    left, right): ``new_area`` over the new area; over the original the given mask, where an empty one (or item)
    marks nothing."""
    t, b, lf, r = outpaint
    h, w = int(image_hw[0]), int(image_hw[1])
    out = torch.full((batch, h + t + b, w + lf + r), new_area, dtype=dtype, device=device)
    inner = out[:, t : t + h, lf : lf + w]
    inner.zero_()
    if mask is not None:
        marked = broadcast_batch(validate.check_mask(mask, name) > 0.5, batch, name, "edit_image").flatten(1).any(1)
        if bool(marked.any()):  # built in place: a big photo's mask costs one float copy
            user = normalize_mask(mask, image_hw, batch, name=name, device=device, dtype=torch.bool)
            inner.copy_(user & marked.to(user.device).view(-1, 1, 1))
    return out


def match_guidance(guidance: torch.Tensor, image_hw: tuple[int, int], name: str = "control_image",
                   image_name: str = "edit_image") -> torch.Tensor:
    """A guidance image ``[B, C, H', W']`` brought to ``image_hw`` (antialiased bilinear, as the official annotator
    path does) when the aspect ratio matches."""
    gh, gw = int(guidance.shape[-2]), int(guidance.shape[-1])
    ih, iw = int(image_hw[0]), int(image_hw[1])
    if (gh, gw) == (ih, iw):
        return guidance
    check_aspect((gh, gw), (ih, iw), name, image_name, f"Pass a {name} of size {wxh((ih, iw))}.")
    return resize_bilinear_aa(guidance, (ih, iw))
