"""Parity of ``official_processor`` with the official ACE++ processors (LoRA and FFT ``preprocess``).

``reference_official`` below is an independent re-statement of what the official ``AcePlusLoraProcessor`` /
``AcePlusFFTProcessor.preprocess`` compute (ali-vilab/ACE_plus, workflow/ComfyUI-ACE_Plus, commit f3e410b), using
torchvision and numpy the way they do, for batch item 0 and only for the cases where the official code does not
crash. The cases where it crashes are checked separately against what it evidently meant.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
import torch
import torchvision.transforms as T

from ace_plus_core.canvas import build_canvas, official_processor

ATOL = 1e-6


# ---------------------------------------------------------------------------------------------- the reference


def reference_official(
    layout,
    reference_image=None,
    edit_image=None,
    edit_mask=None,
    use_reference=True,
    task_type="repainting",
    height=1024,
    width=1024,
    max_seq_length=3072,
    keep_pixels_rate=0.8,
):
    """Official processors (item 0).

    Returns dict(image | uc, c, mask, out_h, out_w, slice_w_official, ref_w_pre, pre_w, rW, slice_w_true).
    """
    if not use_reference and edit_image is not None:
        reference_image = None
    if edit_mask is not None and edit_image is not None and tuple(edit_mask.shape[1:3]) != tuple(edit_image.shape[1:3]):
        edit_mask = torch.ones(edit_image.shape[:3])  # official defect 4 (never reached by the parity cases)
    blank = 1.0 if task_type == "repainting" else 0.0

    def limit_aspect(img):
        chw = img.permute(0, 3, 1, 2)[0]
        H, W = chw.shape[-2:]
        if H / W > 4:
            chw = T.CenterCrop([int(4 * W), W])(chw)
        elif W / H > 4:
            chw = T.CenterCrop([H, int(4 * H)])(chw)
        return chw

    ref = limit_aspect(reference_image) - 0.5 if reference_image is not None else None
    if edit_image is None:
        edit = torch.zeros([3, height, width])
        mask = torch.ones([1, height, width])
    else:
        edit = limit_aspect(edit_image) - 0.5
        if edit_mask is None:
            m = np.ones(tuple(edit.shape[-2:]))
        else:
            m = np.where(np.asarray(edit_mask)[0] > 0.5, 1, 0)
        m = m.astype(np.float32) if np.any(m) else np.ones_like(m).astype(np.float32)
        mask = torch.tensor(m).unsqueeze(0)
    edit = edit * (1 - mask * blank)
    out_h, out_w = edit.shape[-2:]

    ref_w_pre = 0
    if ref is not None:
        rh, rw = ref.shape[-2:]
        eh = edit.shape[-2]
        if layout == "lora":
            s = eh / rh
            ref = T.Resize((eh, int(rw * s)), interpolation=T.InterpolationMode.BILINEAR, antialias=True)(ref)
        else:
            if rh >= keep_pixels_rate * eh:
                th = int(eh * keep_pixels_rate)
                s = th / rh
                ref = T.Resize((th, int(rw * s)), interpolation=T.InterpolationMode.BILINEAR, antialias=True)(ref)
            dh = eh - ref.shape[-2]
            ref = T.Pad((0, dh // 2, 0, dh - dh // 2), fill=0, padding_mode="constant")(ref)
        edit = torch.cat([ref, edit], dim=-1)
        mask = torch.cat([torch.zeros([1, ref.shape[1], ref.shape[2]]), mask], dim=-1)
        ref_w_pre = ref.shape[-1]

    H, W = edit.shape[-2:]
    budget = max_seq_length * 2 if layout == "lora" else max_seq_length
    s = min(1.0, math.sqrt(budget / ((H / 16) * (W / 16))))
    rH = int(H * s) // 16 * 16
    rW = int(W * s) // 16 * 16
    slice_w = int(ref_w_pre * s) // 16 * 16
    # The source column each canvas column samples: a column ramp through the same resize (float32 is exact here).
    ramp = torch.arange(W, dtype=torch.float32).expand(1, H, W)
    cols = T.Resize((rH, rW), interpolation=T.InterpolationMode.NEAREST_EXACT, antialias=True)(ramp)[0, 0]
    edit = T.Resize((rH, rW), interpolation=T.InterpolationMode.NEAREST_EXACT, antialias=True)(edit)
    mask = T.Resize((rH, rW), interpolation=T.InterpolationMode.NEAREST_EXACT, antialias=True)(mask)
    out = {"mask": mask, "out_h": out_h, "out_w": out_w, "ref_w_pre": ref_w_pre, "pre_w": W, "rW": rW}
    out["slice_w_true"] = int((cols < ref_w_pre).sum())  # canvas columns that show the reference
    if layout == "lora":
        out["image"] = edit.unsqueeze(0).permute(0, 2, 3, 1) + 0.5
        out["slice_w_official"] = slice_w if slice_w < 30 else slice_w + 30
    else:
        out["c"] = (edit * mask).unsqueeze(0).permute(0, 2, 3, 1) + 0.5
        out["uc"] = (edit * (1 - mask)).unsqueeze(0).permute(0, 2, 3, 1) + 0.5
        out["slice_w_official"] = slice_w if slice_w > 30 else slice_w + 30
    return out


# ---------------------------------------------------------------------------------------------- helpers


def rand_image(h, w, seed, b=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((b, h, w, 3), generator=g)


def soft_mask(h, w, seed, b=1):
    """A soft mask: a blob with values spread over [0, 1] (some just above/below 0.5), zeros elsewhere."""
    g = torch.Generator().manual_seed(seed)
    m = torch.zeros((b, h, w))
    y0, x0 = h // 4, w // 3
    m[:, y0 : y0 + h // 2, x0 : x0 + w // 3] = torch.rand((b, h // 2, w // 3), generator=g)
    return m


def assert_matches(res, ref, layout, item=0):
    assert res.out_h == ref["out_h"] and res.out_w == ref["out_w"]
    torch.testing.assert_close(res.mask[item : item + 1], ref["mask"], atol=ATOL, rtol=0)
    if layout == "lora":
        torch.testing.assert_close(res.image[item : item + 1], ref["image"], atol=ATOL, rtol=0)
        assert res.uc_image is None and res.c_image is None
    else:
        torch.testing.assert_close(res.uc_image[item : item + 1], ref["uc"], atol=ATOL, rtol=0)
        torch.testing.assert_close(res.c_image[item : item + 1], ref["c"], atol=ATOL, rtol=0)


# ---------------------------------------------------------------------------------------------- parity cases

SCENARIOS = {
    # name: (reference hw, edit hw, with mask)
    "reference_only": ((600, 400), None, False),
    "edit_mask": (None, (333, 517), True),
    "edit_nomask": (None, (517, 333), False),
    "ref_edit_mask": ((200, 300), (333, 517), True),
    "tall_ref_edit_mask": ((900, 250), (517, 333), True),
    "small_ref_edit": ((64, 64), (768, 1024), True),
}


@pytest.mark.parametrize("budget", [1024, 3072, 5120])
@pytest.mark.parametrize("task", ["repainting", "no_preprocess"])
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
@pytest.mark.parametrize("layout", ["lora", "fft"])
def test_parity(layout, scenario, task, budget):
    ref_hw, edit_hw, with_mask = SCENARIOS[scenario]
    seed = zlib.crc32(f"{layout}/{scenario}/{task}/{budget}".encode()) % 1000
    ref = rand_image(*ref_hw, seed) if ref_hw else None
    edit = rand_image(*edit_hw, seed + 1) if edit_hw else None
    mask = soft_mask(*edit_hw, seed + 2) if (edit_hw and with_mask) else None
    kw = dict(use_reference=True, task_type=task, height=768, width=1024, max_seq_length=budget)
    rate = {"lora": None, "fft": 0.8}[layout]
    res = official_processor(layout, ref, edit, mask, keep_pixels_rate=rate, **kw)
    expected = reference_official(layout, ref, edit, mask, keep_pixels_rate=0.8, **kw)
    assert_matches(res, expected, layout)
    assert res.slice_w == expected["slice_w_true"]
    g = res.geometry[0]
    assert (g.canvas_h, g.canvas_w) == tuple(res.mask.shape[-2:])
    assert g.edit_x0 == res.slice_w == g.ref_w


@pytest.mark.parametrize("rate", [0.25, 0.5, 0.8, 1.0])
@pytest.mark.parametrize("ref_hw", [(100, 80), (333, 200), (517, 700), (1000, 1000)])
def test_parity_fft_keep_pixels_rate(rate, ref_hw):
    ref, edit, mask = rand_image(*ref_hw, 1), rand_image(517, 333, 2), soft_mask(517, 333, 3)
    kw = dict(use_reference=True, task_type="no_preprocess", max_seq_length=3072, keep_pixels_rate=rate)
    res = official_processor("fft", ref, edit, mask, **kw)
    assert_matches(res, reference_official("fft", ref, edit, mask, **kw), "fft")


def test_parity_use_reference_false():
    ref, edit = rand_image(200, 300, 1), rand_image(333, 517, 2)
    for layout in ("lora", "fft"):
        res = official_processor(layout, ref, edit, None, use_reference=False, task_type="repainting")
        assert_matches(res, reference_official(layout, ref, edit, None, use_reference=False), layout)
        assert res.slice_w == 0
        # Without an edit image the official code keeps the reference even with use_reference=False.
        res = official_processor(layout, ref, None, None, use_reference=False, height=512, width=512)
        assert_matches(
            res, reference_official(layout, ref, None, None, use_reference=False, height=512, width=512), layout
        )
        assert res.slice_w > 0


def test_parity_every_batch_item():
    """Official defect 5 fixed: every item gets its canvas, each equal to the official canvas of that item."""
    edit, mask, ref = rand_image(333, 517, 1, b=3), soft_mask(333, 517, 2, b=3), rand_image(200, 300, 3)
    for layout in ("lora", "fft"):
        res = official_processor(layout, ref, edit, mask, task_type="repainting", max_seq_length=1024)
        assert res.image.shape[0] == res.mask.shape[0] == len(res.geometry) == 3
        for i in range(3):
            expected = reference_official(layout, ref, edit[i : i + 1], mask[i : i + 1], max_seq_length=1024)
            assert_matches(res, expected, layout, item=i)


def test_fit_official_via_build_canvas_matches_processor():
    ref, edit, mask = rand_image(200, 300, 1), rand_image(333, 517, 2), soft_mask(333, 517, 3)
    a = official_processor("lora", ref, edit, mask, max_seq_length=3072)
    b = build_canvas("lora", "repainting", "resize_to_height", ref, edit, mask, 6144, fit="official")
    assert torch.equal(a.image, b.image) and torch.equal(a.mask, b.mask) and a.geometry == b.geometry


# ---------------------------------------------------------------------------------------------- SLICE_W

RED, BLUE = torch.tensor([0.9, 0.1, 0.2]), torch.tensor([0.1, 0.3, 0.8])


def solid(h, w, color):
    return color.view(1, 1, 1, 3).expand(1, h, w, 3).clone()


def assert_true_boundary(res):
    img = res.image[0]
    s = res.slice_w
    gray = torch.full((3,), 0.5)
    is_red = (img - RED).abs().amax(-1) < 1e-6
    is_blue = (img - BLUE).abs().amax(-1) < 1e-6
    is_gray = (img - gray).abs().amax(-1) < 1e-6
    assert bool((is_red | is_gray)[:, :s].all()), "a column before SLICE_W shows the edit image"
    assert bool(is_red[:, :s].any(dim=0).all()), "a column before SLICE_W has no reference pixel"
    assert bool(is_blue[:, s:].all()), "a column from SLICE_W on is not the edit image"


@pytest.mark.parametrize("layout", ["lora", "fft"])
@pytest.mark.parametrize(
    "ref_hw,edit_hw,budget",
    [
        ((200, 300), (333, 517), 1024),
        ((517, 333), (333, 517), 3072),
        ((64, 48), (1000, 700), 5120),
        ((700, 2000), (640, 480), 2048),
        ((300, 301), (301, 300), 1024),
        ((1024, 1024), (1024, 1024), 4096),
    ],
)
def test_slice_w_is_true_boundary(layout, ref_hw, edit_hw, budget):
    res = official_processor(
        layout, solid(*ref_hw, RED), solid(*edit_hw, BLUE), None, task_type="no_preprocess", max_seq_length=budget
    )
    assert_true_boundary(res)


def official_sizes(layout, ref_hw, edit_hw, msl, rate=0.8):
    """The official size arithmetic (as in reference_official): (reference width, pre-resize width, rH, rW)."""
    (rh, rw), (eh, ew) = ref_hw, edit_hw
    if layout == "lora":
        rw = int(rw * (eh / rh))
    elif rh >= rate * eh:
        rw = int(rw * (int(eh * rate) / rh))
    W = rw + ew
    budget = 2 * msl if layout == "lora" else msl
    s = min(1.0, math.sqrt(budget / ((eh / 16) * (W / 16))))
    return rw, W, int(eh * s) // 16 * 16, int(W * s) // 16 * 16


def integer_formula_slice(ref_w, W, rW):
    """Columns j with exact floor((j + 0.5) * W / rW) < ref_w: what nearest-exact would sample in exact arithmetic."""
    return sum(min((2 * j + 1) * W // (2 * rW), W - 1) < ref_w for j in range(rW))


# (pre-resize width W, canvas width rW, reference width): at one canvas column exact arithmetic samples source column
# ref_w, torch's float32 scale samples ref_w - 1 (e.g. 576 -> 464, column 43: exact 54, torch 53), so the true
# boundary is one column right of the integer formula's. Found by scanning all W < 1300, rW < W (about 0.2 % of the
# pairs disagree somewhere); the test re-checks each one.
DISAGREE = [
    (576, 464, 54), (384, 304, 60), (416, 176, 117), (640, 592, 100), (768, 608, 204), (864, 784, 243),
    (672, 400, 63), (480, 464, 225), (224, 48, 63), (448, 368, 126), (832, 352, 247), (800, 688, 225),
]


def construct(layout, W, rW, ref_w):
    """Reference and edit sizes and max_seq_length whose official canvas has exactly these widths (unscaled ref)."""
    ew = W - ref_w
    for H in range(max(16, -(-ew // 4), -(-ref_w // 4)), 4 * min(ew, ref_w) + 1):
        # LoRA: a reference of the edit height keeps its width; FFT: one below 0.8 x the edit height is not resized.
        ref_hw = (H, ref_w) if layout == "lora" else (max(1, -(-ref_w // 4)), ref_w)
        if layout == "fft" and not ref_hw[0] < 0.8 * H:
            continue
        for msl in range(1, 8192):
            _, _, rH, rW2 = official_sizes(layout, ref_hw, (H, ew), msl)
            if rW2 > rW:
                break
            if rW2 == rW and rH >= 16:
                return ref_hw, (H, ew), msl
    raise AssertionError(f"no inputs give {W} -> {rW} columns with a {ref_w} px reference")


def random_sizes(n, seed=7):
    """Random reference/edit sizes (aspect within 4:1) and budgets whose official canvas is valid."""
    rng, out = np.random.default_rng(seed), []
    while len(out) < n:
        layout = ("lora", "fft")[len(out) % 2]
        ref_hw, edit_hw = tuple(int(v) for v in rng.integers(16, 400, 2)), tuple(int(v) for v in rng.integers(16, 480, 2))
        msl = int(rng.integers(16, 2048))
        if max(ref_hw) > 4 * min(ref_hw) or max(edit_hw) > 4 * min(edit_hw):
            continue
        rw, _, rH, rW = official_sizes(layout, ref_hw, edit_hw, msl)
        if rH >= 16 and 0 < rw and integer_formula_slice(rw, rw + edit_hw[1], rW) < rW:
            out.append((layout, ref_hw, edit_hw, msl, False))
    return out


SWEEP = random_sizes(30) + [(lay, *construct(lay, *case), True) for case in DISAGREE for lay in ("lora", "fft")]


@pytest.mark.parametrize(
    "layout,ref_hw,edit_hw,msl,disagree", SWEEP, ids=[f"{c[0]}-{c[1]}-{c[2]}-{c[3]}" for c in SWEEP]
)
def test_slice_w_is_the_first_edit_column_of_the_official_canvas(layout, ref_hw, edit_hw, msl, disagree):
    """SLICE_W == the first column of the official (torchvision) canvas that shows the edit image's colour.

    A red reference and a blue edit image: nearest-exact resampling of a two-colour canvas keeps the boundary sharp,
    so the oracle is read from the pixels of the independent reference canvas.
    """
    ref, edit = solid(*ref_hw, RED), solid(*edit_hw, BLUE)
    kw = dict(task_type="no_preprocess", max_seq_length=msl)
    res = official_processor(layout, ref, edit, None, **kw)
    expected = reference_official(layout, ref, edit, None, **kw)
    assert_matches(res, expected, layout)
    canvas = expected["image" if layout == "lora" else "c"][0]  # C: gray over the reference, the edit pixels after
    is_blue = (canvas - BLUE).abs().amax(-1) < 1e-5
    first = int(is_blue.all(0).float().argmax())
    assert bool(is_blue[:, first:].all()) and not bool(is_blue[:, :first].any()) and first > 0
    assert res.slice_w == first, f"SLICE_W {res.slice_w}, first edit column of the official canvas {first}"
    integer = integer_formula_slice(expected["ref_w_pre"], expected["pre_w"], expected["rW"])
    if disagree:  # the case exists: exact integer arithmetic would cut one reference column into the result
        assert (expected["pre_w"], expected["rW"]) in {(W, rW) for W, rW, _ in DISAGREE}
        assert first == integer + 1
    assert_true_boundary(res)


def test_official_slice_w_hack_is_wrong():
    """Official defect 1, for the record: the +30 'margin' is not the boundary."""
    ref, edit = solid(200, 300, RED), solid(333, 517, BLUE)
    for layout in ("lora", "fft"):
        expected = reference_official(layout, ref, edit, None, task_type="no_preprocess", max_seq_length=1024)
        res = official_processor(layout, ref, edit, None, task_type="no_preprocess", max_seq_length=1024)
        assert res.slice_w != expected["slice_w_official"]
        assert_true_boundary(res)


# ---------------------------------------------------------------------------------------------- official crash cases


@pytest.mark.parametrize("layout", ["lora", "fft"])
def test_aspect_above_4_does_not_crash(layout):
    """Official defect 3: the official writes the cropped tensor into the old shape and crashes. We crop image and
    mask consistently; the result equals the official canvas of the pre-cropped inputs."""
    edit, mask = rand_image(101, 517, 1), soft_mask(101, 517, 2)
    mask[:, 40:60, 200:300] = 1.0  # inside the centre crop
    ref = rand_image(700, 120, 3)
    res = official_processor(layout, ref, edit, mask, task_type="repainting", max_seq_length=1024)
    # 517 > 4 x 101 -> centre 404 columns; offset int(round(113 / 2)) = 56. 700 > 4 x 120 -> 480 rows, offset 110.
    g = res.geometry[0]
    assert g.crop_box == (0, 56, 101, 404) and (g.source_h, g.source_w) == (101, 517)
    assert (res.out_h, res.out_w) == (101, 404)
    expected = reference_official(layout, ref[:, 110:590], edit[:, :, 56:460], mask[:, :, 56:460], max_seq_length=1024)
    assert_matches(res, expected, layout)


def test_keep_pixels_rate_out_of_range_is_value_error():
    ref, edit = rand_image(200, 300, 1), rand_image(333, 517, 2)
    for rate in (0, 0.0, -0.5, 1.5, float("nan")):
        with pytest.raises(ValueError, match="keep_pixels_rate"):
            official_processor("fft", ref, edit, None, keep_pixels_rate=rate)
    with pytest.raises(ValueError, match="keep_pixels_rate"):
        build_canvas("lora", "repainting", "keep_pixels_pad", ref, edit, None, 1024, 0)


def test_keep_pixels_rate_shrinking_reference_to_nothing_is_value_error():
    with pytest.raises(ValueError, match="keep_pixels_rate"):
        official_processor("fft", rand_image(300, 300, 1), rand_image(100, 100, 2), None, keep_pixels_rate=0.005)


@pytest.mark.parametrize("layout", ["lora", "fft"])
def test_zero_size_canvas_is_value_error(layout):
    # 1024x256 with a budget of 1 token: the official scale gives int(256 / 32) = 8 -> 0 rows.
    with pytest.raises(ValueError, match="too small"):
        official_processor(layout, None, rand_image(256, 1024, 1), None, max_seq_length=1)
    with pytest.raises(ValueError, match="max_seq_length"):
        official_processor(layout, None, rand_image(256, 256, 1), None, max_seq_length=0)


def test_tiny_budget_that_still_fits_matches():
    edit = rand_image(256, 256, 1)
    for layout in ("lora", "fft"):
        res = official_processor(layout, None, edit, None, max_seq_length=1)
        assert_matches(res, reference_official(layout, None, edit, None, max_seq_length=1), layout)
        assert res.image.shape[1:3] == (16, 16)
