"""What reaches the diffusion model's forward, checked against an expectation built here from the spec alone.

Every graph runs through ComfyUI's real executor with tiny models and one sampler step. A global torch forward
pre-hook records the tensor the Flux transformer's ``forward`` receives (noise | concat latents | folded mask,
before its 2x2 patching). The expectation is built in this file in float64: the canvas pixels from the PNGs with
the documented layout rules (torch's own resampling, the official arithmetic for the drop-in processors), the VAE
latents by calling ComfyUI's ``VAE.encode`` here, then ``process_latent_in``, the start noise and the 8x8 mask fold
as ComfyUI's Flux ``concat_cond`` and sampler do. Nothing is taken from the pack's code or from what it encoded,
so swapped UC/C latents (whatever the encode order), a wrong crop or a misfolded mask all fail; a concat latent of
the wrong size fails too although ComfyUI would silently resize it to the noise.

Sides are deliberately off the 16 px token grid: edit 200x136, reference 90x120, mask edges off the 8 px grid.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from graphs import Graph
from PIL import Image
from tolerances import assert_catches, eps, network_bound, resample_bound

pytestmark = pytest.mark.numeric

EDIT_W, EDIT_H = 200, 136
REF_W, REF_H = 90, 120
HOLE = (29, 61, 53, 77)  # top, left, h, w: every edge off the 8 px grid
SEED = 5
DENOISE = 0.5  # first sigma < 1: the start latent is part of the model input too
GRAY = 0.5
KEEP_PIXELS_RATE = 0.8
MAX_SEQ_LENGTH = 3072
FLUX_SHIFT, FLUX_SCALE = 0.1159, 0.3611  # FLUX latent format: process_latent_in(z) = (z - shift) * scale
FFT = "tiny_ace_plus_fft.safetensors"
FILL = "tiny_flux_fill.safetensors"
VAE = "tiny_taef1.safetensors"
# Pixels: the reference's antialiased resampling (the largest shrink: to keep_pixels_rate x the edit height) in
# float32 against float64 here; everything else on the canvas is copied or set to gray (exact).
PIXEL_TOL = assert_catches(resample_bound((REF_H, REF_W), (int(EDIT_H * KEEP_PIXELS_RATE), int(REF_W * KEEP_PIXELS_RATE))))


@pytest.fixture
def forward_inputs(comfy_host):
    """Records (x, sigma, img_in width) of every call of a Flux transformer's forward."""
    import comfy.ldm.flux.model as flux_model

    calls: list[dict] = []

    def hook(module, args):
        if isinstance(module, flux_model.Flux):
            calls.append({"x": args[0].detach().double().clone(), "sigma": float(args[1].flatten()[0]),
                          "img_in": int(module.img_in.weight.shape[1])})

    handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
    comfy_host.executor.reset()  # nothing cached from earlier graphs: every sampler really runs
    yield calls
    handle.remove()


@pytest.fixture
def pngs(comfy_host, input_image):
    noise = np.random.default_rng(24).integers(0, 256, (139, 203, 3), dtype=np.uint8)
    Image.fromarray(noise, "RGB").save(comfy_host.input_dir / "layout_odd_c.png")  # unlike the gradients
    return {
        "edit": input_image("layout_edit.png", EDIT_W, EDIT_H, HOLE, seed=21),
        "ref": input_image("layout_ref.png", REF_W, REF_H, None, seed=22),
        "odd_uc": input_image("layout_odd_uc.png", 203, 139, HOLE, seed=23),
        "odd_c": "layout_odd_c.png",
    }


@pytest.fixture
def probe(comfy_host):
    return comfy_host.node_class_mappings["ACEPlusTestOnlyProbe"].RECORDED.__getitem__


@pytest.fixture
def vae(comfy_host, tiny_models):
    return comfy_host.node_class_mappings["VAELoader"]().load_vae(VAE)[0]


def _load(comfy_host, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """As LoadImage reads a PNG: RGB / 255 and MASK = 1 - alpha / 255, here [1, 3, H, W] / [1, 1, H, W] float64."""
    a = np.asarray(Image.open(comfy_host.input_dir / name).convert("RGBA"), dtype=np.float64) / 255.0
    rgb = torch.from_numpy(a[..., :3]).permute(2, 0, 1)[None]
    return rgb, torch.from_numpy(1.0 - a[..., 3])[None, None]


# --- the expectation, from the spec ----------------------------------------------------------------------


def _bilinear_aa(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    if x.shape[-2:] == (h, w):
        return x
    return F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False)


def _ceil16(n: int) -> int:
    return (n + 15) // 16 * 16


def _official_canvas(edit, mask, ref, layout: str):
    """Drop-in processors: reference sized by the official rule beside the edit image, then the canvas resampled
    nearest-exact to sides floored to multiples of 16 (budget: 2 x max_seq_length for LoRA, 1 x for FFT)."""
    eh, ew = edit.shape[-2:]
    rh, rw = ref.shape[-2:]
    if layout == "lora":
        th, budget = eh, 2 * MAX_SEQ_LENGTH
    else:
        th, budget = (int(eh * KEEP_PIXELS_RATE) if rh >= KEEP_PIXELS_RATE * eh else rh), MAX_SEQ_LENGTH
    tw = int(rw * (th / rh))
    r = _bilinear_aa(ref, th, tw)
    top = (eh - th) // 2
    r = F.pad(r, (0, 0, top, eh - th - top), value=GRAY)
    canvas = torch.cat([r, edit], -1)
    m = torch.cat([torch.zeros(1, 1, eh, tw, dtype=mask.dtype), mask], -1)
    H, W = canvas.shape[-2:]
    scale = min(1.0, math.sqrt(budget / ((H / 16) * (W / 16))))
    h, w = int(H * scale) // 16 * 16, int(W * scale) // 16 * 16
    return F.interpolate(canvas, size=(h, w), mode="nearest-exact"), F.interpolate(m, size=(h, w), mode="nearest-exact")


def _exact_canvas(edit, mask, ref, layout: str):
    """ACE++ Canvas at scale 1: reference resized (LoRA: to the edit height; FFT: shrunk to keep_pixels_rate x edit
    height and centred on gray), edit pixels untouched, each strip edge-replicated right/bottom to multiples of 16."""
    eh, ew = edit.shape[-2:]
    rh0, rw0 = ref.shape[-2:]
    H = _ceil16(eh)
    rh = eh if layout == "lora" else (int(eh * KEEP_PIXELS_RATE) if rh0 >= KEEP_PIXELS_RATE * eh else rh0)
    rw = round(rw0 * rh / rh0)
    r = _bilinear_aa(ref, rh, rw)
    top = (eh - rh) // 2
    r = F.pad(r, (0, 0, top, eh - rh - top), value=GRAY)
    r = F.pad(r, (0, _ceil16(rw) - rw, 0, H - eh), mode="replicate")
    e = F.pad(edit, (0, _ceil16(ew) - ew, 0, H - eh), mode="replicate")
    m = F.pad(mask, (0, _ceil16(ew) - ew, 0, H - eh), mode="replicate")
    return torch.cat([r, e], -1), torch.cat([torch.zeros(1, 1, H, _ceil16(rw), dtype=mask.dtype), m], -1)


def _task(canvas, mask, task: str):
    """Canvas after the task; UC = masked area gray; C = gray except the guidance under the mask."""
    marked = mask > 0.5
    if task == "repainting":
        canvas = torch.where(marked, GRAY, canvas)
    return canvas, torch.where(marked, GRAY, canvas), torch.where(marked, canvas, GRAY)


def _encode(vae, pixels: torch.Tensor) -> torch.Tensor:
    """ComfyUI's VAE.encode on [1, 3, H, W] pixels (as an IMAGE [1, H, W, 3] float32)."""
    with torch.no_grad():
        return vae.encode(pixels.permute(0, 2, 3, 1).float().contiguous()).double()


def _latent_in(z: torch.Tensor) -> torch.Tensor:
    return (z - FLUX_SHIFT) * FLUX_SCALE


def _fold(mask: torch.Tensor) -> torch.Tensor:
    """Pixel mask [1, 1, H, W] -> [1, 64, H/8, W/8]; channel dy*8 + dx holds pixel (8i + dy, 8j + dx)."""
    h, w = mask.shape[-2] // 8, mask.shape[-1] // 8
    out = torch.empty(1, 64, h, w, dtype=torch.float64)
    for dy in range(8):
        for dx in range(8):
            out[0, dy * 8 + dx] = mask[0, 0, dy::8, dx::8]
    return out


def _expected(start: torch.Tensor, concat: dict[str, torch.Tensor], mask: torch.Tensor, sigma: float) -> dict:
    """The parts of the forward input: the start latent noised to sigma (ComfyUI: seeded randn on the CPU,
    sigma * noise + (1 - sigma) * latent_in(start)), each concat latent through latent_in, the folded mask."""
    noise = torch.randn(start.shape, generator=torch.Generator().manual_seed(SEED), dtype=torch.float32).double()
    parts = {"noisy start latent": sigma * noise + (1.0 - sigma) * _latent_in(start)}
    parts.update({name: _latent_in(z) for name, z in concat.items()})
    parts["mask folded 8x8"] = _fold(mask)
    return parts


def _tolerances(vae, parts: dict[str, torch.Tensor]) -> dict[str, float]:
    """Relative tolerance per part: a latent (and the start latent noised from one) carries the float32 rounding of
    the VAE encoder, which the pack and this test run with whatever kernels the CPU picks (AVX-512, AVX2,
    ``ATEN_CPU_CAPABILITY=default`` round differently); the folded mask holds 0 and 1 copied (exact up to eps)."""
    latent = assert_catches(network_bound(vae.first_stage_model))
    return {name: eps() if name.startswith("mask") else latent for name in parts}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def _assert_forward_input(calls: list[dict], parts: dict[str, torch.Tensor], img_in: int, tol: dict) -> None:
    (call,) = calls  # one step, cfg 1: one model call
    x = call["x"]
    widths = {name: p.shape[1] for name, p in parts.items()}
    expected_shape = (1, sum(widths.values()), *parts["mask folded 8x8"].shape[-2:])
    assert tuple(x.shape) == expected_shape, f"forward got {tuple(x.shape)}, expected {expected_shape} ({widths})"
    assert x.shape[1] * 4 == call["img_in"] == img_in  # 2x2 patches: img_in width
    errors, start = {}, 0
    for name, p in parts.items():
        errors[name] = _rel(x[:, start : start + p.shape[1]], p)
        start += p.shape[1]
    bad = {k: v for k, v in errors.items() if not v < tol[k]}
    if bad:  # say what each wrong slice holds instead, if it is another part
        holds = {}
        start = 0
        for name, p in parts.items():
            got = x[:, start : start + p.shape[1]]
            start += p.shape[1]
            if name in bad:
                holds[name] = [o for o, q in parts.items() if q.shape == got.shape and _rel(got, q) < tol[o]] or "?"
        pytest.fail(f"forward input differs: relative errors {bad}; the wrong slices hold {holds}")


def _assert_distinct(parts: dict[str, torch.Tensor]) -> None:
    """The data makes a swap or misfold visible (a property of the test inputs, not of the product)."""
    lat = [p for n, p in parts.items() if n.startswith("latent(")]
    for i, a in enumerate(lat):
        for b in lat[i + 1 :]:
            assert _rel(a, b) > 0.05
    folded = parts["mask folded 8x8"]
    assert ((folded.amax(1) - folded.amin(1)) == 1).any()  # some 8x8 blocks are partly masked
    assert not torch.equal(folded, folded.amax(1, keepdim=True).expand_as(folded))


def _close(got: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    assert tuple(got.shape) == tuple(expected.shape), f"{what}: {tuple(got.shape)} != {tuple(expected.shape)}"
    err = (got.double() - expected).abs().max().item()
    assert err < PIXEL_TOL, f"{what}: max abs error {err:.2e} (tolerance {PIXEL_TOL:.1e})"


# --- graphs ----------------------------------------------------------------------------------------------


def _head(g: Graph, pngs: dict):
    text = g.add("ACEPlusTestOnlyT5StandIn", text="a red cup", context_dim=768, pooled_dim=768, tokens=8)
    text = g.add("FluxGuidance", conditioning=text[0], guidance=30.0)
    vae = g.add("VAELoader", vae_name=VAE)
    return text, vae, g.add("LoadImage", image=pngs["edit"]), g.add("LoadImage", image=pngs["ref"])


def _finish(g: Graph, model, positive, negative, latent) -> dict:
    # "simple" schedule: 1 step at denoise 0.5 starts at sigma ~0.5 ("normal" would start at its last sigma)
    samples = g.add("KSampler", model=model, seed=SEED, steps=1, cfg=1.0, sampler_name="euler", scheduler="simple",
                    positive=positive, negative=negative, latent_image=latent, denoise=DENOISE)
    g.add("ACEPlusTestOnlyProbe", label="layout_samples", latent=samples[0])
    return g.prompt()


def _dropin_graph(pngs: dict, layout: str, task: str) -> dict:
    g = Graph()
    text, vae, edit, ref = _head(g, pngs)
    common = dict(use_reference=True, height=1024, width=1024, task_type=task, max_seq_length=MAX_SEQ_LENGTH,
                  reference_image=ref[0], edit_image=edit[0], edit_mask=edit[1])
    if layout == "fft":
        model = g.add("ACEPlusLoader", unet_name=FFT, weight_dtype="default")
        proc = g.add("ACEPlusFFTProcessor", keep_pixels_rate=KEEP_PIXELS_RATE, **common)
        cond = g.add("ACEPlusConditioning", positive=text[0], negative=text[0], vae=vae[0], ucpixels=proc[0],
                     cpixels=proc[1], mask=proc[2], noise_mask=True)
        images = {"uc": proc[0], "c": proc[1]}
        mask = proc[2]
    else:
        model = g.add("UNETLoader", unet_name=FILL, weight_dtype="default")
        proc = g.add("ACEPlusLoraProcessor", **common)
        cond = g.add("ACEPlusLoraConditioning", positive=text[0], negative=text[0], vae=vae[0], pixels=proc[0],
                     mask=proc[1], noise_mask=True)
        images, mask = {"canvas": proc[0]}, proc[1]
    for name, out in images.items():
        g.add("ACEPlusTestOnlyProbe", label=f"layout_{name}", image=out)
    g.add("ACEPlusTestOnlyProbe", label="layout_mask", mask=mask)
    return _finish(g, model[0], cond[0], cond[1], cond[2])


def _canvas_graph(pngs: dict, layout: str, task: str) -> dict:
    g = Graph()
    text, vae, edit, ref = _head(g, pngs)
    cv = g.add("ACEPlusCanvas", layout=layout, task=task, reference_mode="auto", max_image_tokens=4096,
               keep_pixels_rate=KEEP_PIXELS_RATE, width=1024, height=1024, crop_to_mask=False,
               reference_image=ref[0], edit_image=edit[0], edit_mask=edit[1])
    model = g.add("UNETLoader", unet_name=FFT if layout == "fft" else FILL, weight_dtype="default")
    cc = g.add("ACEPlusCanvasConditioning", model=model[0], positive=text[0], negative=text[0], vae=vae[0],
               uc_image=cv[1], c_image=cv[2], mask=cv[3], geometry=cv[4], noise_mask=True)
    for name, index in (("canvas", 0), ("uc", 1), ("c", 2)):
        g.add("ACEPlusTestOnlyProbe", label=f"layout_{name}", image=cv[index])
    g.add("ACEPlusTestOnlyProbe", label="layout_mask", mask=cv[3])
    return _finish(g, cc[0], cc[1], cc[2], cc[3])


def _check(vae, probe, calls, layout, task, canvas_and_mask, sizes):
    canvas, mask = canvas_and_mask
    assert tuple(canvas.shape[-2:]) == sizes  # the documented sizes, worked out by hand in the test's table
    canvas, uc, c = _task(canvas, mask, task)
    _close(probe("layout_mask"), mask[:, 0], "mask")
    if layout == "fft":
        _close(probe("layout_uc"), uc.permute(0, 2, 3, 1), "UC image")
        _close(probe("layout_c"), c.permute(0, 2, 3, 1), "C image")
        z_uc, z_c = _encode(vae, uc), _encode(vae, c)
        start, concat, width = z_uc, {"latent(UC)": z_uc, "latent(C)": z_c}, 448
    else:
        _close(probe("layout_canvas"), canvas.permute(0, 2, 3, 1), "canvas")
        z = _encode(vae, canvas)
        start, concat, width = z, {"latent(canvas)": z}, 384
    (call,) = calls
    assert 0.05 < call["sigma"] < 0.95, call["sigma"]
    parts = _expected(start, concat, mask, call["sigma"])
    _assert_distinct(parts)
    _assert_forward_input(calls, parts, width, _tolerances(vae, parts))


# --- tests -----------------------------------------------------------------------------------------------

# (layout, task, canvas height x width): drop-in (official fit) LoRA: reference 102 wide beside 200 -> 136x302,
# floored to 128x288; FFT: reference shrunk to 108x81 and padded -> 136x281, floored to 128x272. ACE++ Canvas
# (exact fit, scale 1): LoRA 144 x (112 + 208); FFT 144 x (96 + 208).
DROPIN = [("fft", "no_preprocess", (128, 272)), ("lora", "repainting", (128, 288))]
CANVAS = [("fft", "no_preprocess", (144, 304)), ("fft", "repainting", (144, 304)), ("lora", "repainting", (144, 320))]


@pytest.mark.parametrize("layout, task, sizes", DROPIN)
def test_dropin_processor_and_conditioning_feed_the_model_the_spec_layout(
        comfy_host, tiny_models, pngs, forward_inputs, probe, vae, layout, task, sizes):
    """Drop-in processor -> drop-in conditioning -> KSampler: FFT forward input = noisy latent(UC) | latent(UC) |
    latent(C) | mask folded (16 + 16 + 16 + 64 = 112, img_in 448); LoRA = noisy latent | latent(canvas) | mask
    (96, img_in 384)."""
    comfy_host.run(_dropin_graph(pngs, layout, task))
    edit, mask = _load(comfy_host, pngs["edit"])
    ref, _ = _load(comfy_host, pngs["ref"])
    _check(vae, probe, forward_inputs, layout, task, _official_canvas(edit, mask, ref, layout), sizes)


@pytest.mark.parametrize("layout, task, sizes", CANVAS)
def test_canvas_conditioning_feeds_the_model_the_spec_layout(
        comfy_host, tiny_models, pngs, forward_inputs, probe, vae, layout, task, sizes):
    """ACE++ Canvas (no crop, scale 1) -> ACE++ Conditioning (its prepared model) -> KSampler, both layouts."""
    comfy_host.run(_canvas_graph(pngs, layout, task))
    edit, mask = _load(comfy_host, pngs["edit"])
    ref, _ = _load(comfy_host, pngs["ref"])
    _check(vae, probe, forward_inputs, layout, task, _exact_canvas(edit, mask, ref, layout), sizes)


@pytest.mark.parametrize("layout", ["fft", "lora"])
def test_dropin_conditioning_centre_crops_a_canvas_off_the_8px_grid(comfy_host, tiny_models, pngs, forward_inputs,
                                                                   vae, layout):
    """Images of 203x139 wired straight into the drop-in conditioning: pixels and mask are centre-cropped to
    200x136 (offset (139 % 8) // 2 = 1 row, (203 % 8) // 2 = 1 column, ComfyUI's inpaint rule), so the model sees
    an odd 17x25 latent grid (Flux pads it to its 2x2 patches itself)."""
    g = Graph()
    text, vae_node, _, _ = _head(g, pngs)
    uc = g.add("LoadImage", image=pngs["odd_uc"])
    c = g.add("LoadImage", image=pngs["odd_c"])
    if layout == "fft":
        model = g.add("ACEPlusLoader", unet_name=FFT, weight_dtype="default")
        cond = g.add("ACEPlusConditioning", positive=text[0], negative=text[0], vae=vae_node[0], ucpixels=uc[0],
                     cpixels=c[0], mask=uc[1], noise_mask=False)
    else:
        model = g.add("UNETLoader", unet_name=FILL, weight_dtype="default")
        cond = g.add("ACEPlusLoraConditioning", positive=text[0], negative=text[0], vae=vae_node[0], pixels=uc[0],
                     mask=uc[1], noise_mask=False)
    comfy_host.run(_finish(g, model[0], cond[0], cond[1], cond[2]))

    def cropped(name):
        rgb, m = _load(comfy_host, pngs[name])
        return rgb[..., 1:137, 1:201], m[..., 1:137, 1:201]

    uc_px, mask = cropped("odd_uc")
    z_uc = _encode(vae, uc_px)
    assert z_uc.shape[-2:] == (17, 25)
    if layout == "fft":
        concat, width = {"latent(UC)": z_uc, "latent(C)": _encode(vae, cropped("odd_c")[0])}, 448
    else:
        concat, width = {"latent(canvas)": z_uc}, 384
    parts = _expected(z_uc, concat, mask, forward_inputs[0]["sigma"])
    _assert_distinct(parts)
    _assert_forward_input(forward_inputs, parts, width, _tolerances(vae, parts))
