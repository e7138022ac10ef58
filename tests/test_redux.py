"""The Redux branch on the synthetic SigLIP and FLUX.1-Redux files (runner/tiny_models.py): the test-only loaders
(tests/comfy_test_nodes) feed ComfyUI's real CLIPVisionEncode and StyleModelApply, and the conditioning they give
equals a float64 recomputation written from the published models' definitions (SigLIP so400m-patch14-384's
vision tower, FLUX.1-Redux's projector) and StyleModelApply's documented "multiply" rule, not from ComfyUI's code.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from graphs import Graph
from PIL import Image
from safetensors.torch import load_file
from tolerances import assert_catches, network_bound

import tiny_models as factory

pytestmark = pytest.mark.numeric
TEXT_TOKENS = 8
STRENGTH = 0.7
# Facts of the published SigLIP (so400m, patch 14, 384 px) the reference needs besides the file: its head width
# (1152 / 16 heads), its pixel normalisation (mean 0.5, std 0.5) and its tanh-approximated GELU.
SIGLIP_HEAD_WIDTH = 72
# ComfyUI's CLIP layers use torch's LayerNorm default (the published model says 1e-6; the difference is far below
# what this test could tell apart from rounding, and the reference follows what runs).
LAYER_NORM_EPS = 1e-5


def _siglip_last_hidden_state(sd: dict[str, torch.Tensor], pixels: torch.Tensor) -> torch.Tensor:
    """SigLIP's vision tower in float64: patch embedding (biased, stride = patch), position embedding, pre-norm
    transformer layers, final LayerNorm. ``pixels``: [1, 3, H, W], already normalised."""
    sd = {k: v.double() for k, v in sd.items()}

    def ln(x, name):
        return torch.nn.functional.layer_norm(x, x.shape[-1:], sd[f"{name}.weight"], sd[f"{name}.bias"], LAYER_NORM_EPS)

    def lin(x, name):
        return x @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]

    weight = sd["vision_model.embeddings.patch_embedding.weight"]
    patch = weight.shape[-1]
    x = torch.nn.functional.conv2d(pixels, weight, sd["vision_model.embeddings.patch_embedding.bias"], stride=patch)
    x = x.flatten(2).transpose(1, 2) + sd["vision_model.embeddings.position_embedding.weight"]
    heads = x.shape[-1] // SIGLIP_HEAD_WIDTH
    i = 0
    while f"vision_model.encoder.layers.{i}.layer_norm1.weight" in sd:
        p = f"vision_model.encoder.layers.{i}"
        h = ln(x, f"{p}.layer_norm1")
        q, k, v = (lin(h, f"{p}.self_attn.{n}_proj").unflatten(-1, (heads, -1)).transpose(1, 2) for n in "qkv")
        attn = torch.softmax(q @ k.transpose(-1, -2) / SIGLIP_HEAD_WIDTH**0.5, dim=-1) @ v
        x = x + lin(attn.transpose(1, 2).flatten(2), f"{p}.self_attn.out_proj")
        h = torch.nn.functional.gelu(lin(ln(x, f"{p}.layer_norm2"), f"{p}.mlp.fc1"), approximate="tanh")
        x = x + lin(h, f"{p}.mlp.fc2")
        i += 1
    return ln(x, "vision_model.post_layernorm")


def _redux_tokens(sd: dict[str, torch.Tensor], hidden: torch.Tensor) -> torch.Tensor:
    """FLUX.1-Redux in float64: redux_down(silu(redux_up(SigLIP's last hidden state)))."""
    sd = {k: v.double() for k, v in sd.items()}
    up = torch.nn.functional.silu(hidden @ sd["redux_up.weight"].T + sd["redux_up.bias"])
    return up @ sd["redux_down.weight"].T + sd["redux_down.bias"]


@pytest.fixture
def reference_image(comfy_host) -> str:
    """A 384 x 384 picture (SigLIP's own size: no resize, so the reference needs only the normalisation)."""
    size = factory.TINY_SIGLIP.image_size
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    rgb = np.stack([xx, yy, 0.5 + 0.4 * np.sin(9 * xx * yy)], -1) + rng.normal(0, 0.1, (size, size, 3))
    Image.fromarray((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8), "RGB").save(comfy_host.input_dir / "redux.png")
    return "redux.png"


def test_redux_tokens_follow_the_text_and_equal_the_float64_reference(comfy_host, tiny_models, reference_image):
    g = Graph()
    image = g.add("LoadImage", image=reference_image)
    vision = g.add("ACEPlusTestOnlyCLIPVisionLoader", clip_name="tiny_siglip_vision.safetensors")
    encoded = g.add("CLIPVisionEncode", clip_vision=vision[0], image=image[0], crop="center")
    style = g.add("ACEPlusTestOnlyStyleModelLoader", style_model_name="tiny_flux_redux.safetensors")
    text = g.add("ACEPlusTestOnlyT5StandIn", text="a portrait", context_dim=factory.TINY.context_in_dim,
                 pooled_dim=factory.TINY.vec_in_dim, tokens=TEXT_TOKENS)
    styled = g.add("StyleModelApply", conditioning=text[0], style_model=style[0], clip_vision_output=encoded[0],
                   strength=STRENGTH, strength_type="multiply")
    g.add("ACEPlusTestOnlyProbe", label="redux_text", conditioning=text[0])
    g.add("ACEPlusTestOnlyProbe", label="redux_styled", conditioning=styled[0])
    comfy_host.run(g.prompt())
    recorded = comfy_host.node_class_mappings["ACEPlusTestOnlyProbe"].RECORDED
    [[txt, txt_extra]] = recorded["redux_text"]
    [[cond, extra]] = recorded["redux_styled"]

    tokens = factory.TINY_SIGLIP.num_positions  # 729, as the published SigLIP gives
    assert cond.shape == (1, TEXT_TOKENS + tokens, factory.TINY.context_in_dim)
    assert torch.equal(cond[:, :TEXT_TOKENS], txt), "the text tokens come first, unchanged"
    assert torch.equal(extra["pooled_output"], txt_extra["pooled_output"]) and "attention_mask" not in extra

    siglip = load_file(str(tiny_models["tiny_siglip_vision"]))
    redux = load_file(str(tiny_models["tiny_flux_redux"]))
    with Image.open(comfy_host.input_dir / reference_image) as im:
        pixels = torch.from_numpy(np.asarray(im.convert("RGB"), np.float64) / 255).permute(2, 0, 1)[None]
    expected = STRENGTH * _redux_tokens(redux, _siglip_last_hidden_state(siglip, (pixels - 0.5) / 0.5))

    # ComfyUI computes in float32 (its CPU text-encoder dtype fp16 holds the SigLIP file's fp16 weights exactly,
    # manual_cast runs them in the input's float32); the bound adds every layer of both networks, the attention's
    # sum over the tokens and the LayerNorms' over the width.
    vision_model = comfy_host.node_class_mappings["ACEPlusTestOnlyCLIPVisionLoader"]().load_clip(
        "tiny_siglip_vision.safetensors")[0].model
    style_model = comfy_host.node_class_mappings["ACEPlusTestOnlyStyleModelLoader"]().load_style_model(
        "tiny_flux_redux.safetensors")[0].model
    width, layers = factory.TINY_SIGLIP.hidden_size, factory.TINY_SIGLIP.num_layers
    tol = assert_catches(network_bound(vision_model, extra_fan_ins=(tokens,) * layers + (width,) * (2 * layers + 1))
                         + network_bound(style_model))
    err = (cond[0, TEXT_TOKENS:].double() - expected[0]).abs().max().item() / expected.abs().max().item()
    assert err <= tol, f"Redux tokens off by {err:.2e} (relative to their largest), bound {tol:.2e}"
