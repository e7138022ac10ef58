"""Quantized model files (issue 19): GGUF copies of the synthetic Flux models through the unchanged ComfyUI-GGUF
(``UnetLoaderGGUF``, linked in as a user installs it) into the pack's nodes, ACE++ LoRAs on them, and bad GGUF
files. The files are written with the ``gguf`` package (tests/gguf_files.py) in two types: Q8_0 with every 2-D
weight quantized (img_in included, as in the file of the report) and Q4_0 with the input/output layers kept in
BF16 (ComfyUI-GGUF's own rule for Flux)."""

from __future__ import annotations

from pathlib import Path

import gguf_files
import pytest
import torch
from comfy_host import GraphError
from graphs import Graph, sampler

W, H = 96, 80
HOLE = (13, 19, 37, 43)
SEED = 11
# file suffix -> (quantization of the 2-D weights, names kept in BF16)
QUANTS = {"q8_0": ("Q8_0", ()), "q4_0": ("Q4_0", gguf_files.FLUX_KEEP)}


@pytest.fixture(scope="module")
def gguf_models(comfy_host, tiny_models, tmp_path_factory) -> dict[str, str]:
    """GGUF copies of the tiny Fill (384), FFT (448) and dev (64) models in a folder of ComfyUI's
    diffusion_models; name -> file name."""
    import safetensors.torch

    if gguf_files.missing():
        pytest.skip(gguf_files.missing())
    folder = tmp_path_factory.mktemp("gguf_models")
    names = {}
    for model in ("tiny_flux_fill", "tiny_ace_plus_fft", "tiny_flux_dev"):
        sd = safetensors.torch.load_file(str(tiny_models[model]))
        for suffix, (qtype, keep) in QUANTS.items():
            name = f"{model}_{suffix}.gguf"
            gguf_files.write_flux_gguf(sd, folder / name, qtype, keep)
            names[f"{model}_{suffix}"] = name
            # The same numbers as plain fp32 safetensors, dequantized by gguf's numpy code (the reference).
            reference = {k: v.float() for k, v in gguf_files.dequantized(sd, qtype, keep).items()}
            safetensors.torch.save_file(reference, str(folder / f"{model}_{suffix}_reference.safetensors"))
    comfy_host.add_model_dir("diffusion_models", folder)
    return names


@pytest.fixture
def flux_models(comfy_host):
    """The pack's nodes/flux_models.py as ComfyUI's loader imported it."""
    import sys

    return sys.modules[comfy_host.node_class_mappings["ACEPlusLoader"].__module__.rsplit(".", 1)[0] + ".flux_models"]


@pytest.fixture
def probed(comfy_host):
    """What the probes recorded, by label; no cached loader outputs from earlier graphs."""
    comfy_host.executor.reset()
    yield comfy_host.node_class_mappings["ACEPlusTestOnlyProbe"].RECORDED
    comfy_host.executor.reset()


def _text(g: Graph):
    text = g.add("ACEPlusTestOnlyT5StandIn", text="a cat", context_dim=768, pooled_dim=768, tokens=8)
    return g.add("FluxGuidance", conditioning=text[0], guidance=30.0)


def _graph(model_node, images, *, lora=None, core_lora=False, label="out", prepare=True):
    """model loader [-> ACE++ Prepare Flux Model] [-> a LoRA loader] -> ACE++ (LoRA) Conditioning -> KSampler ->
    VAE Decode; probes record the sampled latent (``label``) and the image (``label + "_image"``). ``images``: one
    (Fill layout) or two (FFT layout) LoadImage names."""
    g = Graph()
    model = g.add(model_node[0], **model_node[1])
    if prepare:
        model = g.add("ACEPlusModelPatch", model=model[0])
    if lora is not None:
        loader = "LoraLoaderModelOnly" if core_lora else "ACEPlusLoraLoader"
        model = g.add(loader, model=model[0], lora_name=lora, strength_model=1.0)
    text = _text(g)
    vae = g.add("VAELoader", vae_name="tiny_taef1.safetensors")
    if len(images) == 2:
        uc, c = g.add("LoadImage", image=images[0]), g.add("LoadImage", image=images[1])
        cond = g.add("ACEPlusConditioning", positive=text[0], negative=text[0], vae=vae[0], ucpixels=uc[0],
                     cpixels=c[0], mask=uc[1], noise_mask=False)
    else:
        pixels = g.add("LoadImage", image=images[0])
        cond = g.add("ACEPlusLoraConditioning", positive=text[0], negative=text[0], vae=vae[0], pixels=pixels[0],
                     mask=pixels[1], noise_mask=False)
    samples = sampler(g, model[0], cond[0], cond[1], cond[2], steps=1, seed=SEED)
    decoded = g.add("VAEDecode", samples=samples[0], vae=vae[0])
    g.add("ACEPlusTestOnlyProbe", label=label, latent=samples[0])
    g.add("ACEPlusTestOnlyProbe", label=label + "_image", image=decoded[0])
    return g.prompt()


def _gguf(name: str):
    return ("UnetLoaderGGUF", {"unet_name": name})


def _unet(name: str):
    return ("UNETLoader", {"unet_name": name, "weight_dtype": "default"})


@pytest.fixture
def fill_images(input_image):
    return (input_image("gguf_fill.png", W, H, HOLE, seed=5),)


@pytest.fixture
def fft_images(input_image):
    return input_image("gguf_uc.png", W, H, HOLE, seed=3), input_image("gguf_c.png", W, H, None, seed=4)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


# ComfyUI-GGUF multiplies the block scale by the quantized integers in float16 (its dequant dtype when none is set),
# a relative rounding of up to u = 2**-11 per weight; over the ~10 linear layers between noise and latent that
# gives a few u at most (measured: 0.6 u for Q8_0). The fp32 reference path itself is exact to ~1e-6.
TOLERANCE = 4 * 2.0**-11


@pytest.mark.parametrize("suffix", QUANTS)
@pytest.mark.parametrize("model, layout", [("tiny_flux_fill", "fill"), ("tiny_ace_plus_fft", "fft")])
def test_gguf_models_run_through_the_pack(comfy_host, gguf_models, fill_images, fft_images, probed, model, layout,
                                          suffix):
    """UnetLoaderGGUF -> ACE++ Prepare Flux Model -> ACE++ (LoRA) Conditioning -> KSampler -> VAE Decode samples
    what an fp32 model holding gguf's own (numpy) dequantization of the file's weights samples."""
    images = fill_images if layout == "fill" else fft_images
    comfy_host.run(_graph(_unet(f"{model}_{suffix}_reference.safetensors"), images, label="reference"))
    comfy_host.run(_graph(_gguf(gguf_models[f"{model}_{suffix}"]), images, label="gguf"))
    assert probed["gguf_image"].shape == (1, H, W, 3) and torch.isfinite(probed["gguf_image"]).all()
    assert _rel(probed["gguf"], probed["reference"]) < TOLERANCE
    # The weights really are stored quantized.
    patcher = comfy_host.node_class_mappings["UnetLoaderGGUF"]().load_unet(gguf_models[f"{model}_{suffix}"])[0]
    qkv = patcher.get_model_object("diffusion_model.double_blocks.0.img_attn.qkv").weight
    assert qkv.tensor_type.name == QUANTS[suffix][0] and qkv.dtype == torch.uint8


@pytest.mark.parametrize("suffix", QUANTS)
def test_prepare_reads_the_logical_width_of_gguf_models(comfy_host, gguf_models, fft_images, flux_models, suffix):
    """img_in is stored as Q8_0 blocks (408 bytes a row for 384 features) or BF16 (768 bytes): ACE++ Prepare Flux
    Model and the fit check read the width the layer computes with, and refuse FLUX.1-dev by name."""
    loader = comfy_host.node_class_mappings["UnetLoaderGGUF"]()
    patch = comfy_host.node_class_mappings["ACEPlusModelPatch"]
    storage = {"q8_0": (64, 384 // 32 * 34), "q4_0": (64, 384 * 2)}[suffix]
    fill = loader.load_unet(gguf_models[f"tiny_flux_fill_{suffix}"])[0]
    assert tuple(fill.get_model_object("diffusion_model.img_in").weight.data.shape) == storage
    assert flux_models.logical_shape(fill, "diffusion_model.img_in.weight") == (64, 384)
    assert flux_models.logical_shape(fill, "diffusion_model.double_blocks.0.img_attn.qkv.weight") == (192, 64)
    assert flux_models.logical_shape(fill, "diffusion_model.double_blocks.0.img_attn.qkv.bias") == (192,)
    assert flux_models.logical_shape(fill, "diffusion_model.no_such_block.weight") is None
    for model, layout in (("tiny_flux_fill", "lora"), ("tiny_ace_plus_fft", "fft")):
        patcher = loader.load_unet(gguf_models[f"{model}_{suffix}"])[0]
        assert patch.execute(patcher).result[0].model_options["ace_plus_layout"] == layout
    with pytest.raises(GraphError, match=r"model: this is FLUX.1-dev \(img_in takes 64 features"):
        comfy_host.run(_graph(_gguf(gguf_models[f"tiny_flux_dev_{suffix}"]), fft_images))


FILL_LORA = "tiny_fill_lora_peft.safetensors"


@pytest.mark.parametrize("suffix", QUANTS)
def test_ace_lora_on_a_gguf_fill_model(comfy_host, gguf_models, fill_images, probed, suffix):
    """A fitting LoRA is applied (the latent moves by about what the LoRA does to the fp32 reference model), the
    same as ComfyUI's LoraLoaderModelOnly applies it, and the result matches the LoRA on the reference model."""
    gguf, reference = _gguf(gguf_models[f"tiny_flux_fill_{suffix}"]), _unet(f"tiny_flux_fill_{suffix}_reference"
                                                                              ".safetensors")
    comfy_host.run(_graph(gguf, fill_images, label="base"))
    comfy_host.run(_graph(gguf, fill_images, lora=FILL_LORA, label="ours"))
    comfy_host.run(_graph(gguf, fill_images, lora=FILL_LORA, core_lora=True, label="core"))
    comfy_host.run(_graph(reference, fill_images, label="reference_base"))
    comfy_host.run(_graph(reference, fill_images, lora=FILL_LORA, core_lora=True, label="reference_lora"))
    assert torch.equal(probed["ours"], probed["core"])
    assert _rel(probed["ours"], probed["reference_lora"]) < TOLERANCE
    # The LoRA's weight changes are as large as the weights (its factors are drawn so; tiny_models.lora_state_dict):
    # it moves the latent far beyond the rounding the tolerance allows (measured: 0.1 relative, 100 x TOLERANCE).
    effect = _rel(probed["reference_lora"], probed["reference_base"])
    assert effect > 25 * TOLERANCE
    assert abs(_rel(probed["ours"], probed["base"]) - effect) < 2 * TOLERANCE


@pytest.mark.parametrize("suffix", QUANTS)
def test_misfit_loras_on_a_gguf_model_are_refused_by_logical_shape(comfy_host, gguf_models, fill_images, probed,
                                                                   tmp_path, suffix):
    """An FFT LoRA (448-wide img_in) and a LoRA for a wider model are refused by name, with the shapes the layers
    compute with (not the byte widths of the quantized storage)."""
    import tiny_models as factory

    gguf = _gguf(gguf_models[f"tiny_flux_fill_{suffix}"])
    with pytest.raises(GraphError, match=r"lora_name: tiny_fft_lora_peft.safetensors does not fit the model: its "
                                         r"img_in adapter is 448 wide but the model is FLUX.1-Fill") as e:
        comfy_host.run(_graph(gguf, fill_images, lora="tiny_fft_lora_peft.safetensors"))
    assert e.value.details["node_type"] == "ACEPlusLoraLoader"
    wide = factory.FluxConfig(hidden_size=128, num_heads=4, in_channels=96)
    factory.write_safetensors(tmp_path / f"wide_{suffix}.safetensors", factory.lora_state_dict(wide))
    comfy_host.add_model_dir("loras", tmp_path)
    with pytest.raises(GraphError, match=r"wide_\w+.safetensors does not fit the model \(FLUX.1-Fill.*\): \d+ weight\(s\) "
                                         r"have other shapes, e.g. diffusion_model.img_in.weight \(LoRA gives 128x384, "
                                         r"model has 64x384\)"):
        comfy_host.run(_graph(gguf, fill_images, lora=f"wide_{suffix}.safetensors"))


@pytest.fixture(scope="module")
def bad_gguf(comfy_host, gguf_models, tmp_path_factory) -> dict[str, str]:
    """A GGUF file holding an SDXL-UNet-like tensor set (architecture "sdxl"), and a Fill GGUF cut in half."""
    import gguf
    import numpy as np

    folder = tmp_path_factory.mktemp("bad_gguf")
    writer = gguf.GGUFWriter(path=None, arch="sdxl")
    for key, shape in (("input_blocks.0.0.weight", (320, 4, 3, 3)), ("label_emb.0.0.weight", (1280, 2816)),
                       ("middle_block.1.norm.weight", (1280,)), ("out.2.weight", (4, 320, 3, 3))):
        writer.add_tensor(key, np.zeros(shape, np.float32))
    writer.write_header_to_file(path=folder / "sdxl_like.gguf")
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    whole = Path(comfy_host.folder_paths.get_full_path("diffusion_models", gguf_models["tiny_flux_fill_q8_0"])).read_bytes()
    (folder / "truncated.gguf").write_bytes(whole[: len(whole) // 2])
    comfy_host.add_model_dir("diffusion_models", folder)
    return {"sdxl": "sdxl_like.gguf", "truncated": "truncated.gguf"}


@pytest.mark.parametrize("bad, message", [
    ("sdxl", r"Could not detect model type of: .*sdxl_like.gguf"),
    # gguf's reader finds less data than the header announces (ComfyUI-GGUF passes its error on unchanged).
    ("truncated", r"cannot reshape array of size \d+ into shape \(64,408\)"),
])
def test_bad_gguf_files_fail_in_the_gguf_loader(comfy_host, bad_gguf, fill_images, bad, message):
    """The loader that reads the file says what is wrong; no node of this pack runs on it (so none can crash on a
    shape mismatch)."""
    with pytest.raises(GraphError, match=message) as e:
        comfy_host.run(_graph(_gguf(bad_gguf[bad]), fill_images, lora=FILL_LORA))
    assert e.value.details["node_type"] == "UnetLoaderGGUF"
