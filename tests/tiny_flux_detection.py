"""TEST-ONLY patch of ComfyUI's Flux model detection, so truly tiny Flux widths load through UNETLoader.

ComfyUI detects Flux with hard-coded ``num_heads=24`` (0.33: ``hidden / 128``) and ``axes_dim=[16, 56, 56]`` (head
dim 128); releases before the FLUX.2 update (0.3.52, 0.3.64) also hard-code ``hidden_size=3072`` and
``context_in_dim=4096``, where 0.3.75 reads them from ``img_in`` / ``txt_in``. The tiny test models (runner/tiny_models.py ``TINY``: hidden 64,
head dim 32, CLIP-L-wide text) fit none of these. This patch wraps ``detect_unet_config`` and, for Flux state
dicts, reads ``hidden_size`` from ``img_in.weight``'s rows and ``context_in_dim`` from ``txt_in.weight``'s columns
(what 0.3.75 does itself); when the qk-norm scale is not 128 long it derives ``num_heads = hidden / head_dim`` and
scales ``axes_dim`` the way FLUX's is (1/8, 7/16, 7/16 of the head dim). Full-width models (hidden 3072, head dim
128, txt_in 4096) pass through unchanged, and tests that need unpatched detection use the ``FULL_DETECTABLE``
models.

It replaces one module attribute for the test process only; the pack itself never patches ComfyUI.
"""

from __future__ import annotations

_MARK = "_ace_plus_tiny_flux_detection"
_ORIGINAL = None


def original_detect_unet_config():
    """ComfyUI's own, unpatched detection function (for tests that must not see the patch)."""
    import comfy.model_detection as md

    return _ORIGINAL or md.detect_unet_config


def install() -> None:
    import comfy.model_detection as md

    global _ORIGINAL
    original = md.detect_unet_config
    if getattr(original, _MARK, False):
        return
    _ORIGINAL = original

    def detect_unet_config(state_dict, key_prefix, metadata=None):
        config = original(state_dict, key_prefix, metadata=metadata)
        # The qk-norm scale is named ".scale" in ComfyUI's layout; 0.33's diffusers conversion names it ".weight".
        norm = f"{key_prefix}double_blocks.0.img_attn.norm.key_norm."
        key = next((norm + s for s in ("scale", "weight") if norm + s in state_dict), None)
        if config and config.get("image_model") == "flux" and key is not None:
            img_in, txt_in = f"{key_prefix}img_in.weight", f"{key_prefix}txt_in.weight"
            if img_in in state_dict:
                config["hidden_size"] = int(state_dict[img_in].shape[0])
            if txt_in in state_dict:
                config["context_in_dim"] = int(state_dict[txt_in].shape[1])
            head_dim = int(state_dict[key].shape[0])
            if head_dim != 128:
                config["num_heads"] = config["hidden_size"] // head_dim
                config["axes_dim"] = [head_dim // 8, 7 * head_dim // 16, 7 * head_dim // 16]
        return config

    setattr(detect_unet_config, _MARK, True)
    md.detect_unet_config = detect_unet_config
