"""The canvas nodes inside real ComfyUI graphs: drop-in processors with their official wiring, the new canvas
node with Cut Back, and errors surfaced before the run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from graphs import Graph, sampler, tiny_loaders
from PIL import Image

from tools_images import solid_png

# The Canvas budget of these graphs: a small canvas (the CPU), the layout and crop checks do not need more.
TOKENS = 256
PIXELS_PER_TOKEN = 16 * 16


@pytest.fixture
def probe(comfy_host):
    return comfy_host.node_class_mappings["ACEPlusTestOnlyProbe"].RECORDED.__getitem__


def _official_lora_graph(ref: str, edit: str, *, max_seq_length: int = 1024) -> tuple[dict, dict]:
    """The official LoRA reference-editing wiring (MaskPreview+ dropped), tiny models in place of real ones."""
    g = Graph()
    model, text, vae = tiny_loaders(g, "tiny_flux_fill.safetensors", "The logo is printed on the headphones.")
    ref_img = g.add("LoadImage", image=ref)
    edit_img = g.add("LoadImage", image=edit)
    proc = g.add("ACEPlusLoraProcessor", use_reference=True, height=1024, width=1024, task_type="repainting",
                 max_seq_length=max_seq_length, reference_image=ref_img[0], edit_image=edit_img[0],
                 edit_mask=edit_img[1])
    cond = g.add("ACEPlusLoraConditioning", positive=text[0], negative=text[0], vae=vae[0], pixels=proc[0],
                 mask=proc[1], noise_mask=True)
    diff = g.add("DifferentialDiffusion", model=model[0])
    samples = sampler(g, diff[0], cond[0], cond[1], cond[2])
    decoded = g.add("VAEDecode", samples=samples[0], vae=vae[0])
    crop = g.add("ImageCrop", image=decoded[0], width=proc[3], height=proc[2], x=proc[4], y=0)
    g.add("ACEPlusTestOnlyProbe", label="canvas", image=proc[0])
    g.add("ACEPlusTestOnlyProbe", label="mask", mask=proc[1])
    g.add("ACEPlusTestOnlyProbe", label="decoded", image=decoded[0])
    g.add("ACEPlusTestOnlyProbe", label="cropped", image=crop[0])
    return g.prompt(), {"proc": proc.id}


def test_official_lora_wiring_crops_at_the_true_boundary(comfy_host, tiny_models, probe):
    ref = solid_png(comfy_host.input_dir / "ref_red.png", 200, 300, (255, 0, 0))
    edit = solid_png(comfy_host.input_dir / "edit_blue.png", 333, 517, (0, 0, 255), hole=(100, 100, 150, 200))
    prompt, ids = _official_lora_graph(ref, edit)
    comfy_host.run(prompt)
    canvas, mask = probe("canvas"), probe("mask")
    assert canvas.shape[1] % 16 == 0 and canvas.shape[2] % 16 == 0
    assert canvas.shape[1] * canvas.shape[2] // 256 <= 2 * 1024  # the official LoRA budget is 2 x max_seq_length
    # The reference strip is red, the edit area blue (or 0.5 gray where repainted); find the boundary in the canvas.
    red_cols = (canvas[0, :, :, 0] > 0.9).all(dim=0)
    slice_w = int(red_cols.sum())
    assert red_cols[:slice_w].all() and not red_cols[slice_w:].any()
    assert (mask[0, :, :slice_w] == 0).all()
    # ImageCrop(x=SLICE_W) on the decoded canvas keeps exactly the columns from the boundary on.
    decoded, cropped = probe("decoded"), probe("cropped")
    assert cropped.shape[2] == decoded.shape[2] - slice_w
    assert torch.equal(cropped, decoded[:, : cropped.shape[1], slice_w:])


def test_fft_processor_and_conditioning_run(comfy_host, tiny_models, probe):
    ref = solid_png(comfy_host.input_dir / "fft_ref.png", 160, 240, (0, 255, 0))
    edit = solid_png(comfy_host.input_dir / "fft_edit.png", 300, 200, (0, 0, 255), hole=(40, 50, 100, 80))
    g = Graph()
    model, text, vae = tiny_loaders(g, "tiny_ace_plus_fft.safetensors", "Maintain the facial features, a person in a red coat.")
    ref_img = g.add("LoadImage", image=ref)
    edit_img = g.add("LoadImage", image=edit)
    proc = g.add("ACEPlusFFTProcessor", use_reference=True, height=1024, width=1024, task_type="repainting",
                 keep_pixels_rate=0.8, max_seq_length=1024, reference_image=ref_img[0], edit_image=edit_img[0],
                 edit_mask=edit_img[1])
    cond = g.add("ACEPlusConditioning", positive=text[0], negative=text[0], vae=vae[0], ucpixels=proc[0],
                 cpixels=proc[1], mask=proc[2], noise_mask=True)
    samples = sampler(g, model[0], cond[0], cond[1], cond[2])
    decoded = g.add("VAEDecode", samples=samples[0], vae=vae[0])
    g.add("ACEPlusTestOnlyProbe", label="fft_uc", image=proc[0])
    g.add("ACEPlusTestOnlyProbe", label="fft_c", image=proc[1])
    g.add("ACEPlusTestOnlyProbe", label="fft_out", image=decoded[0])
    comfy_host.run(g.prompt())
    uc, c, out = probe("fft_uc"), probe("fft_c"), probe("fft_out")
    assert uc.shape == c.shape == out.shape
    assert uc.shape[1] * uc.shape[2] // 256 <= 1024
    assert torch.isfinite(out).all()


def test_canvas_node_and_cut_back_return_the_edit_size(comfy_host, tiny_models, probe):
    ref = solid_png(comfy_host.input_dir / "cv_ref.png", 120, 150, (255, 255, 0))
    edit = solid_png(comfy_host.input_dir / "cv_edit.png", 181, 143, (0, 128, 255), hole=(30, 40, 60, 70))
    g = Graph()
    model, text, vae = tiny_loaders(g, "tiny_flux_fill.safetensors", "a yellow star")
    ref_img = g.add("LoadImage", image=ref)
    edit_img = g.add("LoadImage", image=edit)
    cv = g.add("ACEPlusCanvas", layout="lora", task="repainting", reference_mode="auto", max_image_tokens=4096,
               keep_pixels_rate=0.8, width=1024, height=1024, crop_to_mask=False, reference_image=ref_img[0],
               edit_image=edit_img[0], edit_mask=edit_img[1])
    cond = g.add("ACEPlusLoraConditioning", positive=text[0], negative=text[0], vae=vae[0], pixels=cv[0],
                 mask=cv[3], noise_mask=True)
    samples = sampler(g, model[0], cond[0], cond[1], cond[2])
    decoded = g.add("VAEDecode", samples=samples[0], vae=vae[0])
    back = g.add("ACEPlusCutBack", image=decoded[0], geometry=cv[4])
    g.add("ACEPlusTestOnlyProbe", label="cv_canvas", image=cv[0])
    g.add("ACEPlusTestOnlyProbe", label="cv_back", image=back[0])
    comfy_host.run(g.prompt())
    canvas, back_img = probe("cv_canvas"), probe("cv_back")
    assert canvas.shape[1] % 16 == 0 and canvas.shape[2] % 16 == 0
    assert back_img.shape == (1, 143, 181, 3)  # height x width of the edit image
    # At scale 1 the edit pixels are kept, not resampled: the unmasked edit color is in the canvas unchanged.
    src = torch.from_numpy(np.asarray(Image.open(comfy_host.input_dir / edit))[..., :3] / 255.0).float()
    assert (canvas[0] - src[0, 0]).abs().sum(-1).lt(1e-6).sum() >= (181 * 143 - 60 * 70)


@pytest.mark.parametrize(
    ("node", "widgets", "needle"),
    [
        ("ACEPlusFFTProcessor", {"keep_pixels_rate": 0.0}, "keep_pixels_rate"),
        ("ACEPlusCanvas", {"keep_pixels_rate": 0.0}, "keep_pixels_rate"),
    ],
)
def test_bad_widget_values_fail_validation_before_the_run(comfy_host, node, widgets, needle):
    from comfy_host import GraphError

    base = {
        "ACEPlusFFTProcessor": dict(use_reference=True, height=512, width=512, task_type="repainting",
                                    keep_pixels_rate=0.8, max_seq_length=1024),
        "ACEPlusCanvas": dict(layout="fft", task="repainting", reference_mode="auto", max_image_tokens=1024,
                              keep_pixels_rate=0.8, width=512, height=512),
    }[node]
    g = Graph()
    n = g.add(node, **{**base, **widgets})
    g.add("ACEPlusTestOnlyProbe", label="unused", image=n[0])
    with pytest.raises(GraphError) as err:
        comfy_host.validate(g.prompt())
    assert needle in str(err.value)


def test_aspect_beyond_4_to_1_runs_instead_of_crashing(comfy_host, tiny_models, probe):
    edit = solid_png(comfy_host.input_dir / "strip.png", 900, 100, (10, 200, 30), hole=(20, 400, 50, 100))
    g = Graph()
    img = g.add("LoadImage", image=edit)
    proc = g.add("ACEPlusLoraProcessor", use_reference=False, height=1024, width=1024, task_type="repainting",
                 max_seq_length=1024, edit_image=img[0], edit_mask=img[1])
    g.add("ACEPlusTestOnlyProbe", label="strip", image=proc[0])
    comfy_host.run(g.prompt())
    out = probe("strip")
    assert out.shape[2] <= 4 * out.shape[1] + 16


def _canvas_conditioning_graph(unet: str, layout: str, edit: str, ref: str) -> dict:
    g = Graph()
    model, text, vae = tiny_loaders(g, unet, "a red hat")
    ref_img = g.add("LoadImage", image=ref)
    edit_img = g.add("LoadImage", image=edit)
    cv = g.add("ACEPlusCanvas", layout=layout, task="repainting", reference_mode="auto", max_image_tokens=TOKENS,
               keep_pixels_rate=0.8, width=1024, height=1024, reference_image=ref_img[0], edit_image=edit_img[0],
               edit_mask=edit_img[1])
    cond = g.add("ACEPlusCanvasConditioning", model=model[0], positive=text[0], negative=text[0], vae=vae[0],
                 uc_image=cv[1], c_image=cv[2], mask=cv[3], geometry=cv[4], noise_mask=True)
    samples = sampler(g, cond[0], cond[1], cond[2], cond[3])
    decoded = g.add("VAEDecode", samples=samples[0], vae=vae[0])
    back = g.add("ACEPlusCutBack", image=decoded[0], geometry=cv[4])
    g.add("ACEPlusTestOnlyProbe", label=f"cc_{layout}", image=back[0])
    return g.prompt()


@pytest.mark.parametrize(("unet", "layout"), [("tiny_flux_fill.safetensors", "lora"),
                                              ("tiny_ace_plus_fft.safetensors", "fft")])
def test_canvas_conditioning_builds_the_models_layout(comfy_host, tiny_models, probe, unet, layout):
    ref = solid_png(comfy_host.input_dir / "cc_ref.png", 100, 120, (200, 30, 30))
    edit = solid_png(comfy_host.input_dir / "cc_edit.png", 160, 130, (30, 30, 200), hole=(20, 30, 50, 60))
    comfy_host.run(_canvas_conditioning_graph(unet, layout, edit, ref))
    out = probe(f"cc_{layout}")
    assert out.shape == (1, 130, 160, 3) and torch.isfinite(out).all()


@pytest.mark.parametrize(("unet", "layout", "needle"), [
    ("tiny_ace_plus_fft.safetensors", "lora", "model is ACE++ FFT (img_in 448"),
    ("tiny_flux_fill.safetensors", "fft", "model is FLUX.1-Fill (img_in 384"),
])
def test_canvas_conditioning_refuses_a_layout_mismatch(comfy_host, tiny_models, unet, layout, needle):
    from comfy_host import GraphError

    ref = solid_png(comfy_host.input_dir / "mm_ref.png", 100, 120, (200, 30, 30))
    edit = solid_png(comfy_host.input_dir / "mm_edit.png", 160, 130, (30, 30, 200), hole=(20, 30, 50, 60))
    with pytest.raises(GraphError) as err:
        comfy_host.run(_canvas_conditioning_graph(unet, layout, edit, ref))
    message = str(err.value)
    assert needle in message and f"layout '{layout}'" in message
    assert "mat1 and mat2" not in message


def test_crop_to_mask_and_stitch_return_the_full_photo_with_unmasked_pixels_untouched(comfy_host, tiny_models, probe):
    """A local edit on a large photo: the canvas holds the region around the mask, Stitch returns the whole photo."""
    from tools_images import noise_png

    hole = (300, 420, 90, 70)  # top, left, h, w
    edit = noise_png(comfy_host.input_dir / "big_photo.png", 1000, 750, hole=hole, seed=3)
    ref = solid_png(comfy_host.input_dir / "st_ref.png", 120, 160, (250, 200, 10))
    g = Graph()
    model, text, vae = tiny_loaders(g, "tiny_flux_fill.safetensors", "a golden badge")
    ref_img = g.add("LoadImage", image=ref)
    edit_img = g.add("LoadImage", image=edit)
    cv = g.add("ACEPlusCanvas", layout="lora", task="repainting", reference_mode="auto", max_image_tokens=TOKENS,
               keep_pixels_rate=0.8, width=1024, height=1024, crop_to_mask=True, reference_image=ref_img[0],
               edit_image=edit_img[0], edit_mask=edit_img[1])
    cond = g.add("ACEPlusCanvasConditioning", model=model[0], positive=text[0], negative=text[0], vae=vae[0],
                 uc_image=cv[1], c_image=cv[2], mask=cv[3], geometry=cv[4], noise_mask=True)
    samples = sampler(g, cond[0], cond[1], cond[2], cond[3])
    decoded = g.add("VAEDecode", samples=samples[0], vae=vae[0])
    out = g.add("ACEPlusStitch", image=decoded[0], geometry=cv[4], original_image=edit_img[0], mask=edit_img[1],
                grow_mask_px=4, feather_px=8, color_match=True)
    g.add("SaveImage", images=out[0], filename_prefix="stitched")
    g.add("ACEPlusTestOnlyProbe", label="st_canvas", image=cv[0])
    result = comfy_host.run(g.prompt())
    (path,) = result.image_paths(comfy_host.output_dir)
    saved = np.asarray(Image.open(path))
    src = np.asarray(Image.open(comfy_host.input_dir / edit))[..., :3]
    assert saved.shape == src.shape == (750, 1000, 3)
    t, lf, h, w = hole
    reach = 4 + 8  # grow + feather
    outside = np.ones((750, 1000), bool)
    outside[max(t - reach, 0) : t + h + reach, max(lf - reach, 0) : lf + w + reach] = False
    assert np.array_equal(saved[outside], src[outside])
    assert not np.array_equal(saved[t : t + h, lf : lf + w], src[t : t + h, lf : lf + w])
    canvas = probe("st_canvas")
    assert canvas.shape[1] * canvas.shape[2] // PIXELS_PER_TOKEN <= TOKENS


@pytest.mark.parametrize("kind", ["no_alpha", "all_black", "marked"])
def test_empty_mask_is_said_on_the_node_and_in_the_log(comfy_host, input_image, probe, caplog, monkeypatch, kind):
    """A connected mask that marks nothing (LoadImage's 64x64 placeholder for an image without alpha, or an
    all-black mask) regenerates the whole photo, as before; ACE++ Canvas now says so: a WARNING in the log and text
    on the node (its ui output in the prompt's history). The canvas is the one made without any mask."""
    import logging

    w, h = 96, 80
    if kind == "no_alpha":
        name = f"empty_mask_{kind}.png"
        Image.new("RGB", (w, h), (200, 120, 40)).save(comfy_host.input_dir / name)
    else:
        name = input_image(f"empty_mask_{kind}.png", w, h, (10, 12, 20, 24) if kind == "marked" else None, seed=7)
    g = Graph()
    img = g.add("LoadImage", image=name)
    common = dict(layout="lora", task="repainting", reference_mode="auto", max_image_tokens=TOKENS,
                  keep_pixels_rate=0.8, width=1024, height=1024, crop_to_mask=True, edit_image=img[0])
    with_mask = g.add("ACEPlusCanvas", edit_mask=img[1], **common)
    without = g.add("ACEPlusCanvas", **common)
    for label, node in (("with", with_mask), ("without", without)):
        g.add("ACEPlusTestOnlyProbe", label=f"empty_{kind}_{label}", image=node[0])
    import server  # ComfyUI's web server module: a running server shows progress text under the node

    shown = []
    monkeypatch.setattr(server.PromptServer, "instance", type("Shown", (), {
        "send_progress_text": lambda self, text, node_id: shown.append((text, node_id))})(), raising=False)
    with caplog.at_level(logging.WARNING):
        result = comfy_host.run(g.prompt())
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "regenerated" in r.getMessage()]
    text = (result.outputs.get(with_mask.id) or {}).get("text")
    assert "text" not in (result.outputs.get(without.id) or {})  # no mask connected: edit everything, no warning
    if kind == "marked":
        assert text is None and said == [] and shown == []
        return
    (message,) = text
    assert message.startswith("edit_mask marks no pixel") and "the whole edit_image will be regenerated" in message
    assert "mark it white in the mask" in message and "MaskEditor" in message
    assert len(said) == 1 and message in said[0]
    assert shown == [(f"Warning: {message}", with_mask.id)]
    assert torch.equal(probe(f"empty_{kind}_with"), probe(f"empty_{kind}_without"))  # the same canvas as before
