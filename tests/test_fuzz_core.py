"""Fuzzing the core (no ComfyUI): every input either gives well-formed outputs or a ValueError naming an input.

Well-formed: images ``[B, H, W, 3]`` finite in [0, 1], masks ``[B, H, W]`` in {0, 1}, sizes as documented (canvases in
multiples of 16 within the token budget, cut-backs at the crop box size, stitched photos at the source size).
Anything else (another exception type, a message naming no input, a NaN in an output) fails. Inputs are drawn by
hypothesis with a fixed seed (``derandomize``) and bounded counts; the case counts are printed at the end of the
session ("fuzz cases (core)").
"""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
import test_fuzz_harness as fz

from ace_plus_core import control
from ace_plus_core import model_files as mf
from ace_plus_core.canvas import ALL_TASKS, build_canvas, official_processor
from ace_plus_core.crop import ContextSpec
from canvas_helpers import build_canvas_around_mask
from ace_plus_core.geometry import FITS, LAYOUTS, REFERENCE_MODES, canvas_to_crop
from ace_plus_core.masks import normalize_mask
from ace_plus_core.stitch import cut_back, stitch

TALLY = fz.Tally("core")

# Inputs that values drawn as good may still make invalid together (a budget too small for the canvas, a
# reference shrunk to nothing, a mask outside the 4:1 crop, guidance without an edit image or with repainting,
# sizes below one token): besides the input a case broke, a refusal may name one of them.
CANVAS_COMBOS = ("max_image_tokens", "reference_image", "edit_image", "edit_mask", "control_image", "keep_pixels_rate",
                 "height", "width")
OFFICIAL_COMBOS = ("max_seq_length", "reference_image", "edit_image", "edit_mask", "control_image", "keep_pixels_rate",
                   "height", "width")
CROP_COMBOS = CANVAS_COMBOS[:6]  # no height / width: cropping needs an edit image
STITCH_COMBOS = ()


def _option_names(broken: str | None) -> tuple[str, ...]:
    """A broken control_options is reported under the option's own name."""
    return ("low_threshold", "high_threshold", "ratio") if broken == "control_options" else ()


def _invalid(broken: str | None, combos: tuple[str, ...]) -> tuple[str, ...]:
    """The inputs a refusal may name: the one this case broke and those that may be invalid together."""
    return ((broken,) if broken is not None else ()) + combos


@pytest.fixture(scope="module", autouse=True)
def _summary(request):
    fz.register(request.config, TALLY)


def _hw_batch(x) -> tuple[tuple[int, int], int]:
    """(H, W) and batch of an IMAGE-like value, or a stand-in when it has no usable shape."""
    if isinstance(x, torch.Tensor) and x.ndim in (3, 4) and x.shape[-2] > 0 and x.shape[-3] > 0:
        return (int(x.shape[-3]), int(x.shape[-2])), (int(x.shape[0]) if x.ndim == 4 else 1) or 1
    return (8, 8), 1


def _batch_of(edit, ref) -> int:
    for x in (edit, ref):
        if x is not None:
            return _hw_batch(x)[1]
    return 1


def _check_canvas(r, layout: str, batch: int, budget: float) -> None:
    fz.assert_image(r.image, "canvas", batch=batch)
    h, w = int(r.image.shape[1]), int(r.image.shape[2])
    assert h % 16 == 0 and w % 16 == 0 and h >= 16 and w >= 16, (h, w)
    fz.assert_binary_mask(r.mask, "mask", batch=batch, hw=(h, w))
    assert len(r.geometry) == batch
    g = r.geometry[0]
    assert (g.canvas_h, g.canvas_w) == (h, w) and g.tokens <= budget
    assert g.crop_top + g.crop_h <= g.source_h and g.crop_left + g.crop_w <= g.source_w
    if layout == "fft":
        fz.assert_image(r.uc_image, "uc_image", batch=batch, hw=(h, w))
        fz.assert_image(r.c_image, "c_image", batch=batch, hw=(h, w))
    else:
        assert r.uc_image is None and r.c_image is None


good_options = st.one_of(
    st.none(),
    st.fixed_dictionaries({}, optional={
        "low_threshold": fz.widget_values(0, 1000, integer=True, bad=False),
        "high_threshold": fz.widget_values(1000, 2040, integer=True, bad=False),
        "ratio": fz.widget_values(1, 1024, integer=True, bad=False),
    }).filter(lambda o: o.get("low_threshold", 100) <= o.get("high_threshold", 200)),  # the defaults: 100 / 200
)
bad_options = st.one_of(
    st.just({"bogus": 1}),
    st.just([1, 2]),
    st.fixed_dictionaries({"low_threshold": fz.widget_values(0, 2040, integer=True, bad=True)}),
    st.fixed_dictionaries({"ratio": fz.widget_values(1, 1024, integer=True, bad=True)}),
    st.just({"low_threshold": 300, "high_threshold": 100}),
)
good_budgets = st.one_of(st.sampled_from([64, 256, 1024, 4096, 1e9]), fz.widget_values(256, 65536, integer=False,
                                                                                      bad=False), st.just(1))
bad_budgets = st.sampled_from([0, -5, float("nan"), float("inf"), True, None, "4096"])
good_rates = st.one_of(st.none(), fz.widget_values(0.01, 1.0, integer=False, bad=False))
bad_rates = st.sampled_from([0, 0.0, -0.5, 1.5, float("nan"), float("inf"), True, "0.8"])
good_sides = st.one_of(st.sampled_from([1, 16, 17, 100, 16384]), fz.widget_values(1, 64, integer=True, bad=False))
bad_sides = st.sampled_from([0, -3, 16385, 10**9, 2.5, float("nan"), True, None])
good_tasks = st.sampled_from(ALL_TASKS)
bad_strings = st.sampled_from(["no_such_value", "", None, 3, "REPAINTING"])
good_images = st.one_of(fz.images(kinds=fz.GOOD_IMAGES), fz.images(kinds=fz.GOOD_IMAGES, min_side=16, max_side=64))
bad_images = fz.images(kinds=fz.BAD_IMAGES)


def _draw_canvas_inputs(data, broken):
    """The inputs shared by build_canvas / build_canvas_around_mask, one of them broken (``broken``) or none."""
    edit = fz.pick(data, "edit_image", broken, good_images, bad_images)
    hw, batch = _hw_batch(edit)
    task = fz.pick(data, "task", broken, good_tasks, bad_strings)
    # A valid guidance depends on the task: none for repainting, required by contour/depth, optional otherwise.
    guidance_ok = fz.images(hw=hw, batches=(1, batch), kinds=fz.GOOD_IMAGES)
    if task == "repainting":
        guidance_ok = st.none()
    elif task not in control.EXTERNAL_TASKS:
        guidance_ok = st.one_of(st.none(), guidance_ok)
    return dict(
        edit=edit,
        hw=hw,
        batch=batch,
        mask=fz.pick(data, "edit_mask", broken, fz.masks(hw, batch, kinds=fz.GOOD_MASKS),
                     fz.masks(hw, batch, kinds=fz.BAD_MASKS)),
        ref=fz.pick(data, "reference_image", broken,
                 st.one_of(st.none(), fz.images(max_side=40, batches=(1, batch), kinds=fz.GOOD_IMAGES)),
                 st.one_of(fz.images(max_side=40, kinds=fz.BAD_IMAGES), fz.images(max_side=8, batches=(batch + 1,)))),
        guidance=fz.pick(data, "control_image", broken, guidance_ok,
                      st.one_of(fz.images(hw=hw, kinds=fz.BAD_IMAGES), fz.images(max_side=40, kinds=("ok",)))),
        layout=fz.pick(data, "layout", broken, st.sampled_from(LAYOUTS), bad_strings),
        task=task,
        mode=fz.pick(data, "reference_mode", broken, st.sampled_from(REFERENCE_MODES), bad_strings),
        budget=fz.pick(data, "max_image_tokens", broken, good_budgets, bad_budgets),
        rate=fz.pick(data, "keep_pixels_rate", broken, good_rates, bad_rates),
        options=fz.pick(data, "control_options", broken, good_options, bad_options),
    )


CANVAS_FAULTS = ("edit_image", "edit_mask", "reference_image", "control_image", "layout", "task", "reference_mode",
                 "max_image_tokens", "keep_pixels_rate", "control_options", "height", "width", "fit")


@fz.fuzz_settings(300)
@given(st.data())
def test_build_canvas(data):
    broken = data.draw(fz.faults(*CANVAS_FAULTS), "broken")
    i = _draw_canvas_inputs(data, broken)
    edit = data.draw(st.one_of(st.just(i["edit"]), st.just(i["edit"]), st.none()), "reference-only?")
    fit = fz.pick(data, "fit", broken, st.sampled_from(FITS), bad_strings)
    height = fz.pick(data, "height", broken, good_sides, bad_sides)
    width = fz.pick(data, "width", broken, good_sides, bad_sides)
    budget = i["budget"]
    if edit is None and broken != "max_image_tokens":  # a 16384 px blank area at 1e9 tokens is a 3 GB canvas
        budget = min(budget, 16384)
    r = TALLY.call("build_canvas", _invalid(broken, CANVAS_COMBOS + _option_names(broken)), build_canvas,
                   i["layout"], i["task"], i["mode"], i["ref"], edit, i["mask"], budget, i["rate"], height, width,
                   control_image=i["guidance"], fit=fit, control_options=i["options"])
    if broken == "edit_image" and edit is not None:
        assert r is fz.REFUSED, "a broken edit_image was accepted"
    if r is not fz.REFUSED:
        _check_canvas(r, i["layout"], _batch_of(edit, i["ref"]), budget)


OFFICIAL_FAULTS = ("edit_image", "edit_mask", "reference_image", "control_image", "layout", "task_type", "max_seq_length",
                   "keep_pixels_rate", "height", "width")


@fz.fuzz_settings(250)
@given(st.data())
def test_official_processor(data):
    broken = data.draw(fz.faults(*OFFICIAL_FAULTS), "broken")
    i = _draw_canvas_inputs(data, broken)
    edit = data.draw(st.one_of(st.just(i["edit"]), st.just(i["edit"]), st.none()), "reference-only?")
    use_reference = data.draw(st.booleans(), "use_reference")
    msl = fz.pick(data, "max_seq_length", broken, st.one_of(st.sampled_from([16, 512, 1024, 3072]),
                                                         fz.widget_values(1024, 5120, integer=True, bad=False)),
               bad_budgets)
    task = fz.pick(data, "task_type", broken, st.sampled_from(ALL_TASKS[:5]), bad_strings)
    height = fz.pick(data, "height", broken, good_sides, bad_sides)
    width = fz.pick(data, "width", broken, good_sides, bad_sides)
    r = TALLY.call("official_processor", _invalid(broken, OFFICIAL_COMBOS), official_processor, i["layout"], i["ref"], edit, i["mask"],
                   use_reference, task, height, width, msl, i["rate"], control_image=i["guidance"])
    if r is not fz.REFUSED:
        budget = 2 * msl if i["layout"] == "lora" else msl
        _check_canvas(r, i["layout"], _batch_of(edit, i["ref"] if use_reference or edit is None else None), budget)
        g = r.geometry[0]
        assert r.slice_w == g.edit_x0 and (r.out_h, r.out_w) == (g.crop_h, g.crop_w)


CROP_FAULTS = CANVAS_FAULTS[:-3] + ("context",)
CONTEXT_NAMES = ("context_margin", "context_pixels", "min_crop_size")  # how messages call ContextSpec's fields
good_contexts = st.tuples(fz.widget_values(0.0, 4.0, integer=False, bad=False),
                          fz.widget_values(0, 4096, integer=True, bad=False),
                          fz.widget_values(16, 8192, integer=True, bad=False), st.booleans())
bad_contexts = st.one_of(
    st.tuples(fz.widget_values(0.0, 16.0, integer=False, bad=True), st.just(32), st.just(384), st.just(True)),
    st.tuples(st.just(0.25), fz.widget_values(0, 1 << 16, integer=True, bad=True), st.just(384), st.just(True)),
    st.tuples(st.just(0.25), st.just(32), fz.widget_values(1, 1 << 16, integer=True, bad=True), st.just(True)),
)


@fz.fuzz_settings(250)
@given(st.data())
def test_build_canvas_around_mask(data):
    broken = data.draw(fz.faults(*CROP_FAULTS), "broken")
    i = _draw_canvas_inputs(data, broken)
    edit = data.draw(st.one_of(st.just(i["edit"]), st.just(i["edit"]), st.just(i["edit"]), st.none()), "no edit?")
    margin, pixels, min_size, upscale = fz.pick(data, "context", broken, good_contexts, bad_contexts)

    def run():
        context = ContextSpec(margin_rel=margin, margin_px=pixels, min_size=min_size, upscale=upscale)
        return build_canvas_around_mask(i["layout"], i["task"], i["mode"], i["ref"], edit, i["mask"], i["budget"],
                                        i["rate"], context=context, control_image=i["guidance"],
                                        control_options=i["options"])

    invalid = _invalid(broken, CROP_COMBOS + _option_names(broken)) + (CONTEXT_NAMES if broken == "context" else ())
    r = TALLY.call("build_canvas_around_mask", invalid, run)
    if broken == "edit_image" and edit is not None:
        assert r is fz.REFUSED, "a broken edit_image was accepted"
    if r is not fz.REFUSED:
        _check_canvas(r, i["layout"], i["batch"], i["budget"])
        for g in r.geometry:
            assert (g.source_h, g.source_w) == i["hw"]


@st.composite
def _canvas_for_stitch(draw):
    """A valid canvas (crop-to-mask or whole-image, with or without reference) to stitch back."""
    h = draw(st.integers(2, 64))  # keep_pixels_pad shrinks a reference to 0.8 x h: at least 1 px
    hw = (h, draw(st.integers(max(1, -(-h // 4)), min(64, 4 * h))))  # within 4:1: no aspect crop to lose the mask
    batch = draw(st.sampled_from([1, 2]))
    edit = draw(fz.images(hw=hw, batches=(batch,), kinds=("ok",)))
    mask = draw(fz.masks(hw, batch, kinds=("none", "empty", "full", "rect", "soft", "tiny_dot")))
    ref = draw(st.one_of(st.none(), fz.images(max_side=24, batches=(1,), kinds=("ok",))))
    if draw(st.booleans()):
        r = build_canvas_around_mask("lora", "repainting", "resize_to_height", ref, edit, mask, 1024,
                                     context=ContextSpec(min_size=16))
    elif draw(st.booleans()):
        r = build_canvas("fft", "no_preprocess", "keep_pixels_pad", ref, edit, mask, 256, 0.8)
    else:  # reference-only generation: the batch is the reference's
        r = build_canvas("lora", "repainting", "resize_to_height", ref, None, None, 256, None, hw[0], hw[1])
    return r, edit, mask, len(r.geometry)


STITCH_FAULTS = ("image", "original_image", "mask", "geometry", "grow_mask_px", "feather_px", "color_match")


@fz.fuzz_settings(250)
@given(_canvas_for_stitch(), st.data())
def test_stitch(made, data):
    r, edit, mask, batch = made
    g0 = r.geometry[0]
    broken = data.draw(fz.faults(*STITCH_FAULTS), "broken")
    canvas_hw, source_hw = (g0.canvas_h, g0.canvas_w), (g0.source_h, g0.source_w)
    decoded = fz.pick(data, "image", broken, fz.images(hw=canvas_hw, batches=(batch,), kinds=fz.GOOD_IMAGES),
                   st.one_of(fz.images(hw=canvas_hw, batches=(batch,), kinds=fz.BAD_IMAGES),
                             fz.images(hw=(canvas_hw[0] + 16, canvas_hw[1]), kinds=("ok",))))
    original = fz.pick(data, "original_image", broken,
                    st.one_of(st.just(edit), fz.images(hw=source_hw, batches=(1, batch), kinds=fz.GOOD_IMAGES)),
                    st.one_of(fz.images(hw=source_hw, kinds=fz.BAD_IMAGES),
                              fz.images(hw=(source_hw[0] + 1, source_hw[1]), kinds=("ok",)), st.none()))
    stitch_mask = fz.pick(data, "mask", broken,
                          st.one_of(st.just(mask), fz.masks(source_hw, batch, kinds=fz.GOOD_MASKS)),
                       fz.masks(source_hw, batch, kinds=fz.BAD_MASKS))
    geometry = fz.pick(data, "geometry", broken, st.just(r.geometry),
                    st.sampled_from([(), "geometry", None, r.geometry[:1] + r.geometry]))
    grow = fz.pick(data, "grow_mask_px", broken, fz.widget_values(0, 1024, integer=True, bad=False),
                fz.widget_values(0, 4096, integer=True, bad=True))
    feather = fz.pick(data, "feather_px", broken, fz.widget_values(0, 1024, integer=True, bad=False),
                   fz.widget_values(0, 4096, integer=True, bad=True))
    color = fz.pick(data, "color_match", broken, st.booleans(), st.sampled_from([1, None, "yes"]))
    out = TALLY.call("stitch", _invalid(broken, STITCH_COMBOS), stitch, decoded, geometry, original, stitch_mask, grow, feather, color)
    if broken in ("image", "grow_mask_px", "feather_px", "color_match", "geometry") or (
        broken == "original_image" and not g0.reference_only
    ):
        assert out is fz.REFUSED, f"a broken {broken} was accepted"
    if out is not fz.REFUSED:
        hw = (g0.crop_h, g0.crop_w) if g0.reference_only else source_hw
        fz.assert_image(out, "stitched", batch=len(geometry), hw=hw)
        if not g0.reference_only and original is edit and stitch_mask is mask and grow == feather == 0 and not color:
            # Outside the mask the photo is returned as it was (the documented promise; bit for bit).
            keep = torch.from_numpy(~fz.expected_mask(mask, source_hw, batch))
            assert torch.equal(out[keep], edit.expand(batch, -1, -1, -1)[keep])


@fz.fuzz_settings(150)
@given(_canvas_for_stitch(), st.data())
def test_canvas_to_crop(made, data):
    r, _, _, batch = made
    g = r.geometry[0]
    is_mask = data.draw(st.booleans(), "is_mask")
    if is_mask:
        canvas = data.draw(st.one_of(st.just(r.mask), fz.masks((g.canvas_h, g.canvas_w), batch)), "canvas")
    else:
        canvas = data.draw(st.one_of(fz.images(hw=(g.canvas_h, g.canvas_w), batches=(batch,)), fz.images(max_side=40)),
                           "canvas")
    geometry = data.draw(st.one_of(st.just(g), st.just(r.geometry)), "geometry")
    invalid = ("canvas", "geometry") if isinstance(geometry, tuple) else "canvas"  # a tuple is not one geometry
    out = TALLY.call("canvas_to_crop", invalid, canvas_to_crop, canvas, geometry, is_mask=is_mask)
    if out is not fz.REFUSED:
        if is_mask:
            assert out.ndim == 3 and tuple(out.shape[1:]) == (g.crop_h, g.crop_w)
            assert bool(torch.isfinite(out).all()) and float(out.min()) >= 0 and float(out.max()) <= 1
        else:
            assert out.ndim == 4 and tuple(out.shape[1:3]) == (g.crop_h, g.crop_w)
            assert bool(torch.isfinite(out).all()) and float(out.min()) >= 0 and float(out.max()) <= 1


good_ratios = fz.widget_values(1, 1024, integer=True, bad=False)
# The core takes any integer ratio >= 1 (1024 is the canvas node's widget limit, checked by the node).
bad_ratios = st.sampled_from([0, -1, -(10**9), 1.5, math.nan, math.inf, True, None, "1"])
good_thresholds = st.tuples(fz.widget_values(0, 300, integer=True, bad=False), fz.widget_values(300, 2040, integer=True,
                                                                                        bad=False))
# The core's threshold rule: a finite real number >= 0 (no upper bound; 2040 is only the node widget's limit).
_bad_threshold = st.sampled_from([-1, -0.5, -(10**9), math.nan, math.inf, -math.inf, True, None, "1"])
bad_thresholds = st.one_of(st.tuples(_bad_threshold, st.just(200)), st.tuples(st.just(100), _bad_threshold),
                           st.just((300, 100)))


@fz.fuzz_settings(250)
@given(st.data())
def test_control_derived_guidance(data):
    broken = data.draw(fz.faults("image", "ratio", "low_threshold", "task"), "broken")
    image = fz.pick(data, "image", broken, good_images, bad_images)
    hw, _ = _hw_batch(image)
    ratio = fz.pick(data, "ratio", broken, good_ratios, bad_ratios)
    low, high = fz.pick(data, "low_threshold", broken, good_thresholds, bad_thresholds)
    task = fz.pick(data, "task", broken, st.sampled_from(control.DERIVED_TASKS),
                st.sampled_from(control.EXTERNAL_TASKS + ("repainting", "nope", None)))
    calls = {
        "recolorizing": ("control.recolorizing", control.recolorizing, (image,)),
        "mosaic_repainting": ("control.mosaic_repainting", control.mosaic_repainting, (image, ratio)),
        "canny_repainting": ("control.canny_repainting", control.canny_repainting, (image, low, high)),
    }
    # A bad threshold pair may be reported under either threshold (the high one, or the order of the two).
    invalid = ("low_threshold", "high_threshold") if broken == "low_threshold" else _invalid(broken, ())
    if data.draw(st.booleans(), "through derive_guidance") or task not in calls:
        out = TALLY.call("control.derive_guidance", invalid, control.derive_guidance, task, image,
                         low_threshold=low, high_threshold=high, ratio=ratio)
    else:
        name, fn, args = calls[task]
        out = TALLY.call(name, invalid, fn, *args)
    if broken == "image" or (broken == "task") or (broken == "ratio" and task == "mosaic_repainting") or (
        broken == "low_threshold" and task == "canny_repainting"
    ):
        assert out is fz.REFUSED, f"a broken {broken} was accepted"
    if out is not fz.REFUSED:
        fz.assert_image(out, task, hw=hw)
        if task == "canny_repainting":
            assert bool(((out == 0) | (out == 1)).all())


@fz.fuzz_settings(200)
@given(st.data())
def test_normalize_mask(data):
    hw = data.draw(st.tuples(st.integers(1, 48), st.integers(1, 48)), "edit_image")
    batch = data.draw(st.sampled_from([1, 2, 3]))
    mask = data.draw(fz.masks(hw, batch), "edit_mask")
    out = TALLY.call("normalize_mask", "edit_mask", normalize_mask, mask, hw, batch)
    if out is not fz.REFUSED:
        fz.assert_binary_mask(out, "normalized", batch=batch, hw=hw)
        assert np.array_equal(out.numpy() > 0.5, fz.expected_mask(mask, hw, batch)), "not the documented mask rule"


# ==================================================================== model files


@fz.fuzz_settings(250)
@given(data=st.data())
def test_read_header_on_random_bytes(tmp_path_factory, data):
    d = tmp_path_factory.mktemp("fuzz_files", numbered=True)
    kind = data.draw(st.sampled_from(["random", "length_prefix", "json_header", "valid", "valid", "valid"]))
    if kind == "valid":  # a well-formed file, then maybe damaged
        header, offset = {}, 0
        for key in data.draw(st.lists(st.sampled_from(["img_in.weight", "diffusion_model.img_in.weight", "x.w",
                                                        "a.lora_A.weight", "a.lora_B.weight", "input_blocks.0.w",
                                                        "lora_unet_x.lora_down.weight", "__metadata__"]),
                                      max_size=5, unique=True)):
            if key == "__metadata__":
                header[key] = {"format": "pt"}
                continue
            dtype = data.draw(st.sampled_from(sorted(mf.DTYPE_BYTES)))
            shape = data.draw(st.lists(st.integers(0, 6), min_size=1, max_size=3))
            size = mf.DTYPE_BYTES[dtype] * math.prod(shape)
            header[key] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
            offset += size
        text = json.dumps(header).encode()
        raw = struct.pack("<Q", len(text)) + text + b"\1" * offset
        written_header = header
        damage = data.draw(st.sampled_from(["none", "none", "truncate", "flip", "grow_length"]))
        if damage == "truncate" and raw:
            raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
        elif damage == "flip":
            i = data.draw(st.integers(0, len(raw) - 1))
            raw = raw[:i] + bytes([raw[i] ^ data.draw(st.integers(1, 255))]) + raw[i + 1 :]
        elif damage == "grow_length":
            raw = struct.pack("<Q", len(text) + data.draw(st.integers(1, 10**6))) + raw[8:]
    elif kind == "random":
        raw = data.draw(st.binary(max_size=200))
    elif kind == "length_prefix":
        body = data.draw(st.binary(max_size=120))
        n = data.draw(st.one_of(st.just(len(body)), st.integers(0, 2**64 - 1)))
        raw = struct.pack("<Q", n) + body
    else:
        entry = st.fixed_dictionaries({}, optional={
            "dtype": st.sampled_from(["F32", "BF16", "F8_E4M3", "I64", "X9", 3]),
            "shape": st.lists(st.integers(-2, 6), max_size=3),
            "data_offsets": st.lists(st.integers(-4, 300), max_size=3),
        })
        header = data.draw(st.dictionaries(st.sampled_from(["img_in.weight", "x", "__metadata__", "a.lora_A.weight"]),
                                           st.one_of(entry, st.integers(), st.text(max_size=3)), max_size=4))
        text = json.dumps(header).encode()
        raw = struct.pack("<Q", len(text)) + text + b"\0" * data.draw(st.integers(0, 300))
    name = "m" + data.draw(st.sampled_from([".safetensors", ".sft", ".ckpt", ".pt", ".bin", ""]))
    path = d / name
    path.write_bytes(raw)
    intact = kind == "valid" and damage == "none" and name.endswith((".safetensors", ".sft"))
    header = TALLY.call("model_files.read_header", None if intact else "unet_name", mf.read_header, path,
                        "unet_name")
    if header is fz.REFUSED:
        return
    assert header.file_size == len(raw)
    for info in header.tensors.values():
        assert isinstance(info.dtype, str) and all(isinstance(d, int) and d >= 0 for d in info.shape), info
    if intact:  # exactly the tensors written, with their dtypes and shapes
        written = {k: (v["dtype"], tuple(v["shape"])) for k, v in written_header.items() if k != "__metadata__"}
        assert {k: (v.dtype, v.shape) for k, v in header.tensors.items()} == written
    # The readers of a parsed header never fail.
    model = mf.classify_diffusion_model(header)
    assert isinstance(model.describe(), str)
    lora = mf.inspect_lora(header)
    assert isinstance(lora.key_format, str) and lora.modules >= 0
    TALLY.counts.setdefault("model_files.classify_diffusion_model + inspect_lora", [0, 0])[0] += 1


# ==================================================================== the valid population: must be ACCEPTED
# Every draw below is valid by the README's rules (written in the harness and here, not taken from the product):
# photos 24-700 px within 4:1, any float dtype and memory layout, batch 1-2 with batch-1 reference/mask/control,
# every task, both layouts, both reference modes, crop to mask on and off, masks empty/partial/full. A refusal
# (any exception) fails the test, and the outputs must be well formed (tests/test_fuzz_harness.py).

VALID_TASKS = ("repainting", "no_preprocess", "recolorizing", "canny_repainting", "mosaic_repainting",
               "contour_repainting", "depth_repainting")
NEEDS_CONTROL = ("contour_repainting", "depth_repainting")


@st.composite
def valid_canvas_inputs(draw, reference_only: bool = True) -> dict:
    """Valid inputs of build_canvas / build_canvas_around_mask / official_processor (as keyword values)."""
    task = draw(st.sampled_from(VALID_TASKS))
    hw = draw(fz.valid_hw())
    batch = draw(st.sampled_from([1, 2]))
    edit = draw(fz.valid_images(hw=hw, batch=batch))
    if reference_only and task not in NEEDS_CONTROL and draw(st.integers(0, 7)) == 0:
        edit = None  # reference-only generation of height x width
    control_image = None
    if edit is not None and task != "repainting" and (task in NEEDS_CONTROL or draw(st.booleans())):
        control_image = draw(fz.valid_images(hw=hw, batch=draw(st.sampled_from([1, batch]))))
    ref = draw(st.one_of(st.none(), fz.valid_images(batch=draw(st.sampled_from([1, batch])))))
    low = draw(st.integers(0, 300))
    options = draw(st.one_of(st.none(), st.fixed_dictionaries({
        "low_threshold": st.just(low), "high_threshold": st.integers(low, 2040), "ratio": st.integers(1, 1024)})))
    return dict(
        task=task, hw=hw, batch=batch if edit is not None else int(ref.shape[0]) if ref is not None else 1, edit=edit,
        mask=draw(fz.valid_masks(hw, batch)) if edit is not None else None, ref=ref, control=control_image,
        layout=draw(st.sampled_from(["lora", "fft"])),
        mode=draw(st.sampled_from(["resize_to_height", "keep_pixels_pad"])),
        budget=draw(st.one_of(st.sampled_from([64, 256, 1024, 4096]), st.integers(64, 2048))),
        rate=draw(st.one_of(st.none(), st.just(0.8), st.floats(0.25, 1.0))), options=options,
    )


def _out_dtype(i: dict) -> torch.dtype:
    """Canvases are float32 ComfyUI IMAGEs whatever the inputs' dtypes."""
    return torch.float32


def _check_valid_result(r, i: dict, budget: float, source_hw, untouched: bool) -> None:
    region = fz.expected_mask(i["mask"], source_hw, i["batch"]) if i["edit"] is not None else None
    fz.check_valid_canvas(r.image, r.mask, r.geometry, batch=i["batch"], budget=budget, source_hw=source_hw,
                       dtype=_out_dtype(i), region=region, repaint=i["task"] == "repainting", uc=r.uc_image,
                       c=r.c_image)
    assert (r.uc_image is None) == (i["layout"] == "lora")
    if i["edit"] is None:
        assert all(g.reference_only for g in r.geometry) and bool((r.mask[:, :, r.geometry[0].edit_x0 :] == 1).all())
    elif untouched:
        control_image = i["control"] if i["task"] not in ("repainting",) else None
        TALLY.note("  edit areas checked pixel by pixel",
                   fz.check_untouched_edit_area(r.image, r.mask, r.geometry, i["edit"], region, control_image))


@fz.fuzz_settings(70)
@given(valid_canvas_inputs())
def test_build_canvas_accepts_valid_input(i):
    height, width = i["hw"]
    r = TALLY.accept("build_canvas (valid)", build_canvas, i["layout"], i["task"], i["mode"], i["ref"], i["edit"],
                     i["mask"], i["budget"], i["rate"], height, width, control_image=i["control"],
                     control_options=i["options"])
    _check_valid_result(r, i, i["budget"], i["hw"], untouched=True)


@fz.fuzz_settings(60)
@given(valid_canvas_inputs(reference_only=False), st.data())
def test_build_canvas_around_mask_accepts_valid_input(i, data):
    context = ContextSpec(margin_rel=data.draw(st.floats(0.0, 4.0), "context_margin"),
                          margin_px=data.draw(st.integers(0, 64), "context_pixels"),
                          min_size=data.draw(st.integers(16, 512), "min_crop_size"),
                          upscale=data.draw(st.booleans(), "upscale"))
    r = TALLY.accept("build_canvas_around_mask (valid)", build_canvas_around_mask, i["layout"], i["task"],
                     i["mode"], i["ref"], i["edit"], i["mask"], i["budget"], i["rate"], context=context,
                     control_image=i["control"], control_options=i["options"])
    _check_valid_result(r, i, i["budget"], i["hw"], untouched=not context.upscale)


@fz.fuzz_settings(50)
@given(valid_canvas_inputs(), st.data())
def test_official_processor_accepts_valid_input(i, data):
    use_reference = data.draw(st.booleans(), "use_reference")
    max_seq_length = data.draw(st.integers(1024, 2048), "max_seq_length")
    height, width = i["hw"]
    r = TALLY.accept("official_processor (valid)", official_processor, i["layout"], i["ref"], i["edit"], i["mask"],
                     use_reference, i["task"], height, width, max_seq_length, i["rate"], control_image=i["control"],
                     control_options=i["options"])
    with_reference = i["ref"] is not None and (use_reference or i["edit"] is None)
    if not with_reference and i["edit"] is not None:
        i = dict(i, ref=None)
    budget = 2 * max_seq_length if i["layout"] == "lora" else max_seq_length
    _check_valid_result(r, i, budget, i["hw"], untouched=False)
    g = r.geometry[0]
    assert (r.out_h, r.out_w) == i["hw"] == (g.crop_h, g.crop_w), "OUT_H / OUT_W are not the edit image's size"
    assert r.slice_w == g.edit_x0 and (r.slice_w > 0) == with_reference, (r.slice_w, with_reference)


@st.composite
def valid_stitch_case(draw) -> dict:
    """A valid canvas recipe (crop to mask or not) and what comes back from the VAE, to stitch or cut back."""
    hw = draw(fz.valid_hw())
    batch = draw(st.sampled_from([1, 2]))
    edit = draw(fz.valid_images(hw=hw, batch=batch))
    return dict(
        hw=hw, batch=batch, edit=edit, mask=draw(fz.valid_masks(hw, batch)),
        ref=draw(st.one_of(st.none(), fz.valid_images(batch=1, hi=200))),
        layout=draw(st.sampled_from(["lora", "fft"])), task=draw(st.sampled_from(["repainting", "no_preprocess"])),
        mode=draw(st.sampled_from(["resize_to_height", "keep_pixels_pad"])),
        budget=draw(st.sampled_from([64, 256, 1024])), crop=draw(st.booleans()),
        context=ContextSpec(min_size=draw(st.integers(16, 256)), upscale=draw(st.booleans())),
        grow=draw(st.one_of(st.just(0), st.integers(0, 24))), feather=draw(st.one_of(st.just(0), st.integers(0, 24))),
        color_match=draw(st.booleans()),
        # The original: the edit image itself or the same values in another layout; the mask: the canvas' own,
        # none (the whole crop), or another valid mask of the photo.
        original=draw(st.sampled_from([edit, fz.with_layout(edit.contiguous(), "transposed")])),
        stitch_mask=draw(st.one_of(st.just("same"), st.none(), fz.valid_masks(hw, batch))),
    )


def _make_for_stitch(c: dict):
    if c["crop"]:
        r = build_canvas_around_mask(c["layout"], c["task"], c["mode"], c["ref"], c["edit"], c["mask"], c["budget"],
                                     context=c["context"])
    else:
        r = build_canvas(c["layout"], c["task"], c["mode"], c["ref"], c["edit"], c["mask"], c["budget"])
    return r


@fz.fuzz_settings(60)
@given(valid_stitch_case(), st.data())
def test_stitch_and_cut_back_accept_valid_input(c, data):
    r = TALLY.accept("stitch: the canvas (valid)", _make_for_stitch, c)
    g0 = r.geometry[0]
    decoded = data.draw(fz.valid_images(hw=(g0.canvas_h, g0.canvas_w), batch=c["batch"]), "decoded canvas")
    mask = c["mask"] if c["stitch_mask"] == "same" else c["stitch_mask"]
    out = TALLY.accept("stitch (valid)", stitch, decoded, r.geometry, c["original"], mask, c["grow"], c["feather"],
                       c["color_match"])
    TALLY.note("  stitched masks checked pixel by pixel", fz.check_stitched(
        out, c["original"], mask, r.geometry, decoded, c["grow"], c["feather"], c["color_match"]))
    cut = TALLY.accept("cut_back (valid)", cut_back, decoded, r.geometry)
    fz.check_cut_back(cut, decoded, r.geometry)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_stitch_and_cut_back_return_float32(dtype):
    edit = torch.rand((1, 40, 48, 3)).to(dtype)
    mask = torch.zeros((1, 40, 48))
    mask[:, 8:20, 10:30] = 1
    r = build_canvas("lora", "repainting", "resize_to_height", None, edit, mask, 256)
    decoded = torch.rand((1, r.geometry[0].canvas_h, r.geometry[0].canvas_w, 3)).to(dtype)
    assert stitch(decoded, r.geometry, edit, mask, 0, 0, False).dtype == torch.float32
    assert cut_back(decoded, r.geometry).dtype == torch.float32


def test_canvas_is_float32_for_a_float64_edit_image():
    r = build_canvas("fft", "repainting", "keep_pixels_pad", None, torch.rand((1, 32, 32, 3), dtype=torch.float64),
                     None, 256)
    assert r.image.dtype == r.mask.dtype == r.uc_image.dtype == torch.float32
