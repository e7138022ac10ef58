"""Where ComfyUI's public API differs between the releases this pack supports (0.3.48 .. 0.3.75), in one place.

Each helper calls ComfyUI's own function; it only adapts the call to the running release.
"""

from __future__ import annotations

import dataclasses
import inspect

import comfy.sd
from comfy_api.v0_0_2 import io


def load_diffusion_model_state_dict(sd: dict, model_options: dict, metadata: dict | None):
    """``comfy.sd.load_diffusion_model_state_dict``. The file's safetensors metadata (read by newer releases,
    e.g. for layer-wise quantization) is passed where the release takes it; 0.3.48 .. 0.3.64 take none."""
    if "metadata" in inspect.signature(comfy.sd.load_diffusion_model_state_dict).parameters:
        return comfy.sd.load_diffusion_model_state_dict(sd, model_options=model_options, metadata=metadata)
    return comfy.sd.load_diffusion_model_state_dict(sd, model_options=model_options)


def schema_options(**options) -> dict:
    """The ``io.Schema`` options this release knows (``search_aliases`` in newer ones); the others are left out."""
    return {k: v for k, v in options.items() if k in {f.name for f in dataclasses.fields(io.Schema)}}


def input_options(**options) -> dict:
    """The widget options this release's inputs take (``advanced`` in newer ones); the others are left out."""
    return {k: v for k, v in options.items() if k in inspect.signature(io.Int.Input.__init__).parameters}
