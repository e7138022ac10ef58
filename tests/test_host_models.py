"""Issue 4 through ComfyUI's real executor: ACE++ FFT loading (fp8, dtypes, no global registry), the prepare and
LoRA nodes, bad files, and the FFT model input layout against an independent float64 construction."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from comfy_host import GraphError
from graphs import Graph, sampler
from PIL import Image
from tolerances import assert_catches, sum_bound

W, H = 96, 80  # non-square: a height/width swap shows
HOLE = (13, 19, 37, 43)  # top, left, h, w: edges off the 8-pixel grid, so the 8x8 mask fold is tested
SEED = 11
FFT = "tiny_ace_plus_fft.safetensors"
FFT_FP8 = "tiny_ace_plus_fft_fp8.safetensors"
FILL = "tiny_flux_fill.safetensors"


@pytest.fixture
def flux_calls(comfy_host, monkeypatch):
    """Records every call of the Flux transformer's forward_orig: the patchified model input (after ComfyUI's
    concat), the timestep, the img_in weight's storage dtype and the output."""
    import comfy.ldm.flux.model as flux_model

    calls: list[dict] = []
    original = flux_model.Flux.forward_orig

    def recording(self, img, img_ids, txt, txt_ids, timesteps, *args, **kwargs):
        out = original(self, img, img_ids, txt, txt_ids, timesteps, *args, **kwargs)
        calls.append(
            {
                "img": img.detach().clone(),
                "timesteps": timesteps.detach().clone(),
                "weight_dtype": self.img_in.weight.dtype,
                "out": out.detach().float().clone(),
            }
        )
        return out

    monkeypatch.setattr(flux_model.Flux, "forward_orig", recording)
    comfy_host.executor.reset()  # no cached loader outputs from earlier tests: every graph here really loads
    yield calls
    comfy_host.executor.reset()  # and none left for later tests (some were made with monkeypatched dtypes)


@pytest.fixture
def flux_models(comfy_host):
    """The pack's nodes/flux_models.py as ComfyUI's loader imported it."""
    import sys

    return sys.modules[comfy_host.node_class_mappings["ACEPlusLoader"].__module__.rsplit(".", 1)[0] + ".flux_models"]


@pytest.fixture
def fft_images(input_image):
    return input_image("models_uc.png", W, H, HOLE, seed=3), input_image("models_c.png", W, H, None, seed=4)


def _text(g: Graph):
    # Tiny models take CLIP-L widths (768); the TEST-ONLY stand-in is deterministic and loads no file.
    text = g.add("ACEPlusTestOnlyT5StandIn", text="a cat", context_dim=768, pooled_dim=768, tokens=8)
    return g.add("FluxGuidance", conditioning=text[0], guidance=30.0)


def _fft_graph(images, model_node: tuple[str, dict], *, lora=None, noise_mask=False, label="fft", patch=False):
    g = Graph()
    model = g.add(model_node[0], **model_node[1])
    if patch:
        model = g.add("ACEPlusModelPatch", model=model[0])
    if lora is not None:
        model = g.add(lora[0], model=model[0], **lora[1])
    text = _text(g)
    vae = g.add("VAELoader", vae_name="tiny_taef1.safetensors")
    uc = g.add("LoadImage", image=images[0])
    c = g.add("LoadImage", image=images[1])
    cond = g.add("ACEPlusConditioning", positive=text[0], negative=text[0], vae=vae[0], ucpixels=uc[0],
                 cpixels=c[0], mask=uc[1], noise_mask=noise_mask)
    samples = sampler(g, model[0], cond[0], cond[1], cond[2], steps=1, seed=SEED)
    g.add("ACEPlusTestOnlyProbe", label=label, latent=samples[0])
    return g.prompt()


def _fill_graph(image, *, lora=None, strength=1.0, label="fill", patch=False, weight_dtype="default", unet=FILL,
                core_lora=False):
    """UNETLoader(Fill) [-> ACE++ Prepare Flux Model] [-> ACE++ LoRA Loader] -> ACE++ LoRA Conditioning -> one
    sampler step -> VAE Decode -> probe (the decoded image)."""
    g = Graph()
    model = g.add("UNETLoader", unet_name=unet, weight_dtype=weight_dtype)
    if patch:
        model = g.add("ACEPlusModelPatch", model=model[0])
    if lora is not None:
        loader = "LoraLoaderModelOnly" if core_lora else "ACEPlusLoraLoader"
        model = g.add(loader, model=model[0], lora_name=lora, strength_model=strength)
    text = _text(g)
    vae = g.add("VAELoader", vae_name="tiny_taef1.safetensors")
    pixels = g.add("LoadImage", image=image)
    cond = g.add("ACEPlusLoraConditioning", positive=text[0], negative=text[0], vae=vae[0], pixels=pixels[0],
                 mask=pixels[1], noise_mask=False)
    samples = sampler(g, model[0], cond[0], cond[1], cond[2], steps=1, seed=SEED)
    decoded = g.add("VAEDecode", samples=samples[0], vae=vae[0])
    g.add("ACEPlusTestOnlyProbe", label=label, image=decoded[0])
    return g.prompt()


@pytest.fixture
def fill_image(input_image):
    return input_image("models_fill.png", W, H, HOLE, seed=5)


@pytest.fixture
def probed(comfy_host):
    """The images the probe recorded, by label."""
    return comfy_host.node_class_mappings["ACEPlusTestOnlyProbe"].RECORDED


def _loader(unet: str, weight_dtype: str = "default"):
    return ("ACEPlusLoader", {"unet_name": unet, "weight_dtype": weight_dtype})


def _unet_loader(unet: str, weight_dtype: str = "default"):
    return ("UNETLoader", {"unet_name": unet, "weight_dtype": weight_dtype})


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


# --- loading the FFT model ---------------------------------------------------------------------------------


def test_fft_every_weight_dtype_runs_and_fp8_stays_close(comfy_host, tiny_models, fft_images, flux_calls):
    """Default and fp8 files with every weight_dtype: finite output, fp8 stored as fp8, computed in fp32 here
    (CPU: no bf16), ComfyUI's global model list untouched, and fp8 output close to the full-precision one."""
    import comfy.supported_models

    models_list = comfy.supported_models.models
    before = list(models_list)
    runs = {}
    for unet in (FFT, FFT_FP8):
        for dtype in ("default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"):
            flux_calls.clear()
            comfy_host.run(_fft_graph(fft_images, _loader(unet, dtype)))
            (call,) = flux_calls  # one step, cfg 1: one model call
            assert call["img"].shape == (1, (H // 16) * (W // 16), 448)
            assert call["img"].dtype == torch.float32, (unet, dtype)  # compute dtype, never fp16
            assert torch.isfinite(call["out"]).all()
            runs[unet, dtype] = call
    assert comfy.supported_models.models is models_list and comfy.supported_models.models == before

    # Storage: fp8 choices store fp8; the fp8 file with "default" stays fp8 (ComfyUI alone would expand it to fp32
    # on the CPU); the fp32 file with "default" stays fp32.
    assert runs[FFT, "default"]["weight_dtype"] == torch.float32
    assert runs[FFT_FP8, "default"]["weight_dtype"] == torch.float8_e4m3fn
    for unet in (FFT, FFT_FP8):
        assert runs[unet, "fp8_e4m3fn"]["weight_dtype"] == torch.float8_e4m3fn
        assert runs[unet, "fp8_e4m3fn_fast"]["weight_dtype"] == torch.float8_e4m3fn
        assert runs[unet, "fp8_e5m2"]["weight_dtype"] == torch.float8_e5m2

    # Same model input for every run (same seed and conditioning), so outputs compare directly.
    reference = runs[FFT, "default"]
    errors = {}
    for key, call in runs.items():
        assert torch.equal(call["img"], reference["img"])
        errors[key] = _rel(call["out"], reference["out"])
    # Measured (tiny random weights): e4m3 ~0.04-0.05, e5m2 ~0.09-0.10 relative L2 error of the model output.
    for key, err in errors.items():
        bound = 0.2 if key[1] == "fp8_e5m2" else 0.1
        assert err < bound, f"{key}: relative error {err:.3f}; all: {errors}"
    assert errors[FFT_FP8, "default"] == pytest.approx(errors[FFT_FP8, "fp8_e4m3fn"], abs=1e-6)
    assert errors[FFT_FP8, "default"] > 1e-3  # fp8 really was used


def test_loading_twice_leaves_the_model_list_alone(comfy_host, tiny_models):
    import comfy.supported_models

    loader = comfy_host.node_class_mappings["ACEPlusLoader"]
    models_list = comfy.supported_models.models
    before = list(models_list)
    a = loader.execute(FFT, "default").result[0]
    b = loader.execute(FFT, "default").result[0]
    assert comfy.supported_models.models is models_list and comfy.supported_models.models == before
    assert a.model is not b.model
    for m in (a, b):
        assert m.model_options["ace_plus_layout"] == "fft"
        assert m.model.model_config.unet_config["in_channels"] == 112
        assert m.get_model_object("manual_cast_dtype") is None and m.model_dtype() == torch.float32  # CPU: fp32
    # ComfyUI's generic Flux class (which allows fp16) is used as is: the compute rule lives on the patcher.
    assert type(a.model.model_config) is comfy.supported_models.Flux
    assert torch.float16 in comfy.supported_models.Flux.supported_inference_dtypes


def test_fft_loader_ends_in_comfyuis_loader_and_can_be_recreated_and_compiled(comfy_host, tiny_models,
                                                                           monkeypatch):
    """ACE++ FFT Loader loads through ``comfy.sd.load_diffusion_model``, so the model carries what the running
    ComfyUI records to re-create it (``cached_patcher_init`` since 0.33: dynamic VRAM, hooks, multi-GPU and
    TorchCompileModel rebuild the model from it). Re-creating it the way those do gives the same weights and the
    ACE++ layout, and TorchCompileModel's patch is accepted (compiling itself needs a GPU run: bench/)."""
    import comfy.model_patcher
    import comfy.patcher_extension
    import comfy.sd

    calls = []
    original = comfy.sd.load_diffusion_model

    def recording(path, *args, **kwargs):
        calls.append((path, args, kwargs))
        return original(path, *args, **kwargs)

    monkeypatch.setattr(comfy.sd, "load_diffusion_model", recording)
    path = str(tiny_models["tiny_ace_plus_fft"])
    patcher = comfy_host.node_class_mappings["ACEPlusLoader"].execute(FFT, "fp8_e4m3fn").result[0]
    assert calls == [(path, (), {"model_options": {"dtype": torch.float8_e4m3fn}})]
    if hasattr(comfy.model_patcher.ModelPatcher, "deepclone_multigpu"):  # 0.33: models can be re-created
        factory, args = patcher.cached_patcher_init[:2]
        assert args == (path, {"dtype": torch.float8_e4m3fn})
        again = patcher.clone(force_deepcopy=True)  # what clone(disable_dynamic=True) does to a dynamic model
        assert len(calls) == 2 and again.model is not patcher.model
        assert again.model_options["ace_plus_layout"] == "fft"
        for key in ("diffusion_model.img_in.weight", "diffusion_model.double_blocks.0.img_attn.qkv.weight"):
            a, b = (comfy.utils.get_attr(p.model, key) for p in (patcher, again))
            assert a.dtype == b.dtype == torch.float8_e4m3fn and torch.equal(a.float(), b.float())
    compile_node = comfy_host.node_class_mappings["TorchCompileModel"]
    compiled = (compile_node.execute(patcher, "inductor").result[0] if hasattr(compile_node, "execute")
                else compile_node().patch(patcher, "inductor")[0])
    assert compiled is not patcher and compiled.model_options["ace_plus_layout"] == "fft"
    assert compiled.wrappers.get(comfy.patcher_extension.WrappersMP.APPLY_MODEL)


@pytest.fixture
def prefer_fp16(monkeypatch):
    """Pretend the device prefers fp16 and lacks bf16 (a Turing GPU), and that --fp16-unet is set."""
    import comfy.model_management as mm

    monkeypatch.setattr(mm, "should_use_fp16", lambda *a, **k: True)
    monkeypatch.setattr(mm, "should_use_bf16", lambda *a, **k: False)
    monkeypatch.setattr(mm, "unet_dtype", lambda *a, **k: torch.float16)


def test_fft_never_computes_in_fp16(comfy_host, tiny_models, fft_images, flux_calls, prefer_fp16):
    for dtype in ("default", "fp8_e4m3fn"):
        flux_calls.clear()
        comfy_host.run(_fft_graph(fft_images, _loader(FFT, dtype)))
        (call,) = flux_calls
        expected_storage = torch.float16 if dtype == "default" else torch.float8_e4m3fn
        assert call["weight_dtype"] == expected_storage  # storage as ComfyUI (here: a forced fp16) chose
        assert call["img"].dtype == torch.float32  # compute: bf16 unsupported -> fp32, never fp16
        assert torch.isfinite(call["out"]).all()


# --- ACE++ Prepare Flux Model ----------------------------------------------------------------------------


def test_prepare_fixes_fp16_compute_of_a_plain_unet_loader(comfy_host, tiny_models, fft_images, flux_calls,
                                                           prefer_fp16):
    """UNETLoader picks ComfyUI's generic Flux class for 448 (fp16 allowed): the patch node makes the clone
    compute in fp32 (no bf16 here) with the fp16 weights unchanged."""
    comfy_host.run(_fft_graph(fft_images, _unet_loader(FFT), label="plain"))
    comfy_host.run(_fft_graph(fft_images, _unet_loader(FFT), patch=True, label="patched"))
    plain, patched = flux_calls
    assert plain["weight_dtype"] == patched["weight_dtype"] == torch.float16
    assert plain["img"].dtype == torch.float16  # the defect: generic Flux computes in fp16
    assert patched["img"].dtype == torch.float32
    assert torch.isfinite(patched["out"]).all()


def test_prepare_clones_and_records_the_layout(comfy_host, tiny_models, prefer_fp16):
    import comfy.sd

    patch = comfy_host.node_class_mappings["ACEPlusModelPatch"]
    for path, layout in ((tiny_models["tiny_ace_plus_fft"], "fft"), (tiny_models["tiny_flux_fill"], "lora")):
        original = comfy.sd.load_diffusion_model(str(path))
        original_options = dict(original.model_options)
        clone = patch.execute(original).result[0]
        assert clone is not original and clone.model is original.model
        assert clone.model_options["ace_plus_layout"] == layout
        assert original.model_options == original_options and "manual_cast_dtype" not in original.object_patches
        # Forced fp16 weights compute in fp16 even for ComfyUI's FluxInpaint: fp32 compute on the clone only.
        assert original.model.manual_cast_dtype is None and original.model_dtype() == torch.float16
        assert clone.object_patches["manual_cast_dtype"] == torch.float32 and clone.force_cast_weights
        assert not original.force_cast_weights


def test_prepare_leaves_bf16_or_fp32_compute_alone(comfy_host, tiny_models):
    import comfy.sd

    patch = comfy_host.node_class_mappings["ACEPlusModelPatch"]
    original = comfy.sd.load_diffusion_model(str(tiny_models["tiny_flux_fill"]))
    clone = patch.execute(original).result[0]
    assert original.model_dtype() == torch.float32 and "manual_cast_dtype" not in clone.object_patches
    assert clone.model_options["ace_plus_layout"] == "lora"


def test_prepare_refuses_dev_and_non_flux(comfy_host, tiny_models, fft_images):
    import comfy.model_patcher

    with pytest.raises(GraphError, match=r"model: this is FLUX.1-dev \(img_in takes 64 features"):
        comfy_host.run(_fft_graph(fft_images, _unet_loader("tiny_flux_dev.safetensors"), patch=True))
    patch = comfy_host.node_class_mappings["ACEPlusModelPatch"]
    not_flux = comfy.model_patcher.ModelPatcher(torch.nn.Linear(2, 2), torch.device("cpu"), torch.device("cpu"))
    with pytest.raises(ValueError, match=r"model: not a Flux model \(Linear\); ACE\+\+ needs FLUX.1-Fill-dev"):
        patch.execute(not_flux)


# --- a device with bf16 (the branch the CPU never takes) -------------------------------------------------


@pytest.fixture
def bf16_device(monkeypatch):
    """Pretend the device computes in bf16, as an Ampere GPU does (ComfyUI asks should_use_bf16; on the CPU it
    always answers no)."""
    import comfy.model_management as mm

    monkeypatch.setattr(mm, "should_use_bf16", lambda *a, **k: True)
    return mm


def test_bf16_device_fft_loader_computes_in_bf16(comfy_host, tiny_models, fft_images, flux_calls, bf16_device):
    """bf16 compute for every choice; the fp8 choices store fp8; "default" stores the fp32 file in bf16 (ComfyUI's
    pick for a bf16 device) and keeps the fp8 file fp8 (ComfyUI alone would expand it to bf16: twice the memory)."""
    expected_storage = {"default": torch.bfloat16, "fp8_e4m3fn": torch.float8_e4m3fn,
                        "fp8_e4m3fn_fast": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}
    reference = None
    for unet in (FFT, FFT_FP8):
        for dtype, storage in expected_storage.items():
            storage = torch.float8_e4m3fn if (unet, dtype) == (FFT_FP8, "default") else storage
            flux_calls.clear()
            comfy_host.run(_fft_graph(fft_images, _loader(unet, dtype)))
            (call,) = flux_calls
            assert call["img"].dtype == torch.bfloat16, (unet, dtype)
            assert call["weight_dtype"] == storage, (unet, dtype)
            assert torch.isfinite(call["out"]).all()
            reference = call["out"] if reference is None else reference
            assert _rel(call["out"], reference) < 0.2, (unet, dtype)  # bf16/fp8 rounding, not another model


def test_bf16_device_with_fp8_matmul(comfy_host, tiny_models, bf16_device, monkeypatch):
    """A device with fp8 matmul too (Ada, Hopper): the fp8 file stays fp8 under "default", and fp8_e4m3fn_fast,
    only it, sets the model's fp8 optimization, so ComfyUI builds fp8 matmul ops."""
    import comfy.ops

    monkeypatch.setattr(bf16_device, "supports_fp8_compute", lambda *a, **k: True)
    loader = comfy_host.node_class_mappings["ACEPlusLoader"]
    for unet, dtype in ((FFT_FP8, "default"), (FFT, "fp8_e4m3fn"), (FFT, "fp8_e4m3fn_fast"), (FFT_FP8,
                                                                                               "fp8_e4m3fn_fast")):
        patcher = loader.execute(unet, dtype).result[0]
        img_in = patcher.get_model_object("diffusion_model.img_in")
        fast = dtype == "fp8_e4m3fn_fast"
        assert img_in.weight.dtype == torch.float8_e4m3fn, (unet, dtype)
        assert patcher.model.model_config.optimizations.get("fp8", False) is fast, (unet, dtype)
        assert isinstance(img_in, comfy.ops.fp8_ops.Linear) is fast, (unet, dtype, type(img_in))
        assert patcher.model.manual_cast_dtype == torch.bfloat16, (unet, dtype)


@pytest.fixture
def fp16_device_with_bf16(bf16_device, monkeypatch):
    """A device that prefers fp16 but has bf16, with --fp16-unet: ComfyUI stores and computes Flux in fp16."""
    monkeypatch.setattr(bf16_device, "should_use_fp16", lambda *a, **k: True)
    monkeypatch.setattr(bf16_device, "unet_dtype", lambda *a, **k: torch.float16)


def test_bf16_device_prepare_and_loader_replace_fp16_compute_by_bf16(comfy_host, tiny_models, fft_images,
                                                                     fill_image, flux_calls, fp16_device_with_bf16):
    """Plain UNETLoader computes Fill and FFT in fp16 here; ACE++ Prepare Flux Model and ACE++ FFT Loader make
    them compute in bf16 (not fp32: the device has bf16), the fp16 weights unchanged."""
    comfy_host.run(_fft_graph(fft_images, _unet_loader(FFT), label="plain_fft"))
    comfy_host.run(_fft_graph(fft_images, _unet_loader(FFT), patch=True, label="patched_fft"))
    comfy_host.run(_fft_graph(fft_images, _loader(FFT), label="loader_fft"))
    comfy_host.run(_fill_graph(fill_image, label="plain_fill"))
    comfy_host.run(_fill_graph(fill_image, patch=True, label="patched_fill"))
    calls = dict(zip(("plain_fft", "patched_fft", "loader_fft", "plain_fill", "patched_fill"), flux_calls,
                     strict=True))
    for name, call in calls.items():
        assert call["weight_dtype"] == torch.float16, name
        expected = torch.float16 if name.startswith("plain") else torch.bfloat16
        assert call["img"].dtype == expected, name
        assert torch.isfinite(call["out"]).all(), name


# --- bad files in ACEPlusLoader --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_files(comfy_host, tiny_models, tmp_path_factory):
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("bad_diffusion_models")
    fft = tiny_models["tiny_ace_plus_fft"].read_bytes()
    (d / "bad_truncated.safetensors").write_bytes(fft[: len(fft) // 2])
    (d / "bad_garbage.safetensors").write_bytes(len(b"<html>404").to_bytes(8, "little") + b"<html>404" + b"\0" * 32)
    (d / "bad_pickle.ckpt").write_bytes(b"\x80\x04")
    sdxl = {k: torch.zeros(4, 4) for k in ("input_blocks.0.0.weight", "middle_block.1.norm.weight",
                                            "label_emb.0.0.weight", "out.2.weight")}
    save_file(sdxl, str(d / "bad_sdxl.safetensors"))
    # A 448-wide img_in and nothing else: the header check passes, ComfyUI's detection does not.
    save_file({"img_in.weight": torch.zeros(64, 448), "img_in.bias": torch.zeros(64)},
              str(d / "bad_incomplete.safetensors"))
    comfy_host.add_model_dir("diffusion_models", d)
    return d


@pytest.mark.parametrize(
    "unet, message",
    [
        ("bad_truncated.safetensors", r"unet_name: bad_truncated.safetensors is truncated: tensor .* download or copy"),
        ("bad_garbage.safetensors", r"unet_name: bad_garbage.safetensors has a header that is not JSON"),
        ("bad_pickle.ckpt", r"unet_name: bad_pickle.ckpt is a pickle file .*pickle files can run code; convert to "
                            r"\.safetensors"),
        ("bad_sdxl.safetensors", r"unet_name: bad_sdxl.safetensors is not a Flux diffusion model.*SDXL UNet"),
        ("bad_incomplete.safetensors", r"unet_name: ComfyUI could not load bad_incomplete.safetensors as a Flux model "
                                       r"although its img_in is 448 wide; the file may be incomplete: download .*"
                                       r"ComfyUI says: .*Could not detect model type"),
        (FILL, r"unet_name: tiny_flux_fill.safetensors is not the ACE\+\+ FFT model: this is FLUX.1-Fill; load it "
               r"with UNETLoader and an ACE\+\+ LoRA .*then use ACE\+\+ Conditioning\."),
        ("tiny_flux_dev.safetensors", r"unet_name: tiny_flux_dev.safetensors is FLUX.1-dev \(img_in takes 64"),
    ],
)
def test_bad_files_are_named(comfy_host, tiny_models, bad_files, fft_images, unet, message):
    with pytest.raises(GraphError, match=message) as e:
        comfy_host.run(_fft_graph(fft_images, _loader(unet)))
    assert e.value.details["node_type"] == "ACEPlusLoader" and e.value.details["exception_type"].endswith(
        "ValueError"
    )


# --- LoRAs -------------------------------------------------------------------------------------------------


def test_core_lora_loader_works_on_the_fft_model(comfy_host, tiny_models, fft_images, flux_calls):
    comfy_host.run(_fft_graph(fft_images, _loader(FFT), label="base"))
    lora = ("LoraLoaderModelOnly", {"lora_name": "tiny_fft_lora_peft.safetensors", "strength_model": 1.0})
    result = comfy_host.run(_fft_graph(fft_images, _loader(FFT), lora=lora, label="core_lora"))
    assert not [m for m in result.logs if "lora key not loaded" in m or "ERROR lora" in m]
    ours = ("ACEPlusLoraLoader", {"lora_name": "tiny_fft_lora_peft.safetensors", "strength_model": 1.0})
    comfy_host.run(_fft_graph(fft_images, _loader(FFT), lora=ours, label="our_lora"))
    base, core, our = flux_calls
    assert _rel(core["out"], base["out"]) > 1e-2  # the LoRA changes the model
    assert torch.equal(core["out"], our["out"])  # and both loaders apply it identically


def test_lora_loader_on_fp8_fft(comfy_host, tiny_models, fft_images, flux_calls):
    ours = ("ACEPlusLoraLoader", {"lora_name": "tiny_fft_lora_peft.safetensors", "strength_model": 1.0})
    comfy_host.run(_fft_graph(fft_images, _loader(FFT_FP8), lora=ours))
    (call,) = flux_calls
    assert call["weight_dtype"] == torch.float8_e4m3fn and torch.isfinite(call["out"]).all()


@pytest.mark.parametrize(
    "model, lora, message",
    [
        (_unet_loader(FILL), "tiny_fft_lora_peft.safetensors",
         r"lora_name: tiny_fft_lora_peft.safetensors does not fit the model: its img_in adapter is 448 wide but the "
         r"model is FLUX.1-Fill .*FFT LoRA needs the ACE\+\+ FFT model"),
        (_loader(FFT), "tiny_fill_lora_kohya.safetensors",
         r"lora_name: tiny_fill_lora_kohya.safetensors does not fit the model: its img_in adapter is 384 wide but "
         r"the model is ACE\+\+ FFT .*needs the Fill model"),
        (_unet_loader(FILL), "unmatched_lora.safetensors",
         r"lora_name: unmatched_lora.safetensors patches nothing in the model \(FLUX.1-Fill.*kohya format \(a LoRA "
         r"for a Stable Diffusion / SDXL UNet\)"),
    ],
)
def test_lora_mismatch_is_an_error(comfy_host, tiny_models, fft_images, model, lora, message):
    ours = ("ACEPlusLoraLoader", {"lora_name": lora, "strength_model": 1.0})
    with pytest.raises(GraphError, match=message) as e:
        comfy_host.run(_fft_graph(fft_images, model, lora=ours))
    assert e.value.details["node_type"] == "ACEPlusLoraLoader"


def test_lora_with_other_shapes_is_an_error(comfy_host, tiny_models, tmp_path, flux_models):
    """A LoRA whose keys match but whose matrices were made for another width (here hidden 128, no img_in)."""
    import comfy.sd
    import tiny_models as factory

    wide = factory.FluxConfig(hidden_size=128, num_heads=4, in_channels=96)
    path = factory.write_safetensors(tmp_path / "wide.safetensors",
                                     factory.lora_state_dict(wide, targets=("double_blocks.*",)))
    model = comfy.sd.load_diffusion_model(str(tiny_models["tiny_flux_fill"]))
    with pytest.raises(ValueError, match=r"lora_name: wide.safetensors does not fit the model \(FLUX.1-Fill.*\): "
                                         r"\d+ weight\(s\) have other shapes, e.g. diffusion_model.double_blocks"):
        flux_models.apply_lora(model, str(path), 1.0, "lora_name")
    assert not model.patches  # the input model is never patched


@pytest.mark.numeric
def test_partly_matching_lora_warns_and_patches_what_matches(comfy_host, tiny_models, tmp_path, flux_models,
                                                             caplog):
    """One module names a weight of the model, one names none: a warning, and only the matching weight patched."""
    import logging

    import comfy.model_management as mm
    import comfy.sd
    from safetensors.torch import save_file

    model = comfy.sd.load_diffusion_model(str(tiny_models["tiny_flux_fill"]))
    out_features, in_features = model.model.state_dict()["diffusion_model.img_in.weight"].shape
    g = torch.Generator().manual_seed(0)
    sd = {"diffusion_model.img_in.lora_A.weight": torch.randn(2, in_features, generator=g),
          "diffusion_model.img_in.lora_B.weight": torch.randn(out_features, 2, generator=g),
          "diffusion_model.no_such_block.lora_A.weight": torch.randn(2, 8, generator=g),
          "diffusion_model.no_such_block.lora_B.weight": torch.randn(8, 2, generator=g)}
    save_file(sd, str(tmp_path / "partly.safetensors"))
    with caplog.at_level(logging.WARNING):
        patched = flux_models.apply_lora(model, str(tmp_path / "partly.safetensors"), 0.5, "lora_name")
    assert "ACE++ LoRA partly.safetensors: 1 of its 2 modules matched no weight of the model" in caplog.text
    assert set(patched.patches) == {"diffusion_model.img_in.weight"} and not model.patches
    base = model.model.state_dict()["diffusion_model.img_in.weight"].double().clone()
    mm.load_models_gpu([patched])
    try:  # the loaded weight is W + strength * B @ A, in float64 from the tensors written above
        weight = patched.get_model_object("diffusion_model.img_in").weight.double()
        up, down = sd["diffusion_model.img_in.lora_B.weight"].double(), sd["diffusion_model.img_in.lora_A.weight"].double()
        expected = base + 0.5 * up @ down
        # float32 rounds the rank products, their sum, the strength and the addition: terms up to |W| + |B| @ |A|
        tol = assert_catches(sum_bound(down.shape[0] + 2, magnitude=(base.abs() + 0.5 * up.abs() @ down.abs()).max().item()))
        assert (weight - expected).abs().max().item() < tol
    finally:
        mm.unload_all_models()


def test_lora_fit_on_comfyuis_own_quantized_weights(comfy_host, tiny_models, tmp_path, fill_image, probed,
                                                     flux_models):
    """A Fill file in ComfyUI's own per-layer fp8 format (``_quantization_metadata`` + ``weight_scale``: the
    blocks become ``comfy.quant_ops.QuantizedTensor`` where the release has it, plain fp8 before): the fit check
    reads the layers' logical shapes, the LoRA applies as LoraLoaderModelOnly applies it, and a LoRA for a wider
    model is refused with the logical shapes."""
    import importlib.util
    import json

    import comfy.sd
    import safetensors.torch
    import tiny_models as factory

    sd = safetensors.torch.load_file(str(tiny_models["tiny_flux_fill"]))
    layers = {}
    for key in [k for k, v in sd.items() if k.endswith(".weight") and v.ndim == 2 and "_blocks." in k]:
        scale = sd[key].abs().amax() / torch.finfo(torch.float8_e4m3fn).max
        sd[key] = (sd[key] / scale).to(torch.float8_e4m3fn)
        sd[key[: -len("weight")] + "weight_scale"] = scale.reshape(())
        layers[key[: -len(".weight")]] = {"format": "float8_e4m3fn"}
    metadata = {"_quantization_metadata": json.dumps({"format_version": "1.0", "layers": layers})}
    safetensors.torch.save_file(sd, str(tmp_path / "fill_comfy_quant.safetensors"), metadata=metadata)
    comfy_host.add_model_dir("diffusion_models", tmp_path)
    comfy_host.add_model_dir("loras", tmp_path)

    model = comfy.sd.load_diffusion_model(str(tmp_path / "fill_comfy_quant.safetensors"))
    qkv = model.get_model_object("diffusion_model.double_blocks.0.img_attn.qkv").weight
    quant_ops = importlib.util.find_spec("comfy.quant_ops") is not None  # 0.3.75 and later; 0.3.52 ignores it
    if quant_ops:
        assert type(qkv).__name__ == "QuantizedTensor", type(qkv)
    assert flux_models.logical_shape(model, "diffusion_model.double_blocks.0.img_attn.qkv.weight") == (192, 64)

    lora = "tiny_fill_lora_peft.safetensors"
    comfy_host.run(_fill_graph(fill_image, unet="fill_comfy_quant.safetensors", label="quant_base"))
    comfy_host.run(_fill_graph(fill_image, unet="fill_comfy_quant.safetensors", lora=lora, label="quant_ours"))
    comfy_host.run(_fill_graph(fill_image, unet="fill_comfy_quant.safetensors", lora=lora, core_lora=True,
                               label="quant_core"))
    assert torch.equal(probed["quant_ours"], probed["quant_core"])
    change = (probed["quant_ours"] - probed["quant_base"]).abs().mean()
    assert change > (1e-2 if quant_ops else 0)  # 0.3.52 reads the unscaled fp8 numbers: a saturated model

    wide = factory.FluxConfig(hidden_size=128, num_heads=4, in_channels=96)
    factory.write_safetensors(tmp_path / "wide_quant.safetensors", factory.lora_state_dict(wide,
                                                                                          targets=("double_blocks.*",)))
    with pytest.raises(GraphError, match=r"wide_quant.safetensors does not fit the model .*e.g. diffusion_model."
                                         r"double_blocks.0.[\w.]+ \(LoRA gives \d+x128, model has \d+x64\)"):
        comfy_host.run(_fill_graph(fill_image, unet="fill_comfy_quant.safetensors", lora="wide_quant.safetensors"))


def test_pickle_lora_is_refused(tmp_path, flux_models):
    path = tmp_path / "old.pt"
    path.write_bytes(b"\x80\x04")
    with pytest.raises(ValueError, match="lora_name: old.pt is a pickle file .*convert to .safetensors"):
        flux_models.apply_lora(None, str(path), 1.0, "lora_name")


# --- LoRA files in every storage dtype ---------------------------------------------------------------------

# The same LoRA numbers (runner/tiny_models.py) stored in five dtypes.
LORA_FILES = {"fp32": "tiny_fill_lora_peft.safetensors",
              **{name: f"tiny_fill_lora_peft_{name}.safetensors" for name in ("bf16", "fp16", "fp8_e4m3fn",
                                                                              "fp8_e5m2")}}
LORA_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16,
               "fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}


def test_lora_files_in_every_storage_dtype_change_the_image(comfy_host, tiny_models, fill_image, flux_calls,
                                                            probed):
    """Each file loads through ACE++ LoRA Loader and changes the sampled image by about what the fp32 file does
    (the difference between dtypes is their rounding, far smaller than the LoRA's effect)."""
    from safetensors import safe_open

    for name, lora in LORA_FILES.items():
        path = tiny_models[lora[: -len(".safetensors")]]
        with safe_open(str(path), "pt") as f:
            assert {f.get_tensor(k).dtype for k in f.keys()} == {LORA_DTYPES[name]}, name
    comfy_host.run(_fill_graph(fill_image, lora=LORA_FILES["fp32"], strength=0.0, label="strength_0"))
    for name, lora in LORA_FILES.items():
        comfy_host.run(_fill_graph(fill_image, lora=lora, label=name))
    base, full = probed["strength_0"].double(), probed["fp32"].double()
    effect = (full - base).abs().mean().item()
    assert effect > 1e-2, f"the fp32 LoRA hardly changes the image: mean |change| {effect:.2e}"
    # name -> (mean |change| from strength 0, mean |difference| from the fp32 file's image)
    stats = {name: ((probed[name].double() - base).abs().mean().item(), (probed[name].double() - full).abs().mean()
                    .item()) for name in LORA_FILES}
    for name, (change, off) in stats.items():
        assert change > 0.5 * effect and off < 0.15 * effect, f"{name}: {stats}"


@pytest.mark.parametrize("dtype, bad", [
    (torch.bfloat16, math.nan),
    (torch.float8_e4m3fn, math.nan),
    (torch.float8_e5m2, math.nan),
    (torch.float8_e5m2, math.inf),
])
def test_lora_with_nan_is_refused_in_every_dtype(comfy_host, tiny_models, tmp_path, dtype, bad):
    import comfy.sd
    import tiny_models as factory

    sd = factory.lora_state_dict(factory.TINY, fmt="peft", seed=1, dtype=dtype)
    key = "diffusion_model.double_blocks.0.img_attn.qkv.lora_B.weight"
    sd[key] = sd[key].float()
    sd[key][3, 1] = bad
    sd[key] = sd[key].to(dtype)
    name = f"nan_{str(dtype).split('.')[1]}_{bad}.safetensors"
    factory.write_safetensors(tmp_path / name, sd)
    comfy_host.add_model_dir("loras", tmp_path)
    model = comfy.sd.load_diffusion_model(str(tiny_models["tiny_flux_fill"]))
    with pytest.raises(ValueError, match=rf"lora_name: {name} is corrupt: 1 tensor\(s\) hold NaN or infinite "
                                         rf"values \(e.g. '{key}'\)"):
        comfy_host.node_class_mappings["ACEPlusLoraLoader"].execute(model, name, 1.0)
    assert not model.patches


# --- layout parity -----------------------------------------------------------------------------------------


@pytest.mark.numeric
def test_fft_model_input_matches_an_independent_float64_construction(comfy_host, tiny_models, fft_images,
                                                                      flux_calls, monkeypatch):
    """The tokens img_in receives = 2x2 patches of [noise | latent(UC) | latent(C) | mask folded 8x8], built here
    in float64 from the same VAE latents (recorded as ComfyUI encodes them) and the mask of the PNG."""
    import comfy.sd

    latents: list[torch.Tensor] = []
    encode = comfy.sd.VAE.encode

    def recording_encode(self, pixels):
        out = encode(self, pixels)
        latents.append(out.detach().clone())
        return out

    monkeypatch.setattr(comfy.sd.VAE, "encode", recording_encode)
    comfy_host.run(_fft_graph(fft_images, _loader(FFT), noise_mask=False))
    (call,) = flux_calls
    uc_latent, c_latent = (t.double() for t in latents)  # ACEPlusConditioning encodes UC, then C
    b, ch, h, w = uc_latent.shape
    assert (b, ch, h, w) == (1, 16, H // 8, W // 8)

    def process_in(z):  # FLUX latent format: (z - shift) * scale
        return (z - 0.1159) * 0.3611

    alpha = np.asarray(Image.open(comfy_host.input_dir / fft_images[0]))[..., 3].astype(np.float64) / 255.0
    mask = torch.from_numpy(1.0 - alpha)  # LoadImage: MASK = 1 - alpha
    folded = torch.empty(1, 64, h, w, dtype=torch.float64)
    for dy in range(8):
        for dx in range(8):
            folded[0, dy * 8 + dx] = mask[dy::8, dx::8]

    sigma = float(call["timesteps"][0])
    gen = torch.Generator().manual_seed(SEED)
    noise = torch.randn((b, ch, h, w), generator=gen, dtype=torch.float32).double()
    noisy = sigma * noise + (1.0 - sigma) * process_in(uc_latent)
    x = torch.cat([noisy, process_in(uc_latent), process_in(c_latent), folded], dim=1)
    assert x.shape[1] == 112

    tokens = torch.empty(b, h // 2, w // 2, 112, 2, 2, dtype=torch.float64)
    for py in range(2):
        for px in range(2):
            tokens[..., py, px] = x[:, :, py::2, px::2].permute(0, 2, 3, 1)
    reference = tokens.reshape(b, (h // 2) * (w // 2), 112 * 4)

    got = call["img"].double()
    assert got.shape == reference.shape
    err = (got - reference).abs().max().item()
    # float32 in ComfyUI: latent_in (2 operations), noising (3), copies; magnitude: the largest value
    tol = assert_catches(sum_bound(5, magnitude=reference.abs().max().item()))
    assert err < tol, f"max abs error {err:.3e} (tolerance {tol:.1e})"
    # The parts really differ (a swapped UC/C or a misplaced mask would not pass by accident).
    assert (process_in(uc_latent) - process_in(c_latent)).abs().max() > 0.05 and folded.std() > 0.1
    assert (folded.amax(1) - folded.amin(1)).max() == 1  # some 8x8 blocks are partly masked
