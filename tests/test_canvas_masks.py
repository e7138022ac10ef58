"""Mask, batch and guidance rules of the ACE++ canvas."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ace_plus_core.canvas import build_canvas, official_processor
from ace_plus_core.masks import normalize_mask
from tolerances import assert_catches, resample_bound, sum_bound

pytestmark = pytest.mark.numeric

#: The canvas stores pixels shifted by -0.5 (the official convention): values come back within 2**-25.
SHIFT_ATOL = 2.0**-24


def rand_image(h, w, b=1, seed=0):
    return torch.rand((b, h, w, 3), generator=torch.Generator().manual_seed(seed))


def rect_mask(h, w, b=1, box=None):
    m = torch.zeros((b, h, w))
    y0, y1, x0, x1 = box or (h // 4, h // 2, w // 4, w // 2)
    m[:, y0:y1, x0:x1] = 1.0
    return m


def torch_nearest_exact(mask, size):
    """The binarized mask through torch's own nearest-exact resize (what the official processors use)."""
    return F.interpolate((mask > 0.5).float().unsqueeze(1), size=size, mode="nearest-exact").squeeze(1)


def bilinear_aa_numpy(img, size):
    """Antialiased bilinear downscale in float64 numpy (triangle filter stretched by the scale, taps renormalized at
    the borders: the PIL / torch antialias rule). img [H, W, C] -> [h, w, C]."""

    def weights(n_in, n_out):
        scale = n_in / n_out
        centres = (np.arange(n_out) + 0.5) * scale
        taps = np.arange(n_in) + 0.5
        w = np.clip(1 - np.abs(taps[None] - centres[:, None]) / scale, 0, None)
        return w / w.sum(axis=1, keepdims=True)

    wy, wx = weights(img.shape[0], size[0]), weights(img.shape[1], size[1])
    return np.einsum("yh,hwc,xw->yxc", wy, img.astype(np.float64), wx)


def exact(task="no_preprocess", layout="lora", **kw):
    kw.setdefault("max_image_tokens", 100_000)
    return build_canvas(layout, task, "resize_to_height", **kw)


# ------------------------------------------------------------------------------------------- normalize_mask


def test_none_is_all_ones():
    m = normalize_mask(None, (5, 7), 2)
    assert m.shape == (2, 5, 7) and bool((m == 1).all())


def test_loadimage_zero_mask_means_no_mask():
    """ComfyUI's LoadImage gives a 64x64 zero mask for images without alpha: edit everything, whatever the size."""
    m = normalize_mask(torch.zeros((1, 64, 64)), (512, 768), 1)
    assert m.shape == (1, 512, 768) and bool((m == 1).all())
    res = official_processor("lora", None, rand_image(512, 768), torch.zeros((1, 64, 64)), max_seq_length=1024)
    assert bool((res.mask == 1).all())


def test_soft_values_are_binarized_at_half():
    m = torch.tensor([[[0.0, 0.5, 0.5001, 1.0, float("nan"), 0.7]]])
    out = normalize_mask(m, (1, 6), 1)
    assert out.tolist() == [[[0.0, 0.0, 1.0, 1.0, 0.0, 1.0]]]
    assert out.dtype == torch.float32


def test_below_threshold_everywhere_means_no_mask():
    assert bool((normalize_mask(torch.full((1, 8, 8), 0.4), (8, 8), 1) == 1).all())


def test_shapes_hw_and_b1hw_are_accepted():
    m = rect_mask(8, 12)
    assert torch.equal(normalize_mask(m[0], (8, 12), 1), m)
    assert torch.equal(normalize_mask(m.unsqueeze(1), (8, 12), 1), m)
    with pytest.raises(ValueError, match="edit_mask must be shaped"):
        normalize_mask(torch.zeros((1, 2, 8, 12)), (8, 12), 1)


def test_aspect_within_one_percent_is_rescaled():
    # 256x171 vs 768x512: 1.497 vs 1.5 (0.2 %).
    m = rect_mask(171, 256, box=(40, 120, 60, 200))
    out = normalize_mask(m, (512, 768), 1)
    assert out.shape == (1, 512, 768)
    assert torch.equal(out, torch_nearest_exact(m, (512, 768)))


def test_aspect_mismatch_is_value_error_naming_both_sizes():
    with pytest.raises(ValueError, match="edit_mask is 512x512 but edit_image is 768x512"):
        normalize_mask(rect_mask(512, 512), (512, 768), 1)
    # Just beyond 1 %: 768x512 (1.5) vs 760x512 (1.484, 1.04 %).
    with pytest.raises(ValueError, match="760x512"):
        normalize_mask(rect_mask(512, 760), (512, 768), 1)


def test_official_processor_never_edits_everything_on_size_mismatch():
    """Official defect 4: the official replaced such a mask by ones; here it is an error."""
    for layout in ("lora", "fft"):
        with pytest.raises(ValueError, match="edit_mask is 512x512 but edit_image is 768x512"):
            official_processor(layout, None, rand_image(512, 768), rect_mask(512, 512))


def test_mask_that_vanishes_when_rescaled_is_value_error():
    m = torch.zeros((1, 1000, 1500))
    m[0, 500, 700] = 1  # a single pixel, lost when rescaled to 10x15
    with pytest.raises(ValueError, match="none is left after rescaling"):
        normalize_mask(m, (10, 15), 1)


def test_empty_rule_is_per_item():
    m = rect_mask(8, 8, b=2)
    m[0] = 0
    out = normalize_mask(m, (8, 8), 2)
    assert bool((out[0] == 1).all()) and torch.equal(out[1], m[1])


def test_empty_items_next_to_rescaled_ones():
    m = rect_mask(16, 24, b=2)
    m[1] = 0
    out = normalize_mask(m, (32, 48), 2)
    assert torch.equal(out[0:1], torch_nearest_exact(m[0:1], (32, 48)))
    assert bool((out[1] == 1).all())


# ------------------------------------------------------------------------------------------- batches


def test_mask_of_batch_one_broadcasts():
    edit, mask = rand_image(32, 48, b=3), rect_mask(32, 48)
    res = exact(edit_image=edit, edit_mask=mask)  # 32x48: scale 1, no padding - the canvas is the input
    assert res.mask.shape[0] == 3 and len(res.geometry) == 3
    for i in range(3):
        assert torch.equal(res.mask[i], mask[0])
        torch.testing.assert_close(res.image[i], edit[i], rtol=0, atol=SHIFT_ATOL)  # each item keeps its own pixels


def test_reference_of_batch_one_broadcasts():
    ref, edit = rand_image(32, 32), rand_image(32, 48, b=2)
    res = exact(reference_image=ref, edit_image=edit)  # the reference already has the edit height: unscaled
    assert res.image.shape == (2, 32, 80, 3) and res.geometry[0].ref_w == 32
    for i in range(2):
        torch.testing.assert_close(res.image[i, :, :32], ref[0], rtol=0, atol=SHIFT_ATOL)
        torch.testing.assert_close(res.image[i, :, 32:], edit[i], rtol=0, atol=SHIFT_ATOL)


def test_reference_batch_for_reference_only_generation():
    res = exact(reference_image=rand_image(32, 32, b=3), height=64, width=64)
    assert res.image.shape[0] == 3 and all(g.reference_only for g in res.geometry)


@pytest.mark.parametrize(
    "kw,names",
    [
        (dict(edit_image=rand_image(32, 48, b=3), edit_mask=rect_mask(32, 48, b=2)), ("edit_mask", "edit_image")),
        (
            dict(edit_image=rand_image(32, 48, b=3), reference_image=rand_image(32, 32, b=2)),
            ("reference_image", "edit_image"),
        ),
        (dict(edit_image=rand_image(32, 48, b=1), edit_mask=rect_mask(32, 48, b=2)), ("edit_mask", "edit_image")),
    ],
)
def test_mismatched_batches_are_value_errors(kw, names):
    with pytest.raises(ValueError) as err:
        exact(**kw)
    msg = str(err.value)
    assert all(n in msg for n in names), msg
    assert "batch of" in msg


def test_mask_without_edit_image_is_ignored_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="ace_plus_core.canvas"):
        res = exact(reference_image=rand_image(32, 32), edit_mask=rect_mask(32, 32), height=48, width=48)
    assert "edit_mask is ignored" in caplog.text
    g = res.geometry[0]
    assert bool((res.mask[0, :, g.edit_x0 :] == 1).all())


# ------------------------------------------------------------------------------------------- aspect crop & mask


def test_aspect_crop_applies_to_the_mask():
    """Official fit: a 5:1 image is centre-cropped to 4:1 (80 columns from 10), the mask with it. The exact fit
    keeps the whole image and mask (it pads to 4:1 instead)."""
    edit = rand_image(20, 100)
    mask = rect_mask(20, 100, box=(0, 20, 10, 30))  # columns 10..29 -> 0..19 after the crop
    res = exact(edit_image=edit, edit_mask=mask, fit="official")
    g = res.geometry[0]
    assert g.crop_box == (0, 10, 20, 80) and (g.canvas_h, g.canvas_w) == (16, 80)  # 20 rows floored to 16
    assert torch.equal(res.mask[0], torch_nearest_exact(mask[:, :, 10:90], (16, 80))[0])
    res = exact(edit_image=edit, edit_mask=mask)
    g = res.geometry[0]
    assert g.crop_box == (0, 0, 20, 100)
    rows, cols = g.edit_area_slice()
    assert torch.equal(res.mask[0, rows, cols], mask[0])


def test_mask_outside_the_official_aspect_crop_is_value_error():
    mask = rect_mask(20, 100, box=(0, 20, 0, 5))
    with pytest.raises(ValueError, match="edit_mask .* outside"):
        exact(edit_image=rand_image(20, 100), edit_mask=mask, fit="official")


# ------------------------------------------------------------------------------------------- tasks & guidance


@pytest.mark.parametrize("guide_hw", [(32, 48), (64, 96), (48, 72)])
def test_guidance_replaces_pixels_under_the_mask(guide_hw):
    """Under the mask: the guidance, resized to the edit image (same aspect) by antialiased bilinear; elsewhere the
    edit pixels. The canvas is the edit image at scale 1 (32x48, no reference), so both are compared directly."""
    edit, mask = rand_image(32, 48, seed=1), rect_mask(32, 48)
    guide = rand_image(*guide_hw, seed=2)
    res = exact(edit_image=edit, edit_mask=mask, control_image=guide)
    g = res.geometry[0]
    assert (g.canvas_h, g.canvas_w, g.edit_x0, g.scale_x, g.scale_y) == (32, 48, 0, 1.0, 1.0)
    expected = bilinear_aa_numpy(guide[0].numpy(), (32, 48))
    m = (mask[0] > 0.5).numpy()
    area = res.image[0].double().numpy()
    # float32 antialiased resampling against float64 numpy, then the canvas' -0.5 shift and back (2 roundings)
    tol = assert_catches(resample_bound(guide_hw, (32, 48)) + sum_bound(2))
    np.testing.assert_allclose(area[m], expected[m], rtol=0, atol=tol)
    np.testing.assert_allclose(area[~m], edit[0].double().numpy()[~m], rtol=0, atol=SHIFT_ATOL)


def test_neural_control_tasks_need_guidance_the_others_derive_it():
    for task in ("contour_repainting", "depth_repainting"):
        with pytest.raises(ValueError, match="needs a control image .* connect one to control_image"):
            exact(task=task, edit_image=rand_image(32, 32), edit_mask=rect_mask(32, 32))
    for task in ("recolorizing", "canny_repainting", "mosaic_repainting"):
        assert exact(task=task, edit_image=rand_image(32, 32), edit_mask=rect_mask(32, 32)).image.shape == (1, 32, 32, 3)
    for task in ("contour_repainting", "depth_repainting", "recolorizing"):
        res = exact(
            task=task, edit_image=rand_image(32, 32), edit_mask=rect_mask(32, 32), control_image=rand_image(32, 32, seed=5)
        )
        assert res.image.shape == (1, 32, 32, 3)


def test_guidance_with_repainting_or_mismatched_aspect_is_value_error():
    with pytest.raises(ValueError, match="repainting"):
        exact(task="repainting", edit_image=rand_image(32, 32), control_image=rand_image(32, 32))
    with pytest.raises(ValueError, match="control_image is 64x32 but edit_image is 32x32"):
        exact(edit_image=rand_image(32, 32), control_image=rand_image(32, 64))


def test_unknown_names_are_value_errors():
    with pytest.raises(ValueError, match="task must be one of"):
        exact(task="inpaint", edit_image=rand_image(32, 32))
    with pytest.raises(ValueError, match="layout"):
        build_canvas("sdxl", "repainting", "resize_to_height", edit_image=rand_image(32, 32))
    with pytest.raises(ValueError, match="reference_mode"):
        build_canvas("lora", "repainting", "stretch", edit_image=rand_image(32, 32))
