"""ACE++ Canvas options beyond the official nodes: repainting_scale, several references, soft seams, outpainting.

Every expectation is computed here from the rule it names (float64 numpy, solid colours, scipy), never with the
pack's helpers: the official formula ``edit * (1 - mask * repainting_scale)`` in [-1, 1]; references laid left to
right by colour; the soft mask's gradient only in the sampler's noise mask; the outpainted area's placement and the
original pixels bit for bit after stitching.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from canvas_helpers import build_canvas_around_mask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage

from ace_plus_core.canvas import build_canvas, soft_mask
from ace_plus_core.stitch import cut_back, stitch

pytestmark = pytest.mark.numeric

SHIFT = 2.0**-24  # the canvas stores x - 0.5: values come back within this of the input


def photo(h: int, w: int, b: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.rand((b, h, w, 3), generator=torch.Generator().manual_seed(seed))


def box_mask(h: int, w: int, top: int, left: int, bh: int, bw: int, b: int = 1) -> torch.Tensor:
    m = torch.zeros((b, h, w))
    m[:, top : top + bh, left : left + bw] = 1
    return m


def solid(h: int, w: int, rgb) -> torch.Tensor:
    return torch.tensor(rgb, dtype=torch.float32).view(1, 1, 1, 3).expand(1, h, w, 3).clone()


def faded(x: np.ndarray, m: np.ndarray, scale: float) -> np.ndarray:
    """The official formula in [-1, 1]: y = x * (1 - m * scale), written back to [0, 1]."""
    return ((2 * x - 1) * (1 - m[..., None] * scale) + 1) / 2


# ==================================================================== repainting_scale


@pytest.mark.parametrize("scale", [0.25, 0.5, 0.9])
def test_repainting_scale_is_the_official_formula_on_the_canvas(scale):
    edit, mask = photo(64, 96, seed=1), box_mask(64, 96, 10, 20, 30, 40)
    want = faded(edit[0].double().numpy(), mask[0].double().numpy(), scale)
    lora = build_canvas("lora", "repainting", "resize_to_height", None, edit, mask, 1e6, repainting_scale=scale)
    np.testing.assert_allclose(lora.image[0].double().numpy(), want, rtol=0, atol=1e-6)
    fft = build_canvas("fft", "repainting", "keep_pixels_pad", None, edit, mask, 1e6, repainting_scale=scale)
    inside = mask[0].bool().numpy()
    c, uc = fft.c_image[0].double().numpy(), fft.uc_image[0].double().numpy()
    np.testing.assert_allclose(c[inside], want[inside], rtol=0, atol=1e-6)  # C: the faded content under the mask
    assert (c[~inside] == 0.5).all() and (uc[inside] == 0.5).all()  # C gray elsewhere, UC gray under the mask
    np.testing.assert_allclose(uc[~inside], edit[0].double().numpy()[~inside], rtol=0, atol=SHIFT)


def test_repainting_scale_applies_before_resizing():
    """Downscaled canvas == antialiased bilinear of the faded source (float64), for the whole image and a crop."""
    edit, mask = photo(200, 300, seed=2), box_mask(200, 300, 50, 80, 60, 90)
    src = torch.from_numpy(faded(edit[0].double().numpy(), mask[0].double().numpy(), 0.6)).permute(2, 0, 1)[None]
    r = build_canvas("lora", "repainting", "resize_to_height", None, edit, mask, 64, repainting_scale=0.6)
    g = r.geometry[0]
    want = F.interpolate(src, size=(g.edit_h, g.edit_w), mode="bilinear", align_corners=False, antialias=True)
    got = r.image[0, : g.edit_h, : g.edit_w].double().permute(2, 0, 1)[None]
    np.testing.assert_allclose(got.numpy(), want.clamp(0, 1).numpy(), rtol=0, atol=1e-5)
    r = build_canvas_around_mask("lora", "repainting", "resize_to_height", None, edit, mask, 4096, repainting_scale=0.6)
    g = r.geometry[0]
    crop = src[..., g.crop_top : g.crop_top + g.crop_h, g.crop_left : g.crop_left + g.crop_w]
    want = F.interpolate(crop, size=(g.edit_h, g.edit_w), mode="bilinear", align_corners=False, antialias=True)
    got = r.image[0, : g.edit_h, g.edit_x0 : g.edit_x0 + g.edit_w].double().permute(2, 0, 1)[None]
    assert g.scale_x > 1  # the crop was enlarged: the formula came first
    np.testing.assert_allclose(got.numpy(), want.clamp(0, 1).numpy(), rtol=0, atol=1e-5)


def test_repainting_scale_ends_are_todays_tasks_bit_for_bit():
    edit, mask, ref = photo(48, 80, seed=3), box_mask(48, 80, 5, 9, 20, 30), photo(40, 30, seed=4)
    for layout, mode in (("lora", "resize_to_height"), ("fft", "keep_pixels_pad")):
        def canvas(task, **kw):
            return build_canvas(layout, task, mode, ref, edit, mask, 512, **kw)

        today, one = canvas("repainting"), canvas("repainting", repainting_scale=1.0)
        kept, zero = canvas("no_preprocess"), canvas("repainting", repainting_scale=0.0)
        for a, b in ((today, one), (kept, zero)):
            assert torch.equal(a.image, b.image) and torch.equal(a.mask, b.mask)
            if layout == "fft":
                assert torch.equal(a.uc_image, b.uc_image) and torch.equal(a.c_image, b.c_image)
        # Other tasks keep their guidance: the scale does not touch them.
        assert torch.equal(canvas("recolorizing").image, canvas("recolorizing", repainting_scale=0.3).image)


# ==================================================================== several references


COLOURS = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))


def _ceil16(n: int) -> int:
    return -(-n // 16) * 16


@pytest.mark.parametrize("sizes", [((40, 20), (64, 64), (30, 90)), ((50, 50), None, (20, 70)), (None, (33, 17), None)])
def test_references_are_laid_left_to_right_in_input_order(sizes):
    """resize_to_height: each reference is h x round(w * h / rh), padded (edge-replicated) to a multiple of 16, in
    input order; the mask is 0 over all of them; the edit area and its geometry are exactly those of a canvas without
    references at scale 1."""
    edit, mask = photo(64, 96, seed=5), box_mask(64, 96, 10, 20, 30, 40)
    refs = [None if s is None else solid(*s, c) for s, c in zip(sizes, COLOURS)]
    r = build_canvas("lora", "repainting", "resize_to_height", refs, edit, mask, 1e6)
    alone = build_canvas("lora", "repainting", "resize_to_height", None, edit, mask, 1e6)
    x = 0
    for s, colour in zip(sizes, COLOURS):
        if s is None:
            continue
        strip = _ceil16(max(1, round(s[1] * 64 / s[0])))
        np.testing.assert_allclose(r.image[0, :, x : x + strip].numpy(), np.broadcast_to(colour, (64, strip, 3)),
                                   rtol=0, atol=SHIFT)
        x += strip
    g, g1 = r.geometry[0], alone.geometry[0]
    assert g.edit_x0 == g.ref_w == x and not bool(r.mask[0, :, :x].any())
    assert torch.equal(r.image[:, :, x:], alone.image) and torch.equal(r.mask[:, :, x:], alone.mask)
    same = ("edit_w", "edit_h", "pad_right", "pad_bottom", "crop_top", "crop_left", "crop_h", "crop_w", "scale_x")
    assert all(getattr(g, k) == getattr(g1, k) for k in same)
    decoded = torch.rand((1, g.canvas_h, g.canvas_w, 3))
    assert torch.equal(cut_back(decoded, r.geometry), decoded[:, :, x:][:, : g.edit_h, : g.edit_w])


def test_fft_references_keep_pixels_and_share_the_budget():
    """keep_pixels_pad: a reference taller than rate x edit height shrinks to it, a shorter one keeps its size; each
    is centred vertically on gray. With a small budget the three share it: the canvas stays within the budget."""
    edit = photo(100, 100, seed=6)
    refs = [solid(200, 100, COLOURS[0]), solid(40, 32, COLOURS[1])]
    r = build_canvas("fft", "repainting", "keep_pixels_pad", refs, edit, None, 1e6, 0.8)
    img = r.image[0].numpy()
    # Red: 200x100 -> 80 x 40 (rate 0.8 of 100), rows 10..90 of a 100-row strip, gray above and below.
    np.testing.assert_allclose(img[10:90, :48], np.broadcast_to(COLOURS[0], (80, 48, 3)), atol=SHIFT)
    assert (img[:10, :48] == 0.5).all() and (img[90:100, :48] == 0.5).all()
    # Green: 40 px tall stays 40 x 32, centred: rows 30..70.
    np.testing.assert_allclose(img[30:70, 48:80], np.broadcast_to(COLOURS[1], (40, 32, 3)), atol=SHIFT)
    assert r.geometry[0].edit_x0 == 80
    small = build_canvas("fft", "repainting", "keep_pixels_pad", refs + [solid(64, 64, COLOURS[2])], edit, None, 96)
    g = small.geometry[0]
    assert g.tokens <= 96 and g.edit_x0 > 0 and g.scale_x < 1


def test_reference_errors_name_the_input():
    edit = photo(32, 32)
    with pytest.raises(ValueError, match="reference_image_2 has a batch of 3"):
        build_canvas("lora", "repainting", "resize_to_height", [photo(8, 8), photo(8, 8, b=3)], photo(32, 32, b=2),
                     None, 4096)
    with pytest.raises(ValueError, match="reference_image_3 must be an IMAGE"):
        build_canvas("lora", "repainting", "resize_to_height", [None, None, torch.rand(1, 8, 8, 2)], edit, None, 4096)
    with pytest.raises(ValueError, match="at most 3 references"):
        build_canvas("lora", "repainting", "resize_to_height", [photo(8, 8)] * 4, edit, None, 4096)
    with pytest.raises(ValueError, match="official canvas takes one reference_image"):
        build_canvas("lora", "repainting", "resize_to_height", [photo(8, 8)] * 2, edit, None, 4096, fit="official")


# ==================================================================== soft seams


def test_soft_mask_grows_and_feathers_outward_and_spares_the_references():
    edit, mask = photo(64, 128, seed=7), box_mask(64, 128, 20, 4, 16, 24)  # near the reference: the blur reaches it
    r = build_canvas("lora", "repainting", "resize_to_height", solid(64, 32, COLOURS[0]), edit, mask, 1e6)
    g, px = r.geometry[0], 12
    soft = soft_mask(r.mask, r.geometry, px)[0].numpy()
    binary = r.mask[0].numpy() > 0.5
    grown = ndimage.binary_dilation(binary, np.ones((2 * (px // 2) + 1,) * 2, bool))
    reach = ndimage.binary_dilation(grown, np.ones((2 * 2 * math.ceil(px / 2) + 1,) * 2, bool))
    edit_cols = np.arange(soft.shape[1]) >= g.edit_x0
    assert (soft[grown & edit_cols] == 1).all()  # fully edited where the grown mask is
    ring = reach & ~grown
    assert (soft[ring & edit_cols] > 0).all() and (soft[ring] < 1).all() and (soft[grown & ~edit_cols] == 0).all()
    assert (soft[~reach] == 0).all() and (soft[:, : g.edit_x0] == 0).all()
    # The gradient falls with the distance from the grown mask along a row through its middle.
    row = soft[28, g.edit_x0 + 4 + 24 + px // 2 :]
    assert (np.diff(row[: 2 * math.ceil(px / 2) + 1]) <= 0).all() and row[0] > row[px] >= 0
    assert np.array_equal(soft_mask(r.mask, r.geometry, 0)[0].numpy(), binary.astype(np.float32))


def test_soft_seam_reaches_only_the_noise_mask(comfy_host, tiny_models):
    """ACE++ Canvas soft_mask -> ACE++ Conditioning sampling_mask: concat_mask (what the model sees) stays binary,
    the latent's noise_mask has the gradient; without sampling_mask both are the binary mask."""
    import comfy.sd
    import tiny_models as factory

    nodes = comfy_host.node_class_mappings
    edit, mask = photo(64, 96, seed=8), box_mask(64, 96, 16, 24, 24, 32)
    canvas = nodes["ACEPlusCanvas"].execute(layout="lora", task="repainting", reference_mode="auto",
                                            max_image_tokens=4096, keep_pixels_rate=0.8, width=1024, height=1024,
                                            crop_to_mask=False, soft_seam_px=16, edit_image=edit, edit_mask=mask).result
    image, uc, c, canvas_mask, geometry, soft = canvas
    assert ((soft > 0) & (soft < 1)).any() and torch.equal(canvas_mask, (canvas_mask > 0.5).float())
    model = comfy.sd.load_diffusion_model(str(tiny_models["tiny_flux_fill"]))
    vae = comfy.sd.VAE(sd=factory.taesd_vae_state_dict(16, seed=0))
    cond = [[torch.zeros(1, 8, 768), {"pooled_output": torch.zeros(1, 768)}]]
    run = nodes["ACEPlusCanvasConditioning"].execute
    out = run(model=model, positive=cond, negative=cond, vae=vae, uc_image=uc, c_image=c, mask=canvas_mask,
              geometry=geometry, noise_mask=True, sampling_mask=soft).result
    concat, noise = out[1][0][1]["concat_mask"], out[3]["noise_mask"]
    assert set(torch.unique(concat).tolist()) == {0.0, 1.0}
    assert ((noise > 0) & (noise < 1)).any() and torch.equal(noise[:, 0], soft)
    plain = run(model=model, positive=cond, negative=cond, vae=vae, uc_image=uc, c_image=c, mask=canvas_mask,
                geometry=geometry, noise_mask=True).result
    assert torch.equal(plain[3]["noise_mask"], plain[1][0][1]["concat_mask"])


# ==================================================================== outpainting


@pytest.mark.parametrize("pads", [(0, 0, 0, 64), (16, 24, 8, 0), (8, 8, 8, 8)])
def test_outpainting_places_the_photo_and_masks_the_new_area(pads):
    t, b, lf, r = pads
    edit = photo(48, 64, seed=9)
    res = build_canvas("lora", "repainting", "resize_to_height", None, edit, None, 1e6, outpaint=pads)
    g = res.geometry[0]
    H, W = 48 + t + b, 64 + lf + r
    assert (g.source_h, g.source_w, g.edit_h, g.edit_w) == (H, W, H, W)
    new = np.ones((H, W), bool)
    new[t : t + 48, lf : lf + 64] = False
    m, img = res.mask[0, :H, :W].numpy(), res.image[0, :H, :W].numpy()
    assert np.array_equal(m > 0.5, new)  # exactly the new area is generated
    assert (img[new] == 0.5).all()  # blank gray, as repainting expects
    np.testing.assert_allclose(img[t : t + 48, lf : lf + 64], edit[0].numpy(), rtol=0, atol=SHIFT)


@pytest.mark.parametrize("crop", [False, True])
def test_stitch_returns_the_enlarged_photo_with_the_original_bit_exact(crop):
    h, w, (t, b, lf, r) = (96, 128, (0, 0, 32, 96)) if not crop else (96, 512, (0, 0, 0, 96))
    edit = photo(h, w, seed=10)
    build = build_canvas_around_mask if crop else build_canvas
    res = build("lora", "repainting", "resize_to_height", None, edit, None, 4096, outpaint=(t, b, lf, r))
    g = res.geometry[0]
    H, W = h + t + b, w + lf + r
    decoded = torch.rand((1, g.canvas_h, g.canvas_w, 3), generator=torch.Generator().manual_seed(1))
    out = stitch(decoded, res.geometry, edit, None, 8, 16)
    assert out.shape == (1, H, W, 3) and out.dtype == torch.float32
    assert torch.equal(out[0, t : t + h, lf : lf + w], edit[0])  # no feathering into the original
    generated = cut_back(decoded, res.geometry)[0]  # the generated area at its size in the enlarged image
    full = torch.full((H, W, 3), float("nan"))
    full[g.crop_top : g.crop_top + g.crop_h, g.crop_left : g.crop_left + g.crop_w] = generated
    new = torch.ones((H, W), dtype=torch.bool)
    new[t : t + h, lf : lf + w] = False
    assert torch.equal(out[0][new], full[new])  # the new area is the generated pixels, none of them NaN
    if crop:  # the crop holds the new strips and some context, not the whole photo
        assert g.crop_w < W and g.crop_left > 0


def test_outpainting_with_a_mask_edits_the_new_area_and_the_marked_pixels():
    edit, mask = photo(64, 64, seed=11), box_mask(64, 64, 20, 20, 10, 10)
    res = build_canvas("lora", "repainting", "resize_to_height", None, edit, mask, 1e6, outpaint=(0, 0, 0, 32))
    assert res.mask[0, 20:30, 20:30].eq(1).all() and res.mask[0, :, 64:96].eq(1).all()
    assert int(res.mask[0].sum()) == 100 + 64 * 32
    decoded = torch.rand((1, res.geometry[0].canvas_h, res.geometry[0].canvas_w, 3))
    out = stitch(decoded, res.geometry, edit, mask, 2, 4)
    keep = ~ndimage.binary_dilation(mask[0].numpy() > 0.5, np.ones((3, 3), bool), iterations=2 + 2 * 2)
    assert np.array_equal(out[0, :, :64].numpy()[keep], edit[0].numpy()[keep])


def test_outpainting_errors_name_the_input():
    edit = photo(32, 32)
    with pytest.raises(ValueError, match="outpaint_left"):
        build_canvas("lora", "repainting", "resize_to_height", None, edit, None, 4096, outpaint=(0, 0, -8, 0))
    with pytest.raises(ValueError, match="outpaint_top"):
        build_canvas("lora", "repainting", "resize_to_height", None, edit, None, 4096, outpaint=(5000, 0, 0, 0))
    with pytest.raises(ValueError, match="connect one"):
        build_canvas("lora", "repainting", "resize_to_height", None, None, None, 4096, outpaint=(8, 0, 0, 0))
    res = build_canvas("lora", "repainting", "resize_to_height", None, edit, None, 4096, outpaint=(0, 0, 0, 16))
    with pytest.raises(ValueError, match="original_image is 48x32 but the canvas was made from a 32x32"):
        stitch(torch.rand((1, res.geometry[0].canvas_h, res.geometry[0].canvas_w, 3)), res.geometry, photo(32, 48),
               None)


# ==================================================================== fuzzed


good_pads = st.tuples(*[st.sampled_from([0, 0, 8, 24, 40])] * 4)
options = st.fixed_dictionaries({
    "scale": st.one_of(st.just(1.0), st.floats(0.0, 1.0)),
    "pads": good_pads,
    "refs": st.lists(st.one_of(st.none(), st.tuples(st.integers(8, 80), st.integers(8, 80))), max_size=3),
    "layout": st.sampled_from([("lora", "resize_to_height"), ("fft", "keep_pixels_pad")]),
    "task": st.sampled_from(["repainting", "no_preprocess", "recolorizing"]),
    "crop": st.booleans(),
    "budget": st.sampled_from([256, 1024, 4096]),
    "seam": st.sampled_from([0, 1, 7, 16]),
})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(o=options, hw=st.tuples(st.integers(24, 120), st.integers(24, 120)), seed=st.integers(0, 99))
def test_valid_options_give_well_formed_canvases_and_stitches(o, hw, seed):
    h, w = hw
    edit = photo(h, w, seed=seed)
    mask = box_mask(h, w, h // 4, w // 4, h // 2, w // 2)
    refs = [None if s is None else photo(*s, seed=seed + 1) for s in o["refs"]]
    layout, mode = o["layout"]
    build = build_canvas_around_mask if o["crop"] else build_canvas
    res = build(layout, o["task"], mode, refs, edit, mask, o["budget"], repainting_scale=o["scale"], outpaint=o["pads"])
    g = res.geometry[0]
    t, b, lf, r = o["pads"]
    assert (g.source_h, g.source_w) == (h + t + b, w + lf + r)
    assert g.tokens <= o["budget"] and g.canvas_h % 16 == 0 and g.canvas_w % 16 == 0
    assert res.image.dtype == torch.float32 and float(res.image.min()) >= 0 and float(res.image.max()) <= 1
    assert not bool(res.mask[0, :, : g.edit_x0].any()) and (g.edit_x0 > 0) == any(s is not None for s in o["refs"])
    soft = soft_mask(res.mask, res.geometry, o["seam"])
    assert float(soft.min()) >= 0 and float(soft.max()) <= 1 and not bool(soft[0, :, : g.edit_x0].any())
    decoded = torch.rand((1, g.canvas_h, g.canvas_w, 3))
    out = stitch(decoded, res.geometry, edit, mask, 4, 8)
    assert out.shape == (1, h + t + b, w + lf + r, 3)
    keep = ~ndimage.binary_dilation(mask[0].numpy() > 0.5, np.ones((3, 3), bool), iterations=4 + 8)
    assert np.array_equal(out[0, t : t + h, lf : lf + w].numpy()[keep], edit[0].numpy()[keep])


@pytest.mark.parametrize("name, kwargs", [
    ("repainting_scale", dict(repainting_scale=-0.1)), ("repainting_scale", dict(repainting_scale=1.5)),
    ("repainting_scale", dict(repainting_scale=float("nan"))), ("repainting_scale", dict(repainting_scale=True)),
    ("outpaint_bottom", dict(outpaint=(0, 2.5, 0, 0))), ("outpaint_right", dict(outpaint=(0, 0, 0, 4097))),
])
def test_bad_option_values_are_refused_by_name(name, kwargs):
    with pytest.raises(ValueError, match=name):
        build_canvas("lora", "repainting", "resize_to_height", None, photo(32, 32), None, 4096, **kwargs)
    with pytest.raises(ValueError, match="soft_seam_px"):
        soft_mask(torch.zeros((1, 16, 16)), (), -1)
