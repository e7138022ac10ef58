"""Where ComfyUI's public API differs between the releases this pack supports (0.3.48 .. 0.33), in one place.

Each helper calls ComfyUI's own function; it only adapts the call to the running release.
"""

from __future__ import annotations

import dataclasses
import inspect

import comfy.sd
from comfy_api.v0_0_2 import io


def load_lora_for_models(patcher, lora: dict, strength: float, metadata: dict | None):
    """``comfy.sd.load_lora_for_models`` on the model only. The LoRA file's safetensors metadata is attached to the
    patched model where the release records it (``lora_metadata``, 0.33); older ones take none."""
    if "lora_metadata" in inspect.signature(comfy.sd.load_lora_for_models).parameters:
        return comfy.sd.load_lora_for_models(patcher, None, lora, strength, 0, lora_metadata=metadata)[0]
    return comfy.sd.load_lora_for_models(patcher, None, lora, strength, 0)[0]


def schema_options(**options) -> dict:
    """The ``io.Schema`` options this release knows (``search_aliases`` in newer ones); the others are left out."""
    return {k: v for k, v in options.items() if k in {f.name for f in dataclasses.fields(io.Schema)}}


def input_options(**options) -> dict:
    """The widget options this release's inputs take (``advanced`` in newer ones); the others are left out."""
    return {k: v for k, v in options.items() if k in inspect.signature(io.Int.Input.__init__).parameters}
