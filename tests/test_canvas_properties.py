"""Property tests of the ACE++ canvas (both fits, both layouts) and of the resampling helpers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision.transforms as T
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ace_plus_core.canvas import aspect_crop_box, build_canvas
from ace_plus_core.geometry import _exact_sizes, canvas_to_crop, plan_exact
from ace_plus_core.resize import center_crop, pad_constant, resize_bilinear_aa, resize_nearest_exact

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
        assert "too small" in str(e) or "shrink" in str(e), str(e)
        assume(False)


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
        assert g.ref_w % 16 == 0 and (g.edit_w + g.pad_right) % 16 == 0 and (g.edit_h + g.pad_bottom) % 16 == 0
        assert 0 <= g.pad_right < 16 and 0 <= g.pad_bottom < 16
        if edit is None:
            assert g.reference_only and (g.source_h, g.source_w) == (inputs["height"], inputs["width"])
            assert bool((res.mask[i, :, g.ref_w :] == 1).all())
        else:
            assert (g.source_h, g.source_w) == tuple(edit.shape[1:3])
            assert g.crop_box == aspect_crop_box(*edit.shape[1:3])
        if g.scale_x == 1 and g.scale_y == 1 and edit is not None and task == "no_preprocess":
            # At scale 1 the edit area holds the cropped source pixels exactly: a round trip to the pixel.
            rows, cols = g.crop_slice()
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
    for g in res.geometry:
        assert (g.edit_y0, g.edit_h, g.pad_right, g.pad_bottom) == (0, g.canvas_h, 0, 0)
        assert g.edit_x0 + g.edit_w == g.canvas_w
        if inputs["reference_image"] is None:
            assert g.edit_x0 == 0


@st.composite
def aspect_ok(draw, lo=1, hi=3000):
    """(h, w) with an aspect ratio of at most 4:1 (what plan_exact receives after the aspect crop)."""
    h = draw(st.integers(lo, hi))
    return h, draw(st.integers(max(1, -(-h // 4)), 4 * h))


@settings(max_examples=60, **SETTINGS)
@given(
    crop=aspect_ok(),
    ref=st.one_of(st.none(), aspect_ok(8, 240)),
    mode=st.sampled_from(["resize_to_height", "keep_pixels_pad"]),
    rate=st.sampled_from([0.2, 0.8, 1.0]),
    budget=st.integers(1, 8192),
)
def test_plan_exact_is_the_largest_fit(crop, ref, mode, rate, budget):
    ch, cw = crop
    try:
        plan = plan_exact((ch, cw), ref, mode, rate, budget)
    except ValueError as e:
        assert "too small" in str(e)
        return
    assert plan.tokens <= budget and plan.edit_h <= ch
    assert plan.canvas_h % 16 == 0 and plan.canvas_w % 16 == 0
    if plan.edit_h < ch:  # one more row would not fit
        assert _exact_sizes(plan.edit_h + 1, (ch, cw), ref, mode, rate).tokens > budget


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
        assert torch.equal(center_crop(x, (oh, ow)), T.CenterCrop((oh, ow))(x))
    pads = (seed % 3, seed % 5, seed % 7, seed % 2)
    assert torch.equal(pad_constant(x, *pads, value=0.25), T.Pad(pads, fill=0.25)(x))
