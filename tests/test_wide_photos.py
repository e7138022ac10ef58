"""Photos beyond 4:1 (panoramas, banners, tall strips): every masked pixel is edited, nothing else changes.

The canvas keeps each image within 4:1. For the edit image of ACE++ Canvas (exact fit, with or without
crop_to_mask) that is done by padding its short side, so a mask that spans more than the 4:1 window still lands on
the canvas; the drop-in official processors keep their centre crop and refuse an explicit mask that reaches outside
it. Generation is simulated by painting the canvas (magenta where its mask is 1, green elsewhere) and stitching
with grow 0 / feather 0; the checks count pixels with numpy against the input mask, never with the product's
helpers.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ace_plus_core.canvas import build_canvas, official_processor
from canvas_helpers import build_canvas_around_mask
from ace_plus_core.stitch import stitch

pytestmark = pytest.mark.numeric

LONG, SHORT, BUDGET = 4000, 500, 4096
MAGENTA, GREEN = torch.tensor([1.0, 0.0, 1.0]), torch.tensor([0.0, 1.0, 0.0])


def _photo(h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (1, h, w, 3), generator=g) / 255.0).float()


def _span_mask(tall: bool, band: bool) -> torch.Tensor:
    """Marks long-axis pixels 100..3899, across the whole short side or a band 150..349 of it."""
    m = torch.zeros(1, SHORT, LONG)
    m[:, slice(150, 350) if band else slice(None), 100:3900] = 1.0
    return m.transpose(1, 2).contiguous() if tall else m


def _build(crop_to_mask: bool, layout: str, ref, photo, mask, budget=BUDGET):
    mode = "resize_to_height" if layout == "lora" else "keep_pixels_pad"
    if crop_to_mask:
        return build_canvas_around_mask(layout, "repainting", mode, ref, photo, mask, budget)
    return build_canvas(layout, "repainting", mode, ref, photo, mask, budget)


def _paint_and_stitch(result, photo, mask) -> np.ndarray:
    """Simulated generation: magenta where the canvas mask is 1, green elsewhere; stitched without grow/feather."""
    decoded = torch.where(result.mask[..., None] > 0.5, MAGENTA, GREEN)
    return stitch(decoded, result.geometry, photo, mask, grow_px=0, feather_px=0)[0].numpy()


def _check_every_masked_pixel_edited(out: np.ndarray, photo: torch.Tensor, mask: torch.Tensor, scale: float):
    src, m = photo[0].numpy(), mask[0].numpy() > 0.5
    changed = np.any(out != src, axis=-1)
    unchanged = int((m & ~changed).sum())
    assert unchanged == 0, f"{unchanged} of {int(m.sum())} masked pixels came back unedited"
    assert np.array_equal(out[~m], src[~m]), f"{int((~m & changed).sum())} unmasked pixels changed"
    # Away from the mask's edge (a few canvas pixels, the reach of the resampling) the pixels are the generated ones.
    k = int(np.ceil(3 / scale))
    inner = m.copy()
    for axis in (0, 1):
        for shift in range(1, k + 1):
            inner &= np.roll(m, shift, axis) & np.roll(m, -shift, axis)
    assert inner.sum() > 0.8 * m.sum()
    assert np.abs(out[inner] - MAGENTA.numpy()).max() < 1e-3


def _check_aspect_and_budget(result, ref, budget=BUDGET):
    _, H, W, _ = result.image.shape
    assert (H // 16) * (W // 16) <= budget
    g = result.geometry[0]
    strip_w = g.edit_w + g.pad_right  # the edit image's strip: the edit area and its padding
    assert max(strip_w, H) <= 4 * min(strip_w, H), f"edit strip {strip_w}x{H} is beyond 4:1"
    if ref is None:
        assert max(H, W) <= 4 * min(H, W), f"canvas {W}x{H} is beyond 4:1"


# Per orientation, every pair of (crop_to_mask, layout, reference) values occurs once; masks over the whole short
# side and over a band alternate.
CASES = [
    (tall, crop, layout, ref, band)
    for tall, rows in ((False, 0), (True, 1))
    for crop, layout, ref in ((True, "lora", False), (False, "lora", True), (True, "fft", True), (False, "fft", False))
    for band in [(ref + rows) % 2 == 1]
]


@pytest.mark.parametrize(("tall", "crop_to_mask", "layout", "with_ref", "band"), CASES, ids=[
    f"{'tall' if c[0] else 'wide'}-{'crop' if c[1] else 'nocrop'}-{c[2]}-{'ref' if c[3] else 'noref'}-"
    f"{'band' if c[4] else 'full'}" for c in CASES
])
def test_every_masked_pixel_of_a_photo_beyond_4_to_1_is_edited(tall, crop_to_mask, layout, with_ref, band):
    h, w = (LONG, SHORT) if tall else (SHORT, LONG)
    photo, mask = _photo(h, w), _span_mask(tall, band)
    ref = _photo(300, 240, seed=1) if with_ref else None
    result = _build(crop_to_mask, layout, ref, photo, mask)
    _check_aspect_and_budget(result, ref)
    g = result.geometry[0]
    out = _paint_and_stitch(result, photo, mask)
    _check_every_masked_pixel_edited(out, photo, mask, min(g.scale_x, g.scale_y))


@pytest.mark.parametrize("tall", [False, True], ids=["wide", "tall"])
def test_padding_at_full_resolution_is_unmasked_context_without_masked_content(tall):
    """At scale 1 the padding that brings the strip to 4:1 has mask 0 and shows no pixel from under the mask."""
    h, w = (LONG, SHORT) if tall else (SHORT, LONG)
    photo, mask = _photo(h, w), _span_mask(tall, band=False)
    result = build_canvas("lora", "repainting", "resize_to_height", None, photo, mask, 16384)
    g = result.geometry[0]
    assert (g.scale_x, g.scale_y, g.crop_box) == (1.0, 1.0, (0, 0, h, w))
    canvas, cmask = result.image[0].numpy(), result.mask[0].numpy()
    expected = np.where(mask[0, ..., None].numpy() > 0.5, 0.5, photo[0].numpy())
    assert np.abs(canvas[:h, :w] - expected).max() <= 1e-7  # the photo's own pixels (shifted by -0.5 and back)
    # Beyond the edge replication to a multiple of 16 (rows 500..511 / columns 500..511) lies the 4:1 padding.
    pad = (slice(None), slice(512, None)) if tall else (slice(512, None), slice(None))
    assert cmask[pad].size > 0 and np.all(cmask[pad] == 0)
    # Under the masked columns (rows) the replicated edge is the blanked gray, not the photo's masked pixels.
    under = canvas[pad][:, 100:3900] if not tall else canvas[pad][100:3900, :]
    assert np.all(under == 0.5)
    _check_every_masked_pixel_edited(_paint_and_stitch(result, photo, mask), photo, mask, 1.0)


@pytest.mark.parametrize("tall", [False, True], ids=["wide", "tall"])
def test_a_small_wide_crop_is_enlarged_once_to_the_budget_with_its_padding_counted(tall):
    """crop_to_mask enlarges a small 8:1 crop so that the padded 4:1 canvas uses the budget: one resize of the
    photo (torch's own antialiased bilinear as the oracle), not an enlargement the canvas then has to shrink."""
    h, w = (800, 100) if tall else (100, 800)
    photo = _photo(h, w, seed=2)
    mask = torch.zeros(1, 100, 800)
    mask[:, :, 20:780] = 1.0
    if tall:
        mask = mask.transpose(1, 2).contiguous()
    r = build_canvas_around_mask("lora", "no_preprocess", "resize_to_height", None, photo, mask, BUDGET)
    g = r.geometry[0]
    _check_aspect_and_budget(r, None)
    assert g.crop_box == (0, 0, h, w) and g.scale_x > 2 and g.tokens > 0.9 * BUDGET
    expected = torch.nn.functional.interpolate(photo.movedim(-1, 1), size=(g.edit_h, g.edit_w), mode="bilinear",
                                               antialias=True, align_corners=False).movedim(1, -1)[0]
    rows, cols = g.edit_area_slice()
    torch.testing.assert_close(r.image[0, rows, cols], expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("layout", ["lora", "fft"])
@pytest.mark.parametrize("tall", [False, True], ids=["wide", "tall"])
def test_official_processors_refuse_a_mask_beyond_the_4_to_1_window(layout, tall):
    h, w = (LONG, SHORT) if tall else (SHORT, LONG)
    photo = _photo(h, w)
    size, window = f"{w}x{h}", ("500x2000" if tall else "2000x500")
    with pytest.raises(ValueError, match=rf"edit_mask.*{size}.*{window}.*(?s:.*)ACE\+\+ Canvas") as err:
        official_processor(layout, None, photo, _span_mask(tall, band=True), max_seq_length=1024)
    assert "crop" in str(err.value).lower()


@pytest.mark.parametrize("tall", [False, True], ids=["wide", "tall"])
def test_official_processors_still_centre_crop_an_empty_or_inner_mask(tall):
    h, w = (LONG, SHORT) if tall else (SHORT, LONG)
    photo = _photo(h, w)
    inner = torch.zeros(1, SHORT, LONG)
    inner[:, 100:400, 1200:2800] = 1.0  # inside the centre 2000x500
    if tall:
        inner = inner.transpose(1, 2).contiguous()
    for mask in (None, torch.zeros(1, 64, 64), torch.ones(1, h, w), inner):
        r = official_processor("lora", None, photo, mask, max_seq_length=1024)
        g = r.geometry[0]
        assert (r.out_h, r.out_w) == ((2000, 500) if tall else (500, 2000))
        assert g.crop_box == ((1000, 0, 2000, 500) if tall else (0, 1000, 500, 2000))


def test_canvas_and_stitch_nodes_edit_a_wide_photo_everywhere_the_mask_marks(comfy_host):
    """Through the real executor: ACE++ Canvas (crop_to_mask) -> ACE++ Stitch; the canvas itself stands in for the
    decoded image, so every masked pixel comes back repainting gray and every other pixel is the photo's own."""
    from graphs import Graph
    from PIL import Image

    from tools_images import noise_png

    hole = (40, 50, 170, 1900)  # top, left, h, w: far beyond the centre 1000x250 of the 2000x250 photo
    edit = noise_png(comfy_host.input_dir / "wide_photo.png", 2000, 250, hole=hole, seed=5)
    g = Graph()
    img = g.add("LoadImage", image=edit)
    cv = g.add("ACEPlusCanvas", layout="lora", task="repainting", reference_mode="auto", max_image_tokens=1024,
               keep_pixels_rate=0.8, width=1024, height=1024, crop_to_mask=True, edit_image=img[0],
               edit_mask=img[1])
    out = g.add("ACEPlusStitch", image=cv[0], geometry=cv[4], original_image=img[0], mask=img[1], grow_mask_px=0,
                feather_px=0, color_match=False)
    g.add("SaveImage", images=out[0], filename_prefix="wide_stitched")
    (path,) = comfy_host.run(g.prompt()).image_paths(comfy_host.output_dir)
    saved = np.asarray(Image.open(path)).astype(int)
    src = np.asarray(Image.open(comfy_host.input_dir / edit))[..., :3].astype(int)
    t, lf, h, w = hole
    m = np.zeros((250, 2000), bool)
    m[t : t + h, lf : lf + w] = True
    assert saved.shape == src.shape and np.array_equal(saved[~m], src[~m])
    inner = saved[t + 8 : t + h - 8, lf + 8 : lf + w - 8]  # 1024 tokens: the area is scaled by about 0.5
    far = int((np.abs(inner - 128) > 1).any(axis=-1).sum())
    assert far == 0, f"{far} of {inner.shape[0] * inner.shape[1]} masked pixels are not the canvas' gray"


def test_official_processor_node_names_the_mask_beyond_the_window(comfy_host):
    from comfy_host import GraphError
    from graphs import Graph

    from tools_images import solid_png

    edit = solid_png(comfy_host.input_dir / "wide_solid.png", 2000, 250, (30, 90, 200), hole=(40, 50, 170, 1900))
    g = Graph()
    img = g.add("LoadImage", image=edit)
    proc = g.add("ACEPlusLoraProcessor", use_reference=False, height=1024, width=1024, task_type="repainting",
                 max_seq_length=1024, edit_image=img[0], edit_mask=img[1])
    g.add("ACEPlusTestOnlyProbe", label="wide_official", image=proc[0])
    with pytest.raises(GraphError, match=r"edit_mask .*2000x250.*1000x250.*ACE\+\+ Canvas"):
        comfy_host.run(g.prompt())


def test_resized_canvas_stays_within_0_1():
    """Antialiased resizing of black-and-white images can sum its weights to 1 + 1 ulp: the canvas must still be an
    IMAGE in [0, 1] (these sizes overshoot on both ends without the clamp)."""
    g = torch.Generator().manual_seed(5)
    ref = (torch.rand(1, 63, 68, 3, generator=g) > 0.5).float()
    edit = (torch.rand(1, 71, 53, 3, generator=g) > 0.5).float()
    r = build_canvas("fft", "no_preprocess", "resize_to_height", ref, edit, None, 30)
    for image in (r.image, r.uc_image, r.c_image):
        assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
