"""Full-width model checks in a fresh process WITHOUT the test-only detection patch (run by
tests/test_host_models_full.py, one boot per run).

ComfyUI is booted through runner/comfy_host.py exactly as the headless runner does; the pack's model nodes load the
``FULL_DETECTABLE`` (hidden 3072) synthetic models through ComfyUI's own, unpatched detection. One model is held at a
time (unloaded and garbage-collected before the next). What it observes is written as JSON to the path given on the
command line; the test asserts on it::

    python tests/full_width_models_check.py OUT.json BASE_DIR TEST_MODELS_DIR DEMO_MODELS_DIR
"""

from __future__ import annotations

import gc
import json
import logging
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.append(str(REPO / "runner"))

LATENT_H, LATENT_W = 8, 12  # one small non-square latent: 4 x 6 tokens
FFT, FFT_FP8 = "full_ace_plus_fft.safetensors", "full_ace_plus_fft_fp8.safetensors"
# The FFT Loader's loads at full width: one per file and storage it gives, the fp8_optimizations flag on and off
# (every file x weight_dtype pair runs at tiny width in test_host_models.py; a full-width load takes seconds).
FULL_WIDTH_LOADS = ((FFT, "default"), (FFT, "fp8_e4m3fn_fast"), (FFT, "fp8_e5m2"), (FFT_FP8, "default"),
                    (FFT_FP8, "fp8_e5m2"))
CONCAT = {"fill": 16 + 64, "fft": 16 + 16 + 64}  # channels ComfyUI's Flux concatenates to the noise


class _Logs(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def main(out_path: str, base_dir: str, models_dir: str, demo_dir: str, selected: str) -> None:
    """``selected``: JSON {"loads": [[file, weight_dtype], ...], "lora": [name, ...]}, the cases to run (the test
    passes those of its selected tests: a full-width load takes seconds)."""
    import comfy_host

    selected = json.loads(selected)

    host = comfy_host.boot(Path(base_dir))
    for root in (Path(models_dir), Path(demo_dir)):
        for folder in ("diffusion_models", "loras"):
            host.add_model_dir(folder, root / folder)

    import comfy.ldm.flux.model as flux_model
    import comfy.model_detection as md
    import comfy.model_management as mm
    import tiny_models
    import torch
    from safetensors import safe_open

    text_dim = tiny_models.FULL_DETECTABLE.context_in_dim  # T5-XXL wide: what 0.3.52 assumes
    detect = md.detect_unet_config
    facts: dict = {
        "detection": {
            "module": detect.__module__,
            "file": detect.__code__.co_filename,
            "patch_imported": "tiny_flux_detection" in sys.modules,
        },
        "loads": {},
        "lora": {},
    }
    logs = _Logs()
    logging.getLogger().addHandler(logs)

    compute: list = []
    original_forward = flux_model.Flux.forward_orig

    def recording(self, img, *args, **kwargs):  # the patchified model input: its dtype is the compute dtype
        compute.append(img.dtype)
        return original_forward(self, img, *args, **kwargs)

    flux_model.Flux.forward_orig = recording

    nodes = host.node_class_mappings
    loader, patch, lora_loader = nodes["ACEPlusLoader"], nodes["ACEPlusModelPatch"], nodes["ACEPlusLoraLoader"]
    unet_loader = nodes["UNETLoader"]()

    def apply(patcher, layout: str, text_dim: int, pooled_dim: int) -> tuple[torch.Tensor, str]:
        """One apply_model call on a small latent (same inputs every time); (output, compute dtype)."""
        g = torch.Generator().manual_seed(0)
        x = torch.randn(1, 16, LATENT_H, LATENT_W, generator=g)
        concat = torch.randn(1, CONCAT[layout], LATENT_H, LATENT_W, generator=g)
        context = torch.randn(1, 8, text_dim, generator=g)
        pooled = torch.randn(1, pooled_dim, generator=g)
        mm.load_models_gpu([patcher])
        compute.clear()
        with torch.no_grad():
            out = patcher.model.apply_model(x, torch.tensor([0.7]), c_concat=concat, c_crossattn=context, y=pooled,
                                            guidance=torch.tensor([30.0]))
        (dtype,) = compute
        return out.double(), str(dtype)

    def describe(patcher) -> dict:
        img_in = patcher.get_model_object("diffusion_model.img_in")
        return {
            "class": type(patcher.model).__name__,
            "layout": patcher.model_options.get("ace_plus_layout"),
            "in_channels": patcher.model.model_config.unet_config["in_channels"],
            "img_in_features": int(img_in.weight.shape[1]),
            "storage": str(img_in.weight.dtype),
            "fp8_optimizations": bool(patcher.model.model_config.optimizations.get("fp8", False)),
        }

    def release() -> None:
        mm.unload_all_models()
        gc.collect()

    def load_fft(unet: str, weight_dtype: str) -> dict:
        patcher = loader.execute(unet, weight_dtype).result[0]
        fact = describe(patcher)
        out, fact["compute"] = apply(patcher, "fft", text_dim, 32)
        fact["finite"] = bool(torch.isfinite(out).all())
        return fact

    for unet, weight_dtype in selected["loads"]:
        facts["loads"][f"ACEPlusLoader {unet} {weight_dtype}"] = load_fft(unet, weight_dtype)
        release()

    def file_tensor(path: Path, key: str) -> torch.Tensor:
        with safe_open(str(path), "pt") as f:
            return f.get_tensor(key).double()

    def lora_check(unet: str, layout: str, lora: str, text_dim: int, pooled_dim: int) -> dict:
        """UNETLoader -> ACE++ Prepare Flux Model -> ACE++ LoRA Loader at strength 0 and 1."""
        base = unet_loader.load_unet(unet, "default")[0]
        prepared = patch.execute(base).result[0]
        fact = {"prepared": describe(prepared)}
        logs.messages.clear()
        out0, _ = apply(lora_loader.execute(prepared, lora, 0.0).result[0], layout, text_dim, pooled_dim)
        patched = lora_loader.execute(prepared, lora, 1.0).result[0]
        out1, fact["compute"] = apply(patched, layout, text_dim, pooled_dim)
        fact["relative_change"] = ((out1 - out0).norm() / out0.norm()).item()
        fact["finite"] = bool(torch.isfinite(out1).all())
        fact["lora_log"] = [m for m in logs.messages if "lora key not loaded" in m or "ERROR lora" in m]
        # The loaded img_in weight against W + B @ A, in float64 from the two files (storage here is fp32).
        lora_path = Path(host.folder_paths.get_full_path_or_raise("loras", lora))
        unet_path = Path(host.folder_paths.get_full_path_or_raise("diffusion_models", unet))
        weight = patched.get_model_object("diffusion_model.img_in").weight.detach().double()
        base_weight = file_tensor(unet_path, "img_in.weight")
        up = file_tensor(lora_path, "diffusion_model.img_in.lora_B.weight")
        down = file_tensor(lora_path, "diffusion_model.img_in.lora_A.weight")
        delta = up @ down
        fact["img_in_max_error"] = (weight - (base_weight + delta)).abs().max().item()
        fact["img_in_max_delta"] = delta.abs().max().item()
        # What the float32 W + B @ A rounds: rank products and the sum, terms up to |W| + |B| @ |A|.
        fact["img_in_terms"] = int(down.shape[0]) + 1
        fact["img_in_magnitude"] = (base_weight.abs() + up.abs() @ down.abs()).max().item()
        return fact

    checks = {
        "fill": ("full_flux_fill.safetensors", "fill", "full_fill_lora_peft.safetensors", text_dim, 32),
        "fft": (FFT, "fft", "full_fft_lora_peft.safetensors", text_dim, 32),
    }
    # The runner's synthetic set (CLIP-L-wide txt_in) loads where ComfyUI reads txt_in's width (0.3.75; 0.3.52 and
    # 0.3.64 assume 4096, and there the runner only runs with real weights, COMFYUI_PATH).
    demo_path = Path(host.folder_paths.get_full_path_or_raise("diffusion_models", "demo_flux_fill.safetensors"))
    with safe_open(str(demo_path), "pt") as f:
        demo_shapes = {k: torch.empty(f.get_slice(k).get_shape(), device="meta") for k in f.keys()}
    facts["demo_detectable"] = detect(demo_shapes, "")["context_in_dim"] == demo_shapes["txt_in.weight"].shape[1]
    if facts["demo_detectable"]:
        checks["demo_fill"] = ("demo_flux_fill.safetensors", "fill", "demo_fill_lora_peft.safetensors", 768, 768)
    for name, args in checks.items():
        if name not in selected["lora"]:
            continue
        facts["lora"][name] = lora_check(*args)
        release()

    Path(out_path).write_text(json.dumps(facts, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:6])
