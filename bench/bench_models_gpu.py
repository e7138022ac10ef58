"""GPU benchmark: full-size FLUX.1-Fill (img_in 384) vs ACE++ FFT (img_in 448), bf16 / fp8 / fp8 fast.

Builds random-weight FLUX transformers of the real size (hidden 3072, 24 heads, 19 double + 38 single blocks,
T5 context 4096, pooled 768, guidance embedding; about 11.9B parameters) directly on the GPU, loads them through
ComfyUI's own code and times one model evaluation (one sampling step at cfg 1) at 2048, 4096 and 8192 image
tokens, with the peak GPU memory of each configuration:

* Fill: ``comfy.sd.load_diffusion_model_state_dict`` -- exactly what UNETLoader runs after reading the file;
* FFT: the same, then the pack's ``prepare_flux`` -- what ACEPlusLoader runs after checking the file header.

The state dicts are made in memory (bf16) instead of written to disk: two 24 GB files would not fit the bench
machine's disk or its time budget. ``weight_dtype`` is passed as UNETLoader/ACEPlusLoader pass it
(``bf16`` = "default" on a bf16 state dict). Prints a table, the FFT/Fill time ratios and the fp8/bf16 peak-memory
ratios, and writes JSON with ``--json``. About 2-3 minutes on one H100 (loading dominates).

    python bench/bench_models_gpu.py [--comfyui PATH] [--tokens 2048 4096 8192] [--runs 3] [--json out.json]
    python bench/bench_models_gpu.py --dry-run     # tiny widths on the CPU: checks the plumbing only

Needs a ComfyUI source tree (``--comfyui``, ``$COMFYUI_PATH`` or ``~/.cache/ace-plus-host/ComfyUI``; on a
machine without one, copy that tree to ``.host/ComfyUI`` -- about 25 MB -- and carry it) and a Python with torch
and ComfyUI's requirements. ``--dry-run`` uses the TEST-ONLY detection patch (tests/tiny_flux_detection.py) so
that tiny widths load; the full run uses ComfyUI's detection unpatched.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACK = "ace_plus_pack"

FULL = dict(
    hidden_size=3072,
    num_heads=24,
    depth=19,
    depth_single_blocks=38,
    context_in_dim=4096,
    vec_in_dim=768,
    axes_dim=(16, 56, 56),
)
TINY = dict(
    hidden_size=64, num_heads=2, depth=1, depth_single_blocks=1, context_in_dim=64, vec_in_dim=32, axes_dim=(4, 14, 14)
)
LAYOUTS = {"fill": 96, "fft": 112}  # in_channels per latent channel: img_in 384 / 448
WEIGHT_DTYPES = {"bf16": "default", "fp8_e4m3fn": "fp8_e4m3fn", "fp8_e4m3fn_fast": "fp8_e4m3fn_fast"}
TEXT_TOKENS = 512


def find_comfyui(arg: str | None) -> Path:
    for cand in (
        arg,
        os.environ.get("COMFYUI_PATH"),
        REPO / ".host" / "ComfyUI",
        Path.home() / ".cache" / "ace-plus-host" / "ComfyUI",
    ):
        if cand and (Path(cand) / "comfy").is_dir():
            return Path(cand)
    raise SystemExit("no ComfyUI source tree found: pass --comfyui PATH or set COMFYUI_PATH")


def boot(comfy_dir: Path, cpu: bool):
    """Import ComfyUI in-process (no server), then this pack as a package; return (comfy modules, pack models)."""
    sys.path.insert(0, str(comfy_dir))
    import utils.install_util  # noqa: F401  (as main.py: claim `utils` before comfy/utils.py does)
    from comfy.cli_args import args

    args.cpu = cpu
    args.highvram = not cpu  # build the model on the GPU directly: no 24 GB round trip through host memory

    import comfy.model_management as mm
    import comfy.sd

    spec = importlib.util.spec_from_file_location(PACK, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
    pack = importlib.util.module_from_spec(spec)
    sys.modules[PACK] = pack
    spec.loader.exec_module(pack)
    models = importlib.import_module(f"{PACK}.nodes.flux_models")
    return mm, comfy.sd, models


def random_flux(cfg_kwargs: dict, in_channels: int, device, seed: int = 0) -> dict:
    """A random FLUX state dict in ComfyUI's key layout, bf16, made on ``device`` (weights N(0, 0.02),
    biases N(0, 0.01), RMSNorm scales 1 + N(0, 0.02))."""
    import torch

    sys.path.insert(0, str(REPO / "runner"))
    import tiny_models

    cfg = tiny_models.FluxConfig(in_channels=in_channels, **cfg_kwargs)
    gen = torch.Generator(device=device).manual_seed(seed)
    sd = {}
    for key, shape in tiny_models.flux_param_shapes(cfg).items():
        t = torch.randn(shape, generator=gen, device=device, dtype=torch.bfloat16)
        if key.endswith(".scale"):
            sd[key] = t.mul_(0.02).add_(1.0)
        else:
            sd[key] = t.mul_(0.01 if key.endswith(".bias") else 0.02)
    return sd


def latent_size(tokens: int) -> tuple[int, int]:
    """(height, width) of a latent with ``tokens`` 2x2 patches, aspect 1:1 or 1:2."""
    side = int(round(tokens**0.5))
    if side * side == tokens:
        return 2 * side, 2 * side
    side = int(round((tokens / 2) ** 0.5))
    return 2 * side, 4 * side


def run_config(
    mm, comfy_sd, models, layout: str, dtype_name: str, cfg_kwargs: dict, token_list, runs: int, device, cuda: bool
) -> list[dict]:
    import torch

    options = models.model_options_for(WEIGHT_DTYPES[dtype_name])
    sd = random_flux(cfg_kwargs, LAYOUTS[layout], device)
    t0 = time.perf_counter()
    patcher = comfy_sd.load_diffusion_model_state_dict(sd, model_options=options)
    if layout == "fft":
        patcher = models.prepare_flux(patcher)
    del sd
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    mm.load_models_gpu([patcher], force_full_load=True)
    load_s = time.perf_counter() - t0
    model = patcher.model
    compute = models.compute_dtype(patcher)  # the pack's own public-getter rule
    rows = []
    context = torch.randn(1, TEXT_TOKENS, cfg_kwargs["context_in_dim"], device=device)
    pooled = torch.randn(1, cfg_kwargs["vec_in_dim"], device=device)
    for tokens in token_list:
        h, w = latent_size(tokens)
        x = torch.randn(1, 16, h, w, device=device)
        concat = torch.randn(1, LAYOUTS[layout] - 16, h, w, device=device)
        sigma = torch.tensor([0.7], device=device)
        guidance = torch.tensor([30.0], device=device)

        kwargs = dict(c_concat=concat, c_crossattn=context, y=pooled, guidance=guidance)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        with torch.inference_mode():
            out = model.apply_model(x, sigma, **kwargs)  # warm-up (kernels, cuBLAS/fp8 workspaces)
            if cuda:
                torch.cuda.synchronize()
            times = []
            for _ in range(runs):
                t = time.perf_counter()
                out = model.apply_model(x, sigma, **kwargs)
                if cuda:
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
        finite = bool(torch.isfinite(out).all())
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
        rows.append(
            dict(
                layout=layout,
                weight_dtype=dtype_name,
                tokens=(h // 2) * (w // 2),
                latent=[h, w],
                s_per_step=sorted(times)[len(times) // 2],
                peak_gib=peak,
                load_s=load_s,
                weight_storage=str(model.diffusion_model.img_in.weight.dtype).replace("torch.", ""),
                compute=str(compute).replace("torch.", ""),
                finite=finite,
            )
        )
        del out, x, concat, kwargs
    mm.unload_all_models()
    del patcher, model
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--comfyui", help="ComfyUI source tree")
    ap.add_argument("--tokens", type=int, nargs="+", default=[2048, 4096, 8192])
    ap.add_argument("--dtypes", nargs="+", default=list(WEIGHT_DTYPES), choices=list(WEIGHT_DTYPES))
    ap.add_argument("--runs", type=int, default=3, help="timed steps per size (median reported) after one warm-up")
    ap.add_argument("--dry-run", action="store_true", help="tiny widths on the CPU, small token counts")
    ap.add_argument("--json", help="also write the rows as JSON here")
    a = ap.parse_args(argv)

    import torch

    cuda = torch.cuda.is_available() and not a.dry_run
    if not cuda and not a.dry_run:
        raise SystemExit("no CUDA device: run with --dry-run to check the script on the CPU")
    comfy_dir = find_comfyui(a.comfyui)
    mm, comfy_sd, models = boot(comfy_dir, cpu=not cuda)
    cfg_kwargs, token_list = (TINY, [16, 32]) if a.dry_run else (FULL, a.tokens)
    if a.dry_run:
        sys.path.insert(0, str(REPO / "tests"))
        import tiny_flux_detection  # TEST-ONLY: lets ComfyUI detect hidden-64 Flux models

        tiny_flux_detection.install()
    device = mm.get_torch_device()
    name = torch.cuda.get_device_name() if cuda else platform.processor() or "cpu"
    print(f"# {name}, torch {torch.__version__}, ComfyUI at {comfy_dir}, {'dry run' if a.dry_run else 'full size'}")

    t_start = time.perf_counter()
    rows: list[dict] = []
    for dtype_name in a.dtypes:
        for layout in ("fill", "fft"):
            rows += run_config(mm, comfy_sd, models, layout, dtype_name, cfg_kwargs, token_list, a.runs, device, cuda)
            r = rows[-1]
            print(
                f"  loaded+ran {layout:4s} {dtype_name:16s} (load {r['load_s']:.1f}s, "
                f"{time.perf_counter() - t_start:.0f}s so far)",
                flush=True,
            )

    print(
        f"\n{'model':6s} {'weight_dtype':16s} {'stored':14s} {'compute':9s} {'tokens':>6s} {'s/step':>8s} "
        f"{'peak GiB':>9s} finite"
    )
    for r in rows:
        peak = f"{r['peak_gib']:9.2f}" if r["peak_gib"] is not None else f"{'n/a':>9s}"
        print(
            f"{r['layout']:6s} {r['weight_dtype']:16s} {r['weight_storage']:14s} {r['compute']:9s} "
            f"{r['tokens']:6d} {r['s_per_step']:8.4f} {peak} {r['finite']}"
        )

    by = {(r["layout"], r["weight_dtype"], r["tokens"]): r for r in rows}
    print("\nFFT/Fill time per step (cost of the 64 extra img_in features):")
    for (layout, dt, tok), r in by.items():
        if layout == "fft" and ("fill", dt, tok) in by:
            print(f"  {dt:16s} {tok:6d} tokens: {r['s_per_step'] / by['fill', dt, tok]['s_per_step']:.3f}")
    if cuda:
        print("\nfp8/bf16 peak memory:")
        for (layout, dt, tok), r in by.items():
            if dt != "bf16" and (layout, "bf16", tok) in by:
                print(
                    f"  {layout:4s} {dt:16s} {tok:6d} tokens: {r['peak_gib'] / by[layout, 'bf16', tok]['peak_gib']:.3f}"
                )
    print(f"\ntotal {time.perf_counter() - t_start:.0f}s")
    if a.json:
        Path(a.json).write_text(json.dumps({"device": name, "rows": rows}, indent=1))
    if not all(r["finite"] for r in rows):
        print("NON-FINITE OUTPUT in some configuration")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
