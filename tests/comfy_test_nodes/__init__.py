"""TEST-ONLY ComfyUI nodes, linked into custom_nodes/ by the test harness beside the pack. Never shipped.

``ACEPlusTestOnlyT5StandIn`` stands in for the one component that cannot be made small: FLUX's T5-XXL text
encoder (DualCLIPLoader type flux always builds full-size CLIP-L + T5-XXL, about 9.5 GB). It emits a
CONDITIONING with the shape DualCLIPLoader + CLIPTextEncode produce for Flux ([1, tokens, context_dim] plus a
pooled_output [1, pooled_dim]), deterministic per prompt, so graphs can feed a model whose txt_in/vector_in
widths are not CLIP-L's. Graphs whose model takes CLIP-L widths use the real CLIPLoader + CLIPTextEncode.
"""

import hashlib

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
    """TEST ONLY: an output node that records the IMAGE/MASK/LATENT (or INT) it receives, for assertions in the
    test."""

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
                         "value": ("INT", {"forceInput": True})},
        }

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")  # always run: the test reads what this run produced

    def probe(self, label, image=None, mask=None, latent=None, value=None):
        if value is not None:
            self.RECORDED[label] = value
            return {"ui": {"probe": [{"value": value}]}}
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


NODE_CLASS_MAPPINGS = {
    "ACEPlusTestOnlyT5StandIn": ACEPlusTestOnlyT5StandIn,
    "ACEPlusTestOnlyProbe": ACEPlusTestOnlyProbe,
}
