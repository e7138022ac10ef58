"""End-to-end graphs through ComfyUI's real executor with synthetic models (issue: foundation).

Tiny models (hidden 64) load through UNETLoader thanks to the TEST-ONLY detection patch installed by the
``comfy_host`` fixture (tests/tiny_flux_detection.py); the full-width test uses ComfyUI's unpatched detection.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from graphs import Graph, clip_l_text, sampler, tiny_loaders
from PIL import Image
from tolerances import assert_catches, sum_bound

W, H = 96, 80  # non-square, multiples of 8 (InpaintModelConditioning crops to 8)
HOLE = (16, 24, 40, 48)  # top, left, h, w of the masked area


@pytest.fixture
def probe(comfy_host):
    """What the TEST-ONLY probe node recorded, by label (the class as ComfyUI's loader imported it)."""
    recorded = comfy_host.node_class_mappings["ACEPlusTestOnlyProbe"].RECORDED
    return recorded.__getitem__


def _fill_graph(image: str, unet: str = "tiny_flux_fill.safetensors", lora: tuple[str, float] | None = None,
                label: str = "fill", prefix: str = "fill") -> dict:
    g = Graph()
    model = g.add("UNETLoader", unet_name=unet, weight_dtype="default")
    if lora is not None:
        model = g.add("LoraLoaderModelOnly", model=model[0], lora_name=lora[0], strength_model=lora[1])
    text = clip_l_text(g, "a red apple on a table")
    vae = g.add("VAELoader", vae_name="tiny_taef1.safetensors")
    img = g.add("LoadImage", image=image)
    cond = g.add("InpaintModelConditioning", positive=text[0], negative=text[0], vae=vae[0], pixels=img[0],
                 mask=img[1], noise_mask=True)
    samples = sampler(g, model[0], cond[0], cond[1], cond[2])
    decoded = g.add("VAEDecode", samples=samples[0], vae=vae[0])
    g.add("SaveImage", images=decoded[0], filename_prefix=prefix)
    g.add("ACEPlusTestOnlyProbe", label=label, image=decoded[0])
    return g.prompt()


def _saved_images(comfy_host, result) -> list[np.ndarray]:
    paths = result.image_paths(comfy_host.output_dir)
    assert paths, f"no image saved; outputs: {result.outputs}"
    return [np.asarray(Image.open(p)) for p in paths]


def test_flux_fill_graph_end_to_end(comfy_host, probe, tiny_models, input_image):
    name = input_image("fill_in.png", W, H, HOLE)
    result = comfy_host.run(_fill_graph(name))
    (saved,) = _saved_images(comfy_host, result)
    assert saved.shape == (H, W, 3)
    decoded = probe("fill")
    assert decoded.shape == (1, H, W, 3)
    assert torch.isfinite(decoded).all()
    assert decoded.std() > 1e-3, "decoded image is flat: the graph produced nothing"
    # noise_mask keeps the latent outside the hole: the decoded image there resembles the input.
    src = torch.from_numpy(np.asarray(Image.open(comfy_host.input_dir / name))[..., :3] / 255.0).float()
    outside = torch.ones(H, W, dtype=torch.bool)
    top, left, h, w = HOLE
    outside[max(top - 16, 0) : top + h + 16, max(left - 16, 0) : left + w + 16] = False
    assert (decoded[0][outside] - src[outside]).abs().mean() < 0.08


def test_fft_layout_graph_end_to_end(comfy_host, probe, tiny_models, input_image):
    """A 448-channel model fed UC latent | C latent | mask through the pack's drop-in ACEPlusConditioning."""
    uc = input_image("fft_uc.png", W, H, HOLE, seed=1)
    c = input_image("fft_c.png", W, H, None, seed=2)
    g = Graph()
    model, text, vae = tiny_loaders(g, "tiny_ace_plus_fft.safetensors", "a cat wearing a hat")
    uc_img = g.add("LoadImage", image=uc)
    c_img = g.add("LoadImage", image=c)
    cond = g.add("ACEPlusConditioning", positive=text[0], negative=text[0], vae=vae[0], ucpixels=uc_img[0],
                 cpixels=c_img[0], mask=uc_img[1], noise_mask=True)
    samples = sampler(g, model[0], cond[0], cond[1], cond[2])
    decoded = g.add("VAEDecode", samples=samples[0], vae=vae[0])
    g.add("SaveImage", images=decoded[0], filename_prefix="fft")
    g.add("ACEPlusTestOnlyProbe", label="fft", image=decoded[0])
    result = comfy_host.run(g.prompt())
    (saved,) = _saved_images(comfy_host, result)
    assert saved.shape == (H, W, 3)
    out = probe("fft")
    assert out.shape == (1, H, W, 3) and torch.isfinite(out).all() and out.std() > 1e-3


@pytest.mark.numeric
@pytest.mark.parametrize("strength", [1.0, 0.5, -0.75])
def test_ace_lora_loader_node_applies_the_lora_at_its_strength(comfy_host, tiny_models, strength):
    """ACE++ LoRA Loader as ComfyUI calls it: the img_in weight it loads is W + strength * B @ A, recomputed here in
    float64 from the two files."""
    import comfy.model_management as mm
    from safetensors.torch import load_file

    nodes = comfy_host.node_class_mappings
    model = nodes["UNETLoader"]().load_unet("tiny_flux_fill.safetensors", "default")[0]
    (patched,) = nodes["ACEPlusLoraLoader"].execute(model, "tiny_fill_lora_peft.safetensors", strength).result
    lora = load_file(str(tiny_models["tiny_fill_lora_peft"]))
    up, down = (lora[f"diffusion_model.img_in.lora_{x}.weight"].double() for x in "BA")
    base = load_file(str(tiny_models["tiny_flux_fill"]))["img_in.weight"].double()
    expected = base + strength * up @ down
    mm.load_models_gpu([patched])
    try:
        weight = patched.get_model_object("diffusion_model.img_in").weight.detach().double()
    finally:
        mm.unload_all_models()
    # float32 rounds the rank products, their sum, the strength and the addition: terms up to |W| + |s| |B| @ |A|
    magnitude = (base.abs() + abs(strength) * up.abs() @ down.abs()).max().item()
    tol = assert_catches(sum_bound(down.shape[0] + 2, magnitude=magnitude))
    assert (strength * up @ down).abs().max() > 0.05  # the LoRA's share is far above the tolerance
    assert (weight - expected).abs().max().item() < tol


@pytest.mark.parametrize("lora", ["tiny_fill_lora_peft.safetensors", "tiny_fill_lora_kohya.safetensors"])
def test_lora_changes_the_output(comfy_host, probe, tiny_models, input_image, lora):
    name = input_image("lora_in.png", W, H, HOLE)
    comfy_host.run(_fill_graph(name, label="base"))
    result = comfy_host.run(_fill_graph(name, lora=(lora, 1.0), label="lora"))
    base, patched = probe("base"), probe("lora")
    assert torch.isfinite(patched).all()
    diff = (patched - base).abs().mean().item()
    assert diff > 5e-3, f"LoRA {lora} changed the output by only {diff:.2e}"
    assert not [m for m in result.logs if "lora key not loaded" in m]


def test_unmatched_lora_is_detected(comfy_host, probe, tiny_models, input_image):
    """ComfyUI only logs LoRA keys that match nothing; the harness sees every one, and the output is unchanged."""
    from safetensors import safe_open

    name = input_image("lora_unmatched.png", W, H, HOLE)
    comfy_host.run(_fill_graph(name, label="base_u"))
    result = comfy_host.run(_fill_graph(name, lora=("unmatched_lora.safetensors", 1.0), label="unmatched"))
    not_loaded = {m.split("lora key not loaded: ")[1] for m in result.logs if "lora key not loaded" in m}
    with safe_open(str(tiny_models["unmatched_lora"]), "pt") as f:
        keys = set(f.keys())
    assert keys and not_loaded == keys
    assert torch.equal(probe("unmatched"), probe("base_u"))


def test_full_width_models_pass_unpatched_detection(comfy_host, probe, full_models):
    """hidden 3072 / 24 heads: ComfyUI's own detection picks FluxInpaint for 384 and the generic Flux for 448."""
    import comfy.model_detection
    import comfy.supported_models
    import tiny_flux_detection
    from safetensors import safe_open

    original = tiny_flux_detection.original_detect_unet_config()
    expected = {"full_flux_fill": (96, comfy.supported_models.FluxInpaint),
                "full_ace_plus_fft": (112, comfy.supported_models.Flux)}
    for stem, (in_channels, cls) in expected.items():
        with safe_open(str(full_models[stem]), "pt") as f:  # shapes only: the detection reads nothing else
            shapes = {k: torch.empty(f.get_slice(k).get_shape(), device="meta") for k in f.keys()}
        config = original(shapes, "")
        assert config["in_channels"] == in_channels and config["hidden_size"] == 3072
        assert config["num_heads"] == 24 and config["depth"] == 1 and config["depth_single_blocks"] == 0
        matches = [m for m in comfy.supported_models.models if m.matches(config, {})]
        assert matches and matches[0] is cls, f"{stem}: {matches}"


def test_full_width_fill_graph_with_t5_stand_in(comfy_host, probe, full_models, input_image):
    """One sampling step of the full-width Fill model; its text comes from the TEST-ONLY T5 stand-in node
    (txt_in 4096 / vector_in 32 wide, shaped like DualCLIPLoader(flux) output)."""
    name = input_image("full_in.png", 32, 32, (8, 8, 16, 16))
    g = Graph()
    model = g.add("UNETLoader", unet_name="full_flux_fill.safetensors", weight_dtype="default")
    text = g.add("ACEPlusTestOnlyT5StandIn", text="a dog", context_dim=4096, pooled_dim=32, tokens=16)
    guided = g.add("FluxGuidance", conditioning=text[0], guidance=30.0)
    vae = g.add("VAELoader", vae_name="tiny_taef1.safetensors")
    img = g.add("LoadImage", image=name)
    cond = g.add("InpaintModelConditioning", positive=guided[0], negative=guided[0], vae=vae[0], pixels=img[0],
                 mask=img[1], noise_mask=True)
    samples = sampler(g, model[0], cond[0], cond[1], cond[2], steps=1)
    decoded = g.add("VAEDecode", samples=samples[0], vae=vae[0])
    g.add("ACEPlusTestOnlyProbe", label="full", image=decoded[0])
    comfy_host.run(g.prompt())
    out = probe("full")
    assert out.shape == (1, 32, 32, 3) and torch.isfinite(out).all()
