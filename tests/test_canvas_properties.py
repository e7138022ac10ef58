"""Property tests of the ACE++ canvas (both fits, both layouts) and of the resampling helpers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms as T
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ace_plus_core.canvas import build_canvas
from ace_plus_core.geometry import canvas_to_crop, plan_exact
from ace_plus_core.resize import center_crop_box, pad_constant, resize_bilinear_aa, resize_nearest_exact

pytestmark = pytest.mark.numeric

SETTINGS = dict(deadline=None, derandomize=True)

sides = st.integers(min_value=8, max_value=240)
budgets = st.integers(min_value=16, max_value=1500)


@st.composite
def canvas_inputs(draw, with_reference=None):
    """Random edit image (odd sizes, sometimes beyond 4:1), mask (rectangles, sometimes empty), reference."""
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    batch = draw(st.integers(1, 2))
    reference_only = draw(st.booleans()) and with_reference is not False
    edit = mask = None
    if not reference_only:
        h, w = draw(sides), draw(sides)
        edit = torch.rand((batch, h, w, 3), generator=g)
        kind = draw(st.sampled_from(["rect", "empty", "none", "soft"]))
        if kind != "none":
            mask = torch.zeros((batch, h, w))
        if kind in ("rect", "soft"):
            # A rectangle around the centre, so that it survives the aspect crop.
            y0, x0 = draw(st.integers(0, h // 2)), draw(st.integers(0, w // 2))
            mask[:, y0 : h - y0 // 2, x0 : w - x0 // 2] = torch.rand((1,), generator=g) if kind == "soft" else 1.0
            mask[:, h // 2, w // 2] = 1.0
    use_ref = with_reference if with_reference is not None else draw(st.booleans())
    ref = torch.rand((draw(st.integers(1, batch)), draw(sides), draw(sides), 3), generator=g) if use_ref else None
    if ref is not None and ref.shape[0] not in (1, batch):
        ref = ref[:1]
    return dict(
        reference_image=ref,
        edit_image=edit,
        edit_mask=mask,
        height=draw(st.integers(16, 200)),
        width=draw(st.integers(16, 200)),
    )


def build(layout, task, reference_mode, inputs, budget, rate, fit):
    try:
        return build_canvas(
            layout, task, reference_mode, max_image_tokens=budget, keep_pixels_rate=rate, fit=fit, **inputs
        )
    except ValueError as e:  # a budget too small for this canvas: a clear error, then skip the example
        msg = str(e)
        # The official fit refuses an explicit mask with marked pixels outside its 4:1 centre crop.
        outside = "edit_mask" in msg and "outside" in msg
        assert "too small" in msg or "shrink" in msg or outside, msg
        assume(False)


def official_crop_box(h, w):
    """(top, left, h, w) of what the official limit_aspect keeps: torchvision CenterCrop to 4:1, read off the pixels
    of a (row, column) index image."""
    size = [int(4 * w), w] if h / w > 4 else [h, int(4 * h)] if w / h > 4 else [h, w]
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    kept = T.CenterCrop(size)(torch.stack([yy, xx]))
    return int(kept[0, 0, 0]), int(kept[1, 0, 0]), int(kept.shape[1]), int(kept.shape[2])


def check_common(res, budget, fit):
    img, mask = res.image, res.mask
    B, H, W, C = img.shape
    assert C == 3 and H % 16 == 0 and W % 16 == 0 and H >= 16 and W >= 16
    assert mask.shape == (B, H, W)
    assert (H // 16) * (W // 16) <= budget
    assert bool(((mask == 0) | (mask == 1)).all())
    assert len(res.geometry) == B
    for i, g in enumerate(res.geometry):
        assert (g.canvas_h, g.canvas_w) == (H, W) and g.tokens <= budget and g.fit == fit
        assert g.edit_x0 == g.ref_w
        assert bool((mask[i, :, : g.ref_w] == 0).all()), "the reference area must not be editable"
        rows, cols = g.edit_area_slice()
        assert img[i, rows, cols].shape[:2] == (g.edit_h, g.edit_w)
        back = canvas_to_crop(img[i : i + 1], g)
        assert back.shape == (1, g.crop_h, g.crop_w, 3)
        assert canvas_to_crop(mask[i : i + 1], g, is_mask=True).shape == (1, g.crop_h, g.crop_w)


def check_gray(res, task, layout):
    marked = res.mask.unsqueeze(-1).expand_as(res.image) > 0.5
    if task == "repainting":
        assert bool((res.image[marked] == 0.5).all()), "repainting: the masked canvas must be 0.5 gray"
    if layout == "fft":
        assert bool((res.uc_image[marked] == 0.5).all()), "UC must be gray under the mask"
        assert torch.equal(res.uc_image[~marked], res.image[~marked])
        assert bool((res.c_image[~marked] == 0.5).all()), "C must be gray outside the mask"
        assert torch.equal(res.c_image[marked], res.image[marked])
        if task == "repainting":
            assert bool((res.c_image == 0.5).all()), "C is all gray for repainting"
    else:
        assert res.uc_image is None and res.c_image is None


@settings(max_examples=70, **SETTINGS)
@given(
    inputs=canvas_inputs(),
    layout=st.sampled_from(["lora", "fft"]),
    task=st.sampled_from(["repainting", "no_preprocess"]),
    reference_mode=st.sampled_from(["resize_to_height", "keep_pixels_pad"]),
    rate=st.sampled_from([0.3, 0.8, 1.0]),
    budget=budgets,
)
def test_exact_fit_properties(inputs, layout, task, reference_mode, rate, budget):
    res = build(layout, task, reference_mode, inputs, budget, rate, "exact")
    check_common(res, budget, "exact")
    check_gray(res, task, layout)
    edit = inputs["edit_image"]
    for i, g in enumerate(res.geometry):
        strip_h, strip_w = g.edit_h + g.pad_bottom, g.edit_w + g.pad_right
        assert g.ref_w % 16 == 0 and strip_w % 16 == 0 and strip_h % 16 == 0
        if edit is None:
            assert g.reference_only and (g.source_h, g.source_w) == (inputs["height"], inputs["width"])
            assert bool((res.mask[i, :, g.ref_w :] == 1).all())
        else:
            h, w = edit.shape[1:3]
            # The exact fit never cuts the edit image: beyond 4:1 its strip is padded to 4:1 instead, unless even
            # the smallest padded strip (short side min(16, s)) exceeds the budget; then the centre 4:1 window.
            assert (g.source_h, g.source_w) == (h, w)
            if g.crop_box != (0, 0, h, w):
                s, long_side = min(h, w), max(h, w)
                assert long_side > 4 * s and g.crop_h * g.crop_w == s * 4 * s
                continue
        if edit is None or max(h, w) <= 4 * min(h, w):
            assert 0 <= g.pad_right < 16 and 0 <= g.pad_bottom < 16
        else:
            assert max(strip_h, strip_w) <= 4 * min(strip_h, strip_w)
            assert min(g.pad_right, g.pad_bottom) < 16  # the long side only reaches a multiple of 16
        if g.scale_x == 1 and g.scale_y == 1 and edit is not None and task == "no_preprocess":
            # At scale 1 the edit area holds the cropped source pixels exactly: a round trip to the pixel.
            rows, cols = slice(g.crop_top, g.crop_top + g.crop_h), slice(g.crop_left, g.crop_left + g.crop_w)
            assert torch.equal(canvas_to_crop(res.image[i : i + 1], g), edit[i : i + 1, rows, cols])


@settings(max_examples=60, **SETTINGS)
@given(
    inputs=canvas_inputs(),
    layout=st.sampled_from(["lora", "fft"]),
    task=st.sampled_from(["repainting", "no_preprocess"]),
    rate=st.sampled_from([0.3, 0.8, 1.0]),
    budget=budgets,
)
def test_official_fit_properties(inputs, layout, task, rate, budget):
    reference_mode = "resize_to_height" if layout == "lora" else "keep_pixels_pad"
    res = build(layout, task, reference_mode, inputs, budget, rate, "official")
    check_common(res, budget, "official")
    check_gray(res, task, layout)
    edit = inputs["edit_image"]
    for g in res.geometry:
        assert (g.edit_y0, g.edit_h, g.pad_right, g.pad_bottom) == (0, g.canvas_h, 0, 0)
        assert g.edit_x0 + g.edit_w == g.canvas_w
        if inputs["reference_image"] is None:
            assert g.edit_x0 == 0
        if edit is not None:
            assert g.crop_box == official_crop_box(*edit.shape[1:3])


@st.composite
def aspect_ok(draw, lo=1, hi=3000):
    """(h, w) with an aspect ratio of at most 4:1 (what plan_exact receives after the aspect crop)."""
    h = draw(st.integers(lo, hi))
    return h, draw(st.integers(max(1, -(-h // 4)), 4 * h))


def ceil16(n):
    return -(-n // 16) * 16


def round_half_up(num, den):
    """round(num / den) for non-negative integers, halves up, in exact integer arithmetic."""
    return (2 * num + den) // (2 * den)


def largest_fit_brute_force(crop, ref, mode, rate, budget):
    """Every edit height 1..crop_h by the rule in plan_exact's docstring; the sizes of the largest that fits.

    Edit area: the crop scaled by s = h / crop_h (width round(crop_w * s)), never a side below min(16, its crop
    side). Reference: resize_to_height -> height h; keep_pixels_pad -> the official rule at the source scale (rate x
    crop_h if the reference is at least that tall, else its own height), times s; width by its aspect. Strips padded
    to multiples of 16; tokens = canvas_h / 16 * canvas_w / 16 <= budget. None when no height fits.
    """
    ch, cw = crop
    best = None
    for h in range(1, ch + 1):
        w = max(1, round_half_up(cw * h, ch))
        if h < min(16, ch) or w < min(16, cw):
            continue
        rh = rw = 0
        if ref is not None:
            Hr, Wr = ref
            if mode == "resize_to_height":
                rh = h
            else:
                th = int(ch * rate) if Hr >= rate * ch else Hr
                rh = max(1, round_half_up(th * h, ch))
            rw = max(1, round_half_up(Wr * rh, Hr))
        canvas_w = (ceil16(rw) if ref is not None else 0) + ceil16(w)
        if (ceil16(h) // 16) * (canvas_w // 16) <= budget:
            best = dict(edit_h=h, edit_w=w, ref_h=rh, ref_w=rw, canvas_h=ceil16(h), canvas_w=canvas_w)
    return best


@settings(max_examples=60, **SETTINGS)
@given(
    crop=aspect_ok(),
    ref=st.one_of(st.none(), aspect_ok(8, 240)),
    mode=st.sampled_from(["resize_to_height", "keep_pixels_pad"]),
    rate=st.sampled_from([0.2, 0.8, 1.0]),
    budget=st.integers(1, 8192),
)
def test_plan_exact_is_the_largest_fit(crop, ref, mode, rate, budget):
    best = largest_fit_brute_force(crop, ref, mode, rate, budget)
    if best is None:
        with pytest.raises(ValueError, match="too small"):
            plan_exact(crop, ref, mode, rate, budget)
        return
    plan = plan_exact(crop, ref, mode, rate, budget)
    got = {k: getattr(plan, k) for k in best}
    assert got == best, f"plan {got}, largest fit by brute force {best}"
    assert plan.tokens <= budget


@settings(max_examples=80, **SETTINGS)
@given(
    h=st.integers(1, 90), w=st.integers(1, 90), oh=st.integers(1, 90), ow=st.integers(1, 90), seed=st.integers(0, 1000)
)
def test_resize_helpers_match_torch_and_torchvision(h, w, oh, ow, seed):
    x = torch.rand((2, 3, h, w), generator=torch.Generator().manual_seed(seed))
    assert torch.equal(resize_nearest_exact(x, (oh, ow)), F.interpolate(x, size=(oh, ow), mode="nearest-exact"))
    assert torch.equal(
        resize_nearest_exact(x, (oh, ow)), T.Resize((oh, ow), interpolation=T.InterpolationMode.NEAREST_EXACT)(x)
    )
    tv = T.Resize((oh, ow), interpolation=T.InterpolationMode.BILINEAR, antialias=True)(x)
    torch.testing.assert_close(resize_bilinear_aa(x, (oh, ow)), tv, atol=1e-6, rtol=0)
    if oh <= h and ow <= w:
        top, left = center_crop_box(x.shape[-2], x.shape[-1], oh, ow)
        assert torch.equal(x[..., top : top + oh, left : left + ow], T.CenterCrop((oh, ow))(x))
    pads = (seed % 3, seed % 5, seed % 7, seed % 2)
    assert torch.equal(pad_constant(x, *pads, value=0.25), T.Pad(pads, fill=0.25)(x))
