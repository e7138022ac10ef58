"""Fuzzing every node of the pack inside the booted ComfyUI: ``execute`` (and ``validate_inputs``) called directly.

Each case breaks at most one input (half of the cases break none): a widget out of range or of the wrong kind, a
broken IMAGE/MASK (NaN, wrong shape, wrong dtype ...), a wrong model or file. Every case either returns well-formed
outputs or raises a ``ValueError`` whose message names one of the node's inputs; a broken widget must be refused
(by ``execute`` and, before the run, by ``validate_inputs``), and so must a broken image the node uses. The tiny
synthetic models are loaded once per module with ComfyUI's own loaders. Case counts are printed at the end of the
session ("fuzz cases (nodes)").
"""

from __future__ import annotations

import math
import struct

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
import test_fuzz_harness as fz

TALLY = fz.Tally("nodes")
BAD_STRINGS = st.sampled_from(["no_such_value", "", None, 3])
# Inputs that values drawn as good may still make invalid together (a reference shrunk to nothing, a budget too
# small, a mask outside the 4:1 crop, a control image for repainting ...): besides the input a case broke, a
# refusal may name one of them. The other nodes have none: a case that breaks nothing must be accepted.
CANVAS_COMBOS = ("max_image_tokens", "reference_image", "edit_image", "edit_mask", "control_image",
                 "keep_pixels_rate")
PROCESSOR_COMBOS = ("max_seq_length", "reference_image", "edit_image", "edit_mask", "control_image",
                    "keep_pixels_rate", "height", "width")


def _invalid(broken: str | None, combos: tuple[str, ...]) -> tuple[str, ...]:
    """The inputs a refusal may name: the one this case broke and those that may be invalid together."""
    return ((broken,) if broken is not None else ()) + combos


@pytest.fixture(scope="module", autouse=True)
def _summary(request):
    fz.register(request.config, TALLY)


@pytest.fixture(scope="module")
def node(comfy_host):
    return comfy_host.node_class_mappings.__getitem__


def _inputs(cls) -> dict:
    return {i.id: i for i in cls.define_schema().inputs}


def _names(cls) -> tuple[str, ...]:
    return tuple(_inputs(cls))


def _widget_strategy(spec, bad: bool, small: tuple | None = None, extreme: bool = False):
    """Good or bad values of one widget from its schema. Good ones: the schema's ``min`` or ``max`` when this widget
    is the draw's ``extreme``, else a value from ``small`` (the good range to draw from; default the schema's)."""
    from comfy_api.v0_0_2 import io

    if isinstance(spec, (io.Int.Input, io.Float.Input)):
        integer = isinstance(spec, io.Int.Input)
        if bad:
            return fz.widget_values(spec.min, spec.max, integer=integer, bad=True)
        if extreme:
            return st.sampled_from([spec.min, spec.max])
        lo, hi = small or (spec.min, spec.max)
        return st.integers(lo, hi) if integer else st.floats(lo, hi, allow_nan=False)
    if isinstance(spec, io.Combo.Input):
        return BAD_STRINGS if bad else st.sampled_from(spec.options)
    if isinstance(spec, io.Boolean.Input):
        return st.booleans()  # ComfyUI converts with bool(); any value is a valid boolean
    raise AssertionError(spec)


def _draw_widgets(data, cls, broken, small: dict | None = None, skip=()) -> dict:
    """The widgets of one case. At most one numeric widget sits at an edge of its range (``min`` / ``max``) per
    draw, so costs do not multiply (four outpaint sides at 4096 px on a batch of 3); the others draw from
    ``small``. Every edge still comes up, alone; tests/test_fuzz_nodes.py::test_canvas_node_at_its_largest_settings
    runs the expensive ones together."""
    from comfy_api.v0_0_2 import io

    widgets = {name: spec for name, spec in _inputs(cls).items() if name not in skip
               and isinstance(spec, (io.Int.Input, io.Float.Input, io.Combo.Input, io.Boolean.Input))}
    numeric = tuple(n for n, spec in widgets.items() if isinstance(spec, (io.Int.Input, io.Float.Input)))
    extreme = data.draw(st.sampled_from((None,) + numeric), "extreme")
    out = {}
    for name, spec in widgets.items():
        bad = broken == name and not isinstance(spec, io.Boolean.Input)
        out[name] = data.draw(_widget_strategy(spec, bad, (small or {}).get(name), name == extreme), name)
    return out


def _validate_inputs(cls, widgets: dict, broken):
    """``validate_inputs`` with the widget values it takes: True for good ones, a message naming the bad one (as a
    token: the message starts with it or has it delimited)."""
    import inspect

    if "validate_inputs" not in cls.__dict__:
        return
    fn = cls.validate_inputs
    params = inspect.signature(fn).parameters
    result = fn(**{k: v for k, v in widgets.items() if k in params})  # never raises: True or a message
    TALLY.counts.setdefault(f"{cls.__name__}.validate_inputs", [0, 0])[0 if result is True else 1] += 1
    if broken in params and widgets[broken] is not None:  # None: "not given / linked" for validate_inputs
        assert isinstance(result, str) and fz.names_input(result, broken), (broken, result)
    else:
        assert result is True, (broken, result)


def _hw_batch(x) -> tuple[tuple[int, int], int]:
    if isinstance(x, torch.Tensor) and x.ndim in (3, 4) and x.shape[-2] > 0 and x.shape[-3] > 0:
        return (int(x.shape[-3]), int(x.shape[-2])), (int(x.shape[0]) if x.ndim == 4 else 1) or 1
    return (8, 8), 1


good_images = st.one_of(fz.images(kinds=fz.GOOD_IMAGES), fz.images(kinds=fz.GOOD_IMAGES, min_side=16, max_side=64))
bad_images = fz.images(kinds=fz.BAD_IMAGES)


def _images_for(data, broken, with_task: str | None, names=("edit_image", "edit_mask", "reference_image",
                                                           "control_image")):
    edit_name, mask_name, ref_name, ctl_name = names
    edit = fz.pick(data, edit_name, broken, st.one_of(good_images, good_images, st.none()), bad_images)
    hw, batch = _hw_batch(edit)
    guidance_ok = fz.images(hw=hw, batches=(1, batch), kinds=fz.GOOD_IMAGES)
    if with_task == "repainting" or edit is None:
        guidance_ok = st.none()
    elif with_task not in ("contour_repainting", "depth_repainting"):
        guidance_ok = st.one_of(st.none(), guidance_ok)
    return dict(
        edit=edit, hw=hw, batch=batch,
        mask=fz.pick(data, mask_name, broken, fz.masks(hw, batch, kinds=fz.GOOD_MASKS),
                     fz.masks(hw, batch, kinds=fz.BAD_MASKS)),
        ref=fz.pick(data, ref_name, broken, st.one_of(st.none(), fz.images(max_side=40, batches=(1, batch),
                                                                     kinds=fz.GOOD_IMAGES)),
                 fz.images(max_side=40, kinds=fz.BAD_IMAGES)),
        control=fz.pick(data, ctl_name, broken, guidance_ok, fz.images(hw=hw, kinds=fz.BAD_IMAGES)),
    )


def _check_canvas_outputs(canvas, mask, batch, budget):
    fz.assert_image(canvas, "canvas", batch=batch)
    h, w = canvas.shape[1:3]
    assert h % 16 == 0 and w % 16 == 0 and (h // 16) * (w // 16) <= budget
    fz.assert_binary_mask(mask, "mask", batch=batch, hw=(h, w))


# ==================================================================== canvas nodes

CANVAS_SMALL = {"max_image_tokens": (64, 4096), "width": (16, 96), "height": (16, 96), "context_pixels": (0, 64),
                "min_crop_size": (16, 128), "canny_low_threshold": (0, 150), "canny_high_threshold": (150, 2040),
                "mosaic_ratio": (1, 64), "soft_seam_px": (0, 32), "outpaint_top": (0, 48), "outpaint_bottom": (0, 48),
                "outpaint_left": (0, 48), "outpaint_right": (0, 48)}


#: Pixels a canvas case may cost (batch x the larger of the outpainted photo and the token budget's canvas): the
#: widgets' largest settings together run in test_canvas_node_at_its_largest_settings, once.
PIXEL_BUDGET = 4 * 2**20


def _canvas_pixels(widgets: dict, i: dict) -> int:
    def number(name, default):
        v = widgets.get(name)
        return v if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else default

    (h, w), batch = i["hw"], i["batch"]
    photo = (h + number("outpaint_top", 0) + number("outpaint_bottom", 0)) * (
        w + number("outpaint_left", 0) + number("outpaint_right", 0))
    return batch * max(photo, number("max_image_tokens", 4096) * 256)


@pytest.mark.parametrize("settings", [
    dict(max_image_tokens=65536),
    dict(outpaint_top=4096, outpaint_bottom=4096, outpaint_left=4096, outpaint_right=4096),
    dict(min_crop_size=8192, context_pixels=4096, context_margin=4.0),
    dict(width=8192, height=8192, max_image_tokens=65536, edit=False),
], ids=["tokens", "outpaint", "crop", "reference_only"])
def test_canvas_node_at_its_largest_settings(node, settings):
    """The expensive widget edges together, once each (the fuzz population keeps one edge per case)."""
    settings = dict(settings)
    with_edit = settings.pop("edit", True)
    cls = node("ACEPlusCanvas")
    from comfy_api.v0_0_2 import io

    widgets = {name: spec.options[0] if isinstance(spec, io.Combo.Input) and spec.default is None else spec.default
               for name, spec in _inputs(cls).items() if hasattr(spec, "default")}
    widgets = {k: v for k, v in widgets.items() if v is not None} | settings
    g = torch.Generator().manual_seed(3)
    edit = torch.rand((1, 40, 56, 3), generator=g) if with_edit else None
    mask = torch.zeros((1, 40, 56))
    mask[:, 10:30, 20:40] = 1
    ref = torch.rand((1, 32, 24, 3), generator=g)
    canvas, uc, c, out_mask, geometry, _ = cls.execute(**widgets, reference_image=ref, edit_image=edit,
                                                       edit_mask=mask if with_edit else None).result
    _check_canvas_outputs(canvas, out_mask, 1, widgets["max_image_tokens"])
    fz.assert_image(uc, "uc_image", batch=1, hw=canvas.shape[1:3])
    fz.assert_image(c, "c_image", batch=1, hw=canvas.shape[1:3])
    assert len(geometry) == 1


@fz.fuzz_settings(200)
@given(data=st.data())
def test_canvas_node(node, data):
    cls = node("ACEPlusCanvas")
    names = _names(cls)
    # The extra references are fuzzed in test_canvas_options.py.
    skip = ("crop_to_mask", "upscale_crop", "reference_image_2", "reference_image_3")
    broken = data.draw(fz.faults(*[n for n in names if n not in skip]), "broken")
    widgets = _draw_widgets(data, cls, broken, CANVAS_SMALL)
    canny = ("canny_low_threshold", "canny_high_threshold")
    if broken not in canny and widgets["canny_low_threshold"] > widgets["canny_high_threshold"]:
        widgets["canny_low_threshold"], widgets["canny_high_threshold"] = (widgets["canny_high_threshold"],
                                                                           widgets["canny_low_threshold"])
    i = _images_for(data, broken, widgets["task"])
    assume(_canvas_pixels(widgets, i) <= PIXEL_BUDGET)
    _validate_inputs(cls, widgets, broken)
    out = TALLY.call("ACEPlusCanvas", _invalid(broken, CANVAS_COMBOS), lambda: cls.execute(
        **widgets, reference_image=i["ref"], edit_image=i["edit"], edit_mask=i["mask"], control_image=i["control"]
    ).result)
    if broken in widgets or (broken == "edit_image"):
        assert out is fz.REFUSED, f"a broken {broken} was accepted"
    if out is not fz.REFUSED:
        canvas, uc, c, mask, geometry, soft = out
        assert torch.equal(soft, mask) if widgets["soft_seam_px"] == 0 else bool((soft >= mask).all())
        batch = i["batch"] if i["edit"] is not None else _hw_batch(i["ref"])[1] if i["ref"] is not None else 1
        _check_canvas_outputs(canvas, mask, batch, widgets["max_image_tokens"])
        fz.assert_image(uc, "uc_image", batch=batch, hw=canvas.shape[1:3])
        fz.assert_image(c, "c_image", batch=batch, hw=canvas.shape[1:3])
        assert len(geometry) == batch


@pytest.mark.parametrize("node_id", ["ACEPlusLoraProcessor", "ACEPlusFFTProcessor"])
@fz.fuzz_settings(120)
@given(data=st.data())
def test_processor_nodes(node, node_id, data):
    cls = node(node_id)
    names = _names(cls)
    broken = data.draw(fz.faults(*[n for n in names if n != "use_reference"]), "broken")
    widgets = _draw_widgets(data, cls, broken, {"max_seq_length": (1024, 2048)})
    i = _images_for(data, broken, widgets["task_type"])
    _validate_inputs(cls, widgets, broken)
    out = TALLY.call(node_id, _invalid(broken, PROCESSOR_COMBOS), lambda: cls.execute(
        **widgets, reference_image=i["ref"], edit_image=i["edit"], edit_mask=i["mask"], control_image=i["control"]
    ).result)
    if broken in widgets or broken == "edit_image":
        assert out is fz.REFUSED, f"a broken {broken} was accepted"
    if out is not fz.REFUSED:
        *imgs, mask, out_h, out_w, slice_w = out
        budget = widgets["max_seq_length"] * (2 if node_id == "ACEPlusLoraProcessor" else 1)
        _check_canvas_outputs(imgs[0], mask, imgs[0].shape[0], budget)
        for x in imgs:
            fz.assert_image(x, "processor image", hw=imgs[0].shape[1:3])
        assert all(isinstance(v, int) and v >= 0 for v in (out_h, out_w, slice_w)) and slice_w < mask.shape[2]


@st.composite
def _made_canvas(draw, canvas_node):
    """A good canvas from ACE++ Canvas (crop to mask or not, lora or fft), to cut back, stitch, condition."""
    h = draw(st.integers(8, 64))
    hw = (h, draw(st.integers(max(1, -(-h // 4)), min(64, 4 * h))))
    batch = draw(st.sampled_from([1, 2]))
    edit = draw(st.one_of(fz.images(hw=hw, batches=(batch,), kinds=("ok",)), st.none()))
    mask = draw(fz.masks(hw, batch, kinds=("none", "empty", "full", "rect", "soft")))
    ref = draw(st.one_of(st.none(), fz.images(max_side=24, batches=(1,), kinds=("ok",))))
    layout = draw(st.sampled_from(["lora", "fft"]))
    out = canvas_node.execute(
        layout=layout, task="repainting", reference_mode="auto", max_image_tokens=draw(st.sampled_from([64, 256])),
        keep_pixels_rate=0.8, width=max(16, hw[1]), height=max(16, hw[0]), crop_to_mask=draw(st.booleans()),
        min_crop_size=16,
        reference_image=ref, edit_image=edit, edit_mask=mask,
    ).result
    return dict(canvas=out[0], uc=out[1], c=out[2], mask=out[3], geometry=out[4], edit=edit, edit_mask=mask,
                batch=batch if edit is not None else 1, layout=layout)


@fz.fuzz_settings(100)
@given(data=st.data())
def test_cut_back_node(node, data):
    made = data.draw(_made_canvas(node("ACEPlusCanvas")), "canvas")
    cls = node("ACEPlusCutBack")
    g = made["geometry"][0]
    broken = data.draw(fz.faults("image", "geometry"), "broken")
    image = fz.pick(data, "image", broken, fz.images(hw=(g.canvas_h, g.canvas_w), batches=(len(made["geometry"]),),
                                               kinds=fz.GOOD_IMAGES),
                 st.one_of(fz.images(hw=(g.canvas_h, g.canvas_w), kinds=fz.BAD_IMAGES),
                           fz.images(hw=(g.canvas_h + 16, g.canvas_w), kinds=("ok",))))
    geometry = fz.pick(data, "geometry", broken, st.just(made["geometry"]), st.sampled_from([(), "geometry", None]))
    out = TALLY.call("ACEPlusCutBack", _invalid(broken, ()), lambda: cls.execute(image=image, geometry=geometry).result)
    if broken is not None:
        assert out is fz.REFUSED, f"a broken {broken} was accepted"
    if out is not fz.REFUSED:
        fz.assert_image(out[0], "cut back", batch=len(made["geometry"]), hw=(g.crop_h, g.crop_w))


@fz.fuzz_settings(120)
@given(data=st.data())
def test_stitch_node(node, data):
    made = data.draw(_made_canvas(node("ACEPlusCanvas")), "canvas")
    cls = node("ACEPlusStitch")
    g = made["geometry"][0]
    batch = len(made["geometry"])
    broken = data.draw(fz.faults("image", "geometry", "original_image", "mask", "grow_mask_px", "feather_px"), "broken")
    widgets = _draw_widgets(data, cls, broken, {"grow_mask_px": (0, 24), "feather_px": (0, 24)})
    source = (g.source_h, g.source_w)
    image = fz.pick(data, "image", broken,
                    fz.images(hw=(g.canvas_h, g.canvas_w), batches=(batch,), kinds=fz.GOOD_IMAGES),
                 st.one_of(fz.images(hw=(g.canvas_h, g.canvas_w), kinds=fz.BAD_IMAGES),
                           fz.images(hw=(g.canvas_h + 16, g.canvas_w), kinds=("ok",))))
    original = fz.pick(data, "original_image", broken,
                    st.just(made["edit"]) if made["edit"] is not None else st.none(),
                    st.one_of(fz.images(hw=source, kinds=fz.BAD_IMAGES), fz.images(hw=(source[0] + 1, source[1]),
                                                                          kinds=("ok",))))
    mask = fz.pick(data, "mask", broken,
                   st.one_of(st.just(made["edit_mask"]), fz.masks(source, batch, kinds=fz.GOOD_MASKS)),
                fz.masks(source, batch, kinds=fz.BAD_MASKS))
    geometry = fz.pick(data, "geometry", broken, st.just(made["geometry"]), st.sampled_from([(), "geometry", None]))
    _validate_inputs(cls, widgets, broken)
    out = TALLY.call("ACEPlusStitch", _invalid(broken, ()), lambda: cls.execute(
        image=image, geometry=geometry, original_image=original, mask=mask, **widgets).result)
    if broken in ("image", "geometry", "grow_mask_px", "feather_px") or (
        broken == "original_image" and not g.reference_only
    ):
        assert out is fz.REFUSED, f"a broken {broken} was accepted"
    if out is not fz.REFUSED:
        hw = (g.crop_h, g.crop_w) if g.reference_only else source
        fz.assert_image(out[0], "stitched", batch=batch, hw=hw)


# ==================================================================== conditioning nodes


@pytest.fixture(scope="module")
def kit(comfy_host, tiny_models):
    """A VAE and models loaded once with ComfyUI's own loaders, and a prompt conditioning of CLIP-L widths."""
    import comfy.model_patcher
    import comfy.sd
    import tiny_models as factory

    g = torch.Generator().manual_seed(0)
    cond = [[torch.randn(1, 8, 768, generator=g), {"pooled_output": torch.randn(1, 768, generator=g)}]]
    models = {name: comfy.sd.load_diffusion_model(str(tiny_models[name]))
              for name in ("tiny_flux_fill", "tiny_ace_plus_fft", "tiny_flux_dev")}
    models["not_flux"] = comfy.model_patcher.ModelPatcher(torch.nn.Linear(2, 2), torch.device("cpu"),
                                                          torch.device("cpu"))
    return {"vae": comfy.sd.VAE(sd=factory.taesd_vae_state_dict(16, seed=0)), "cond": cond, "models": models}


def _check_conditioning(out, batch: int, hw: tuple[int, int], noise_mask: bool, channels: int):
    *rest, pos, neg, latent = out
    for c in (pos, neg):
        extra = c[0][1]
        concat = extra["concat_latent_image"]
        assert concat.shape == (batch, channels, hw[0] // 8, hw[1] // 8), concat.shape
        assert bool(torch.isfinite(concat).all())
        m = extra["concat_mask"]
        assert bool(torch.isfinite(m).all()) and float(m.min()) >= 0 and float(m.max()) <= 1
    samples = latent["samples"]
    assert samples.shape == (batch, 16, hw[0] // 8, hw[1] // 8) and bool(torch.isfinite(samples).all())
    assert ("noise_mask" in latent) == noise_mask


def _pixels(data, broken, name, hw, batch):
    return fz.pick(data, name, broken, fz.images(hw=hw, batches=(batch,), kinds=fz.GOOD_IMAGES),
                st.one_of(fz.images(hw=hw, kinds=fz.BAD_IMAGES), fz.images(max_side=7, kinds=("ok",))))


def _conditioning_sizes(data):
    h = data.draw(st.sampled_from([8, 16, 17, 33, 48, 64]), "height")
    return (h, data.draw(st.sampled_from([8, 16, 23, 32, 64]), "width")), data.draw(st.sampled_from([1, 2]), "batch")


COND_MASKS = ("empty", "full", "rect", "soft", "bool", "nan", "inf", "b1hw", "other_size_same_aspect")


@fz.fuzz_settings(30)  # every case runs the VAE encoder
@given(data=st.data())
def test_lora_conditioning_node(node, kit, data):
    cls = node("ACEPlusLoraConditioning")
    hw, batch = _conditioning_sizes(data)
    broken = data.draw(fz.faults("pixels", "mask"), "broken")
    pixels = _pixels(data, broken, "pixels", hw, batch)
    mask = fz.pick(data, "mask", broken, fz.masks(hw, batch, kinds=COND_MASKS),
                fz.masks(hw, batch, kinds=("other_size", "batch_mismatch", "ndim_4_bad", "not_a_tensor")))
    noise_mask = data.draw(st.booleans(), "noise_mask")
    out = TALLY.call("ACEPlusLoraConditioning", _invalid(broken, ()), lambda: cls.execute(
        positive=kit["cond"], negative=kit["cond"], vae=kit["vae"], pixels=pixels, mask=mask,
        noise_mask=noise_mask).result)
    if broken is not None:
        assert out is fz.REFUSED, f"a broken {broken} was accepted"
    if out is not fz.REFUSED:
        _check_conditioning(out, _hw_batch(pixels)[1], (hw[0] // 8 * 8, hw[1] // 8 * 8), noise_mask, 16)


@fz.fuzz_settings(30)  # every case runs the VAE encoder
@given(data=st.data())
def test_fft_conditioning_node(node, kit, data):
    cls = node("ACEPlusConditioning")
    hw, batch = _conditioning_sizes(data)
    broken = data.draw(fz.faults("ucpixels", "cpixels", "mask"), "broken")
    uc = _pixels(data, broken, "ucpixels", hw, batch)
    c = _pixels(data, broken, "cpixels", hw, batch)
    mask = fz.pick(data, "mask", broken, fz.masks(hw, batch, kinds=COND_MASKS),
                fz.masks(hw, batch, kinds=("other_size", "batch_mismatch", "ndim_4_bad", "not_a_tensor")))
    noise_mask = data.draw(st.booleans(), "noise_mask")
    out = TALLY.call("ACEPlusConditioning", _invalid(broken, ()), lambda: cls.execute(
        positive=kit["cond"], negative=kit["cond"], vae=kit["vae"], ucpixels=uc, cpixels=c, mask=mask,
        noise_mask=noise_mask).result)
    if broken is not None:
        assert out is fz.REFUSED, f"a broken {broken} was accepted"
    if out is not fz.REFUSED:
        _check_conditioning(out, _hw_batch(uc)[1], (hw[0] // 8 * 8, hw[1] // 8 * 8), noise_mask, 32)


@fz.fuzz_settings(30)  # every case runs the VAE encoder
@given(data=st.data())
def test_canvas_conditioning_node(node, kit, data):
    made = data.draw(_made_canvas(node("ACEPlusCanvas")), "canvas")
    cls = node("ACEPlusCanvasConditioning")
    g = made["geometry"][0]
    canvas_hw = (g.canvas_h, g.canvas_w)
    batch = len(made["geometry"])
    broken = data.draw(fz.faults("model", "uc_image", "c_image", "mask", "geometry"), "broken")
    right = "tiny_flux_fill" if made["layout"] == "lora" else "tiny_ace_plus_fft"
    wrong = "tiny_ace_plus_fft" if made["layout"] == "lora" else "tiny_flux_fill"
    model = kit["models"][fz.pick(data, "model", broken, st.just(right), st.sampled_from([wrong, "tiny_flux_dev",
                                                                                         "not_flux"]))]
    uc = fz.pick(data, "uc_image", broken, st.just(made["uc"]),
              st.one_of(fz.images(hw=canvas_hw, kinds=fz.BAD_IMAGES), fz.images(hw=(canvas_hw[0] + 16, canvas_hw[1]),
                                                                       kinds=("ok",))))
    c = fz.pick(data, "c_image", broken, st.just(made["c"]), fz.images(hw=canvas_hw, kinds=fz.BAD_IMAGES))
    mask = fz.pick(data, "mask", broken, st.one_of(st.just(made["mask"]), fz.masks(canvas_hw, batch, kinds=COND_MASKS)),
                fz.masks(canvas_hw, batch, kinds=("other_size", "batch_mismatch", "ndim_4_bad", "not_a_tensor")))
    geometry = fz.pick(data, "geometry", broken, st.just(made["geometry"]), st.sampled_from([(), "geometry", None]))
    noise_mask = data.draw(st.booleans(), "noise_mask")
    out = TALLY.call("ACEPlusCanvasConditioning", _invalid(broken, ()), lambda: cls.execute(
        model=model, positive=kit["cond"], negative=kit["cond"], vae=kit["vae"], uc_image=uc, c_image=c, mask=mask,
        geometry=geometry, noise_mask=noise_mask).result)
    if broken is not None and not (broken == "c_image" and made["layout"] == "lora"):
        assert out is fz.REFUSED, f"a broken {broken} was accepted"
    if out is not fz.REFUSED:
        assert out[0].model_options["ace_plus_layout"] == made["layout"]
        _check_conditioning(out, batch, canvas_hw, noise_mask, 16 if made["layout"] == "lora" else 32)


# ==================================================================== model nodes


@fz.fuzz_settings(40)
@given(data=st.data())
def test_model_patch_node(node, kit, data):
    """Loaded models, and Fill clones whose img_in is object-patched to any width (as GGUF-style loaders do)."""
    cls = node("ACEPlusModelPatch")
    name = data.draw(st.sampled_from(sorted(kit["models"]) + ["patched img_in"]), "model")
    if name == "patched img_in":
        features = data.draw(st.one_of(st.sampled_from([64, 384, 448]), st.integers(1, 1024)), "img_in features")
        model = kit["models"]["tiny_flux_fill"].clone()
        model.add_object_patch("diffusion_model.img_in", torch.nn.Linear(features, 4))
        layout = {384: "lora", 448: "fft"}.get(features)
    else:
        model = kit["models"][name]
        layout = {"tiny_flux_fill": "lora", "tiny_ace_plus_fft": "fft"}.get(name)
    out = TALLY.call("ACEPlusModelPatch", "model" if layout is None else (), lambda: cls.execute(model=model).result)
    if layout is None:
        assert out is fz.REFUSED
    else:
        assert out[0] is not model and out[0].model_options["ace_plus_layout"] == layout
        assert "ace_plus_layout" not in model.model_options  # the input is untouched


@pytest.fixture(scope="module")
def garbage_dir(comfy_host, tmp_path_factory):
    """A folder registered for loras and diffusion_models where the fuzz writes bad files; unregistered after."""
    import folder_paths

    d = tmp_path_factory.mktemp("fuzz_models")
    for folder in ("loras", "diffusion_models"):
        comfy_host.add_model_dir(folder, d)
    yield d
    for folder in ("loras", "diffusion_models"):
        paths = folder_paths.folder_names_and_paths[folder][0]
        if str(d) in paths:
            paths.remove(str(d))
        folder_paths.filename_list_cache.pop(folder, None)


@st.composite
def _bad_model_file(draw, garbage_dir, tiny_models):
    """A bad model file in ``garbage_dir``: random bytes, a truncated or byte-flipped real file, a pickle or GGUF
    name, a LoRA full of NaN, a full model offered as a LoRA, an empty header."""
    from safetensors.torch import save_file

    kind = draw(st.sampled_from(["random", "truncated", "flipped", "pickle", "gguf", "bin", "nan_lora",
                                 "model_as_lora", "empty_header"]))
    seed = draw(st.integers(0, 10**6))
    if kind in ("truncated", "flipped"):
        src = tiny_models[draw(st.sampled_from(["tiny_fill_lora_peft", "tiny_ace_plus_fft"]))].read_bytes()
    elif kind == "model_as_lora":
        src = tiny_models["tiny_ace_plus_fft"].read_bytes()
    if kind == "random":
        raw, ext = draw(st.binary(max_size=300)), ".safetensors"
    elif kind == "truncated":
        raw, ext = src[: draw(st.integers(0, len(src) - 1))], ".safetensors"
    elif kind == "flipped":
        (n,) = struct.unpack("<Q", src[:8])
        i = draw(st.integers(0, 8 + n - 1))  # a byte of the length or the JSON header
        raw, ext = src[:i] + bytes([src[i] ^ draw(st.integers(1, 255))]) + src[i + 1 :], ".safetensors"
    elif kind in ("pickle", "gguf", "bin"):
        raw, ext = b"\x80\x04" + draw(st.binary(max_size=40)), {"pickle": ".ckpt", "gguf": ".gguf", "bin": ".bin"}[kind]
    elif kind == "model_as_lora":
        raw, ext = src, ".safetensors"
    else:
        raw, ext = None, ".safetensors"
    path = garbage_dir / f"fuzz_{kind}_{seed}{ext}"
    if kind == "nan_lora":
        sd = {"diffusion_model.img_in.lora_A.weight": torch.full((4, 384), math.nan),
              "diffusion_model.img_in.lora_B.weight": torch.zeros(32, 4)}
        save_file(sd, str(path))
    elif kind == "empty_header":
        path.write_bytes(struct.pack("<Q", 2) + b"{}")
    else:
        path.write_bytes(raw)
    return path.name, kind


@fz.fuzz_settings(60)
@given(data=st.data())
def test_lora_loader_node(node, kit, tiny_models, garbage_dir, data):
    cls = node("ACEPlusLoraLoader")
    broken = data.draw(fz.faults("lora_name", "strength_model"), "broken")
    model_name = data.draw(st.sampled_from(["tiny_flux_fill", "tiny_flux_fill", "tiny_ace_plus_fft"]), "model")
    if broken == "lora_name":
        lora, kind = data.draw(_bad_model_file(garbage_dir, tiny_models), "lora_name")
    elif model_name == "tiny_flux_fill":
        lora, kind = data.draw(st.sampled_from(["tiny_fill_lora_peft.safetensors",
                                                "tiny_fill_lora_kohya.safetensors"]), "lora_name"), "good"
    else:  # a LoRA of the model's own layout
        lora, kind = "tiny_fft_lora_peft.safetensors", "good"
    widgets = _draw_widgets(data, cls, broken, skip=("lora_name",))
    model = kit["models"][model_name]
    _validate_inputs(cls, widgets, broken)
    out = TALLY.call("ACEPlusLoraLoader", _invalid(broken, ()), lambda: cls.execute(model=model, lora_name=lora, **widgets).result)
    if broken == "strength_model" or (broken == "lora_name" and kind != "flipped"):
        assert out is fz.REFUSED, f"a broken {broken} ({kind}) was accepted"
    if out is not fz.REFUSED:
        patched = out[0]
        assert patched is model or patched.model is model.model
        assert not model.patches  # the input model is never patched


@fz.fuzz_settings(30)
@given(data=st.data())
def test_fft_loader_node(node, tiny_models, garbage_dir, data):
    cls = node("ACEPlusLoader")
    broken = data.draw(fz.faults("unet_name", "weight_dtype"), "broken")
    if broken == "unet_name":
        unet, kind = data.draw(st.one_of(
            _bad_model_file(garbage_dir, tiny_models),
            st.sampled_from([("tiny_flux_fill.safetensors", "fill"), ("tiny_flux_dev.safetensors", "dev")]),
        ), "unet_name")
    else:
        unet, kind = data.draw(st.sampled_from(["tiny_ace_plus_fft.safetensors",
                                                "tiny_ace_plus_fft_fp8.safetensors"]), "unet_name"), "good"
    weight_dtype = fz.pick(data, "weight_dtype", broken, st.sampled_from(["default", "fp8_e4m3fn", "fp8_e5m2"]),
                        BAD_STRINGS)
    out = TALLY.call("ACEPlusLoader", _invalid(broken, ()), lambda: cls.execute(unet_name=unet, weight_dtype=weight_dtype).result)
    if broken == "weight_dtype" or (broken == "unet_name" and kind not in ("flipped", "model_as_lora")):
        assert out is fz.REFUSED, f"a broken {broken} ({kind}) was accepted"
    if out is not fz.REFUSED:
        assert out[0].model_options["ace_plus_layout"] == "fft"


# ==================================================================== the valid population: must be ACCEPTED
# Every draw below is valid by the README's rules and the widget ranges the node documents (written here, not read
# from the product): photos 24-700 px within 4:1, any float dtype and memory layout, batch 1-2 with batch-1
# reference / mask / control image, every task, both layouts, every reference mode, crop_to_mask on and off, masks
# empty / partial / full. ``execute`` must return (any exception fails the test), ``validate_inputs`` must say True,
# and the outputs must be well formed (tests/test_fuzz_harness.py).

CANVAS_TASKS = ("repainting", "no_preprocess", "recolorizing", "canny_repainting", "mosaic_repainting",
                "contour_repainting", "depth_repainting")
PROCESSOR_TASKS = ("repainting", "no_preprocess", "contour_repainting", "depth_repainting", "recolorizing")
NEEDS_CONTROL = ("contour_repainting", "depth_repainting")


def _out_dtype(edit, ref) -> torch.dtype:
    """Canvases are float32 ComfyUI IMAGEs whatever the inputs' dtypes."""
    return torch.float32


@st.composite
def valid_node_images(draw, tasks, reference_only: bool = True, hi: int = 700) -> dict:
    task = draw(st.sampled_from(tasks))
    hw = draw(fz.valid_hw(hi=hi))
    batch = draw(st.sampled_from([1, 2]))
    edit = draw(fz.valid_images(hw=hw, batch=batch))
    if reference_only and task not in NEEDS_CONTROL and draw(st.integers(0, 7)) == 0:
        edit = None
    control_image = None
    if edit is not None and task != "repainting" and (task in NEEDS_CONTROL or draw(st.booleans())):
        control_image = draw(fz.valid_images(hw=hw, batch=draw(st.sampled_from([1, batch]))))
    ref = draw(st.one_of(st.none(), fz.valid_images(batch=draw(st.sampled_from([1, batch])), hi=hi)))
    return dict(task=task, hw=hw, edit=edit, mask=draw(fz.valid_masks(hw, batch)) if edit is not None else None,
                ref=ref, control=control_image,
                batch=batch if edit is not None else int(ref.shape[0]) if ref is not None else 1)


@st.composite
def valid_canvas_widgets(draw, task: str) -> dict:
    low = draw(st.integers(0, 300))
    return dict(
        layout=draw(st.sampled_from(["lora", "fft"])), task=task,
        reference_mode=draw(st.sampled_from(["auto", "resize_to_height", "keep_pixels_pad"])),
        max_image_tokens=draw(st.one_of(st.sampled_from([64, 256, 1024, 4096]), st.integers(4, 128).map(lambda n: 16 * n))),
        keep_pixels_rate=draw(st.one_of(st.just(0.8), st.floats(0.25, 1.0))),
        width=16 * draw(st.integers(1, 32)), height=16 * draw(st.integers(1, 32)),
        canny_low_threshold=low, canny_high_threshold=draw(st.integers(low, 2040)),
        mosaic_ratio=draw(st.integers(1, 1024)), crop_to_mask=draw(st.booleans()),
        context_margin=draw(st.floats(0.0, 4.0)), context_pixels=draw(st.integers(0, 64)),
        min_crop_size=16 * draw(st.integers(1, 32)), upscale_crop=draw(st.booleans()),
        # repainting_scale and outpainting change the canvas these checks expect: test_canvas_options.py covers them.
        soft_seam_px=draw(st.sampled_from([0, 8])),
    )


def _run_valid_canvas(cls, w: dict, i: dict):
    assert cls.validate_inputs(w["canny_low_threshold"], w["canny_high_threshold"]) is True
    return TALLY.accept("ACEPlusCanvas (valid)", lambda: cls.execute(
        **w, reference_image=i["ref"], edit_image=i["edit"], edit_mask=i["mask"], control_image=i["control"]).result)


@fz.fuzz_settings(60)
@given(i=valid_node_images(CANVAS_TASKS), data=st.data())
def test_canvas_node_accepts_valid_input(node, i, data):
    cls = node("ACEPlusCanvas")
    w = data.draw(valid_canvas_widgets(i["task"]), "widgets")
    canvas, uc, c, mask, geometry, soft = _run_valid_canvas(cls, w, i)
    assert torch.equal(soft, mask) if w["soft_seam_px"] == 0 else bool((soft >= mask).all() and (soft <= 1).all())
    source_hw = i["hw"] if i["edit"] is not None else (w["height"], w["width"])
    region = fz.expected_mask(i["mask"], source_hw, i["batch"]) if i["edit"] is not None else None
    fft = w["layout"] == "fft"
    fz.check_valid_canvas(canvas, mask, geometry, batch=i["batch"], budget=w["max_image_tokens"], source_hw=source_hw,
                       dtype=_out_dtype(i["edit"], i["ref"]), region=region, repaint=i["task"] == "repainting",
                       uc=uc if fft else None, c=c if fft else None)
    if not fft:  # one canvas image: uc_image and c_image are the canvas itself
        assert torch.equal(uc, canvas) and torch.equal(c, canvas)
    if i["edit"] is None:
        assert all(g.reference_only for g in geometry)
    elif not (w["crop_to_mask"] and w["upscale_crop"]):  # no resampling on the way: check the pixels
        TALLY.note("  canvas edit areas checked pixel by pixel", fz.check_untouched_edit_area(
            canvas, mask, geometry, i["edit"], region, i["control"] if i["task"] != "repainting" else None))


@pytest.mark.parametrize("node_id", ["ACEPlusLoraProcessor", "ACEPlusFFTProcessor"])
@fz.fuzz_settings(40)
@given(i=valid_node_images(PROCESSOR_TASKS), data=st.data())
def test_processor_nodes_accept_valid_input(node, node_id, i, data):
    cls = node(node_id)
    fft = node_id == "ACEPlusFFTProcessor"
    w = dict(use_reference=data.draw(st.booleans(), "use_reference"), task_type=i["task"],
             height=16 * data.draw(st.integers(16, 90), "height"), width=16 * data.draw(st.integers(16, 90), "width"),
             max_seq_length=16 * data.draw(st.integers(64, 128), "max_seq_length"))
    if fft:
        w["keep_pixels_rate"] = data.draw(st.one_of(st.just(0.8), st.floats(0.25, 1.0)), "keep_pixels_rate")
    out = TALLY.accept(f"{node_id} (valid)", lambda: cls.execute(
        **w, reference_image=i["ref"], edit_image=i["edit"], edit_mask=i["mask"], control_image=i["control"]).result)
    *imgs, mask, out_h, out_w, slice_w = out
    dtype = _out_dtype(i["edit"], i["ref"])
    h, wd = int(imgs[0].shape[1]), int(imgs[0].shape[2])
    for x in imgs:
        fz.assert_image(x, "processor image", batch=i["batch"], hw=(h, wd), dtype=dtype)
    assert h % 16 == 0 and wd % 16 == 0 and (h // 16) * (wd // 16) <= w["max_seq_length"] * (1 if fft else 2)
    fz.assert_binary_mask(mask, "MASK", batch=i["batch"], hw=(h, wd))
    source_hw = i["hw"] if i["edit"] is not None else (w["height"], w["width"])
    assert (out_h, out_w) == source_hw, ((out_h, out_w), source_hw)
    with_reference = i["ref"] is not None and (w["use_reference"] or i["edit"] is None)
    assert isinstance(slice_w, int) and (slice_w > 0) == with_reference and slice_w < wd, (slice_w, with_reference)
    marked = (mask > 0.5).unsqueeze(-1)
    assert not bool(marked[:, :, :slice_w].any()), "MASK marks the reference strip"
    gray = torch.tensor(0.5, dtype=dtype)
    if fft:  # UC gray under the mask, C gray elsewhere
        assert torch.equal(torch.where(marked, gray, imgs[0]), imgs[0]), "UC_IMAGE is not gray under the mask"
        assert torch.equal(torch.where(marked, imgs[1], gray), imgs[1]), "C_IMAGE is not gray outside the mask"
    elif i["task"] == "repainting":
        assert torch.equal(torch.where(marked, gray, imgs[0]), imgs[0]), "IMAGE is not gray under the mask"


@st.composite
def _valid_made_canvas(draw, canvas_node, budgets=(64, 256, 1024)) -> dict:
    """A canvas from ACE++ Canvas on a valid draw (repainting / no_preprocess), to stitch, cut back, condition."""
    i = draw(valid_node_images(("repainting", "no_preprocess"), reference_only=False))
    w = draw(valid_canvas_widgets(i["task"]))
    w["max_image_tokens"] = draw(st.sampled_from(budgets))
    canvas, uc, c, mask, geometry, _ = _run_valid_canvas(canvas_node, w, i)
    return dict(i, canvas=canvas, uc=uc, c=c, canvas_mask=mask, geometry=geometry, layout=w["layout"])


@fz.fuzz_settings(50)
@given(data=st.data())
def test_stitch_and_cut_back_nodes_accept_valid_input(node, data):
    made = data.draw(_valid_made_canvas(node("ACEPlusCanvas")), "canvas")
    g0, batch = made["geometry"][0], len(made["geometry"])
    decoded = data.draw(fz.valid_images(hw=(g0.canvas_h, g0.canvas_w), batch=batch), "decoded canvas")
    original = data.draw(st.sampled_from([made["edit"], fz.with_layout(made["edit"].contiguous(), "channels_first")]),
                         "original_image")
    mask = data.draw(st.one_of(st.just(made["mask"]), st.none(), fz.valid_masks(made["hw"], batch)), "mask")
    w = dict(grow_mask_px=data.draw(st.one_of(st.just(0), st.integers(0, 24)), "grow_mask_px"),
             feather_px=data.draw(st.one_of(st.just(0), st.integers(0, 24)), "feather_px"),
             color_match=data.draw(st.booleans(), "color_match"))
    stitch_cls, cut_cls = node("ACEPlusStitch"), node("ACEPlusCutBack")
    (out,) = TALLY.accept("ACEPlusStitch (valid)", lambda: stitch_cls.execute(
        image=decoded, geometry=made["geometry"], original_image=original, mask=mask, **w).result)
    TALLY.note("  stitched masks checked pixel by pixel", fz.check_stitched(
        out, original, mask, made["geometry"], decoded, w["grow_mask_px"], w["feather_px"], w["color_match"]))
    (cut,) = TALLY.accept("ACEPlusCutBack (valid)", lambda: cut_cls.execute(image=decoded,
                                                                            geometry=made["geometry"]).result)
    fz.check_cut_back(cut, decoded, made["geometry"])


# The conditioning nodes need a mask (the canvas'), keep soft masks (NaN 0, clamped to [0, 1]), and take a mask of
# another size only at the same aspect ratio: no "none", and LoadImage's 64x64 placeholder is no canvas mask here.
# (uint8 masks: test_conditioning_clamps_an_integer_mask.)
CONDITIONING_MASKS = tuple(k for k in fz.VALID_MASKS if k not in ("none", "placeholder_64", "uint8"))


@fz.fuzz_settings(30)
@given(data=st.data())
def test_conditioning_nodes_accept_valid_input(node, kit, data):
    hw = data.draw(fz.valid_hw(hi=64), "size")  # small: every case runs the VAE encoder (about 1 s at 160x160 x 2)
    batch = data.draw(st.sampled_from([1, 2]), "batch")
    uc = data.draw(fz.valid_images(hw=hw, batch=batch), "pixels")
    mask = data.draw(fz.valid_masks(hw, batch, kinds=CONDITIONING_MASKS), "mask")
    noise_mask = data.draw(st.booleans(), "noise_mask")
    latent_hw = (hw[0] // 8 * 8, hw[1] // 8 * 8)
    common = dict(positive=kit["cond"], negative=kit["cond"], vae=kit["vae"], mask=mask, noise_mask=noise_mask)
    if data.draw(st.booleans(), "fft"):
        c = data.draw(fz.valid_images(hw=hw, batch=batch), "cpixels")
        out = TALLY.accept("ACEPlusConditioning (valid)", lambda: node("ACEPlusConditioning").execute(
            ucpixels=uc, cpixels=c, **common).result)
        _check_conditioning(out, batch, latent_hw, noise_mask, 32)
    else:
        out = TALLY.accept("ACEPlusLoraConditioning (valid)", lambda: node("ACEPlusLoraConditioning").execute(
            pixels=uc, **common).result)
        _check_conditioning(out, batch, latent_hw, noise_mask, 16)


@fz.fuzz_settings(20)
@given(data=st.data())
def test_canvas_conditioning_node_accepts_valid_input(node, kit, data):
    made = data.draw(_valid_made_canvas(node("ACEPlusCanvas"), budgets=(64,)), "canvas")  # small canvases: VAE
    g0, batch = made["geometry"][0], len(made["geometry"])
    model = kit["models"]["tiny_flux_fill" if made["layout"] == "lora" else "tiny_ace_plus_fft"]
    noise_mask = data.draw(st.booleans(), "noise_mask")
    out = TALLY.accept("ACEPlusCanvasConditioning (valid)", lambda: node("ACEPlusCanvasConditioning").execute(
        model=model, positive=kit["cond"], negative=kit["cond"], vae=kit["vae"], uc_image=made["uc"],
        c_image=made["c"], mask=made["canvas_mask"], geometry=made["geometry"], noise_mask=noise_mask).result)
    assert out[0].model_options["ace_plus_layout"] == made["layout"]
    _check_conditioning(out, batch, (g0.canvas_h, g0.canvas_w), noise_mask, 16 if made["layout"] == "lora" else 32)


def test_conditioning_clamps_an_integer_mask(node, kit):
    mask = torch.zeros((1, 32, 32), dtype=torch.uint8)
    mask[:, 8:24, 8:24] = 255
    out = node("ACEPlusLoraConditioning").execute(positive=kit["cond"], negative=kit["cond"], vae=kit["vae"],
                                                  pixels=torch.rand((1, 32, 32, 3)), mask=mask,
                                                  noise_mask=True).result
    concat = out[0][0][1]["concat_mask"]
    assert float(concat.max()) == 1.0 and float(concat.min()) == 0.0
