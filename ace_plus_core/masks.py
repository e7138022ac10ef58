"""Mask and batch rules of the ACE++ canvas.

Masks follow ComfyUI's MASK convention: float ``[B, H, W]`` (``[H, W]`` is read as a batch of one); a value above
0.5 marks a pixel to edit.

* **Binary.** Masks are binarized (``> 0.5``; NaN counts as 0, with a logged warning) before anything else. Shapes
  and dtypes are checked by :func:`.validate.check_mask`.
* **Empty = edit everything.** A mask with no marked pixel means "no mask" (the whole edit image is editable), the
  way the official code treats it. This matters because ComfyUI's ``LoadImage`` returns a 64x64 all-zero mask for
  images without alpha; an all-zero mask of any size is therefore accepted whatever the image size. The rule is
  applied per batch item.
* **Other sizes.** A (non-empty) mask whose size differs from the image's is rescaled (nearest-exact) when both
  aspect ratios agree within 1 %; otherwise it is a ``ValueError`` naming both sizes. The official code silently
  replaced such masks by all ones (edit everything); this module never does.
* **Batches.** Every edit image gets its own canvas. A reference, mask or guidance image with a batch of 1 is used
  for every item; any other batch size that differs from the edit image's is a ``ValueError``.
"""

from __future__ import annotations

import logging

import torch

from . import validate
from .resize import resize_bilinear_aa, resize_nearest_exact

__all__ = [
    "ASPECT_TOLERANCE",
    "aspect_matches",
    "batch_size_of",
    "broadcast_batch",
    "match_guidance",
    "normalize_mask",
]

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


def batch_size_of(tensor: torch.Tensor | None, spatial_dims: int) -> int | None:
    """Batch size of a ComfyUI tensor with ``spatial_dims`` trailing non-batch dims (None for None; 1 if unbatched)."""
    if tensor is None:
        return None
    return int(tensor.shape[0]) if tensor.ndim > spatial_dims else 1


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
    mask: torch.Tensor | None,
    image_hw: tuple[int, int],
    batch: int,
    *,
    name: str = "edit_mask",
    image_name: str = "edit_image",
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Binary ``[batch, H, W]`` mask (values 0/1 in ``dtype``) for an image of ``image_hw`` = (H, W).

    ``mask`` may be None (edit everything), ``[H', W']``, ``[B', H', W']`` or ``[B', 1, H', W']`` with ``B'`` 1 or
    ``batch``. See the module docstring for the rules. ``device`` defaults to the mask's device.
    """
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
