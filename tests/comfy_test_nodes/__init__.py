"""TEST-ONLY ComfyUI nodes, linked into custom_nodes/ by the test harness beside the pack. Never shipped.

``ACEPlusTestOnlyT5StandIn`` stands in for the one component that cannot be made small: FLUX's T5-XXL text
encoder (DualCLIPLoader type flux always builds full-size CLIP-L + T5-XXL, about 9.5 GB). It emits a
CONDITIONING with the shape DualCLIPLoader + CLIPTextEncode produce for Flux ([1, tokens, context_dim] plus a
pooled_output [1, pooled_dim]), deterministic per prompt, so graphs can feed a model whose txt_in/vector_in
widths are not CLIP-L's. Graphs whose model takes CLIP-L widths use the real CLIPLoader + CLIPTextEncode.

``ACEPlusTestOnlyCLIPVisionLoader`` and ``ACEPlusTestOnlyStyleModelLoader`` stand in for CLIPVisionLoader and
StyleModelLoader, the Redux components that cannot be made small through ComfyUI's own loaders: CLIPVisionLoader
picks a fixed full-size config from key names (SigLIP so400m, ~430M parameters, ``comfy/clip_vision.py``
``load_clipvision_from_sd``; a narrow file is "invalid"), and StyleModelLoader builds ``ReduxImageEncoder()`` at its
fixed 1152 -> 12288 -> 4096 size (``comfy/sd.py`` ``load_style_model``), whose 4096-wide tokens the tiny FLUX's
768-wide ``txt_in`` cannot take. Only that size choice is replaced: they build ComfyUI's own classes
(``comfy.clip_vision.ClipVisionModel``, ``comfy.ldm.flux.redux.ReduxImageEncoder`` in ``comfy.sd.StyleModel``) at
the sizes the file's tensors have and load the file into them, so CLIPVisionEncode and StyleModelApply, ComfyUI's
real nodes, run on them unchanged.
"""

import hashlib
import json
import os
import tempfile

import torch


class ACEPlusTestOnlyT5StandIn:
    DESCRIPTION = "TEST ONLY: stands in for DualCLIPLoader(flux) + CLIPTextEncode with a deterministic random embedding."
    CATEGORY = "testing"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "text": ("STRING", {"multiline": True, "default": ""}),
                "context_dim": ("INT", {"default": 4096, "min": 1, "max": 8192}),
                "pooled_dim": ("INT", {"default": 768, "min": 1, "max": 8192}),
                "tokens": ("INT", {"default": 256, "min": 1, "max": 512}),
            }
        }

    def encode(self, text, context_dim, pooled_dim, tokens):
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        g = torch.Generator().manual_seed(seed)
        cond = torch.randn(1, tokens, context_dim, generator=g)
        pooled = torch.randn(1, pooled_dim, generator=g)
        return ([[cond, {"pooled_output": pooled}]],)


class ACEPlusTestOnlyProbe:
    """TEST ONLY: an output node that records the IMAGE/MASK/LATENT (or INT, or CONDITIONING) it receives, for
    assertions in the test."""

    DESCRIPTION = "TEST ONLY: records its input tensor or INT (by label) for the test that runs the graph."
    CATEGORY = "testing"
    RETURN_TYPES = ()
    FUNCTION = "probe"
    OUTPUT_NODE = True
    RECORDED: dict = {}

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"label": ("STRING", {"default": "probe"})},
            "optional": {"image": ("IMAGE",), "mask": ("MASK",), "latent": ("LATENT",),
                         "value": ("INT", {"forceInput": True}), "conditioning": ("CONDITIONING",)},
        }

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")  # always run: the test reads what this run produced

    def probe(self, label, image=None, mask=None, latent=None, value=None, conditioning=None):
        if value is not None:
            self.RECORDED[label] = value
            return {"ui": {"probe": [{"value": value}]}}
        if conditioning is not None:
            self.RECORDED[label] = [[c.detach().float().cpu().clone(), dict(extra)] for c, extra in conditioning]
            return {"ui": {"probe": [{"shape": list(c.shape)} for c, _ in conditioning]}}
        tensor = image if image is not None else mask if mask is not None else latent["samples"]
        t = tensor.detach().float().cpu().clone()
        self.RECORDED[label] = t
        stats = {
            "shape": list(t.shape),
            "finite": bool(torch.isfinite(t).all()),
            "min": float(t.nan_to_num().min()),
            "max": float(t.nan_to_num().max()),
        }
        return {"ui": {"probe": [stats]}}


_SIGLIP = "vision_model."


def _siglip_config(sd: dict, reference: dict) -> dict:
    """ComfyUI's SigLIP json config for a SigLIP vision state dict of any width: the sizes from the tensors'
    shapes, the rest (activation, pixel mean/std, model type) and the head width from ``reference`` (ComfyUI's own
    config of the published model, clip_vision_siglip_384.json: 16 heads of 72)."""
    patch = sd[f"{_SIGLIP}embeddings.patch_embedding.weight"]
    hidden, channels, patch_size = int(patch.shape[0]), int(patch.shape[1]), int(patch.shape[2])
    positions = int(sd[f"{_SIGLIP}embeddings.position_embedding.weight"].shape[0])
    side = round(positions**0.5)
    head_width = reference["hidden_size"] // reference["num_attention_heads"]
    if side * side != positions or hidden % head_width:
        raise ValueError(f"not a SigLIP vision tower this stand-in can size: {positions} positions (a square is "
                         f"needed), width {hidden} (a multiple of the head width {head_width} is needed)")
    layers = 0
    while f"{_SIGLIP}encoder.layers.{layers}.layer_norm1.weight" in sd:
        layers += 1
    # The published 384 px image gives 27 x 27 patches of 14 (the convolution drops the last 6 pixels): keep it.
    image_size = reference["image_size"] if reference["image_size"] // patch_size == side else side * patch_size
    return {**reference, "hidden_size": hidden, "num_channels": channels, "patch_size": patch_size,
            "image_size": image_size, "num_hidden_layers": layers,
            "num_attention_heads": hidden // head_width,
            "intermediate_size": int(sd[f"{_SIGLIP}encoder.layers.0.mlp.fc1.weight"].shape[0])}


class ACEPlusTestOnlyCLIPVisionLoader:
    """TEST ONLY: CLIPVisionLoader for SigLIP files of any width (ComfyUI's picks the full-size config by key names).

    Builds ComfyUI's own ``comfy.clip_vision.ClipVisionModel`` from a json config derived from the file's tensor
    shapes (written to a temp file, as ComfyUI's loader passes its json file) and calls its ``load_sd``."""

    DESCRIPTION = "TEST ONLY: loads a SigLIP vision file at the size its tensors have (CLIPVisionLoader's stand-in)."
    CATEGORY = "testing"
    RETURN_TYPES = ("CLIP_VISION",)
    FUNCTION = "load_clip"

    @classmethod
    def INPUT_TYPES(cls):
        import folder_paths

        return {"required": {"clip_name": (folder_paths.get_filename_list("clip_vision"),
                                           {"tooltip": "A SigLIP vision file in models/clip_vision."})}}

    def load_clip(self, clip_name):
        import comfy.clip_vision
        import comfy.utils
        import folder_paths

        sd = comfy.utils.load_torch_file(folder_paths.get_full_path_or_raise("clip_vision", clip_name), safe_load=True)
        if f"{_SIGLIP}embeddings.patch_embedding.weight" not in sd:
            raise ValueError(f"clip_name: {clip_name} is not a SigLIP vision tower (no {_SIGLIP}embeddings.*)")
        reference_path = os.path.join(os.path.dirname(comfy.clip_vision.__file__), "clip_vision_siglip_384.json")
        with open(reference_path) as f:
            config = _siglip_config(sd, json.load(f))
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(config, f)
        try:
            clip_vision = comfy.clip_vision.ClipVisionModel(f.name)
        finally:
            os.unlink(f.name)
        missing, _ = clip_vision.load_sd(sd)
        if missing:
            raise ValueError(f"clip_name: {clip_name} lacks {missing[:5]}")
        return (clip_vision,)


class ACEPlusTestOnlyStyleModelLoader:
    """TEST ONLY: StyleModelLoader for FLUX.1-Redux files of any width (ComfyUI's builds 1152 -> 12288 -> 4096).

    Builds ComfyUI's ``comfy.ldm.flux.redux.ReduxImageEncoder`` with ``redux_dim`` / ``txt_in_features`` read from
    the file's shapes, loads the file into it and wraps it in ComfyUI's ``comfy.sd.StyleModel``."""

    DESCRIPTION = "TEST ONLY: loads a FLUX.1-Redux file at the size its tensors have (StyleModelLoader's stand-in)."
    CATEGORY = "testing"
    RETURN_TYPES = ("STYLE_MODEL",)
    FUNCTION = "load_style_model"

    @classmethod
    def INPUT_TYPES(cls):
        import folder_paths

        return {"required": {"style_model_name": (folder_paths.get_filename_list("style_models"),
                                                  {"tooltip": "A FLUX.1-Redux file in models/style_models."})}}

    def load_style_model(self, style_model_name):
        import comfy.ldm.flux.redux
        import comfy.sd
        import comfy.utils
        import folder_paths

        path = folder_paths.get_full_path_or_raise("style_models", style_model_name)
        sd = comfy.utils.load_torch_file(path, safe_load=True)
        if "redux_up.weight" not in sd or "redux_down.weight" not in sd:
            raise ValueError(f"style_model_name: {style_model_name} is not a FLUX.1-Redux file (no redux_up/redux_down)")
        model = comfy.ldm.flux.redux.ReduxImageEncoder(redux_dim=int(sd["redux_up.weight"].shape[1]),
                                                       txt_in_features=int(sd["redux_down.weight"].shape[0]))
        model.load_state_dict(sd)
        return (comfy.sd.StyleModel(model),)


NODE_CLASS_MAPPINGS = {
    "ACEPlusTestOnlyT5StandIn": ACEPlusTestOnlyT5StandIn,
    "ACEPlusTestOnlyCLIPVisionLoader": ACEPlusTestOnlyCLIPVisionLoader,
    "ACEPlusTestOnlyStyleModelLoader": ACEPlusTestOnlyStyleModelLoader,
    "ACEPlusTestOnlyProbe": ACEPlusTestOnlyProbe,
}
