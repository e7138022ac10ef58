"""Shared pieces of the fuzz suites (tests/test_fuzz_core.py, tests/test_fuzz_nodes.py), and tests of them.

* :class:`Tally` runs one fuzz case: the call either returns (the caller then checks the outputs are well formed) or
  raises a ``ValueError`` whose message names, as a token (:func:`names_input`), one of the inputs that were invalid
  in that draw; any other exception, a message naming another input, or any refusal of a valid draw
  (:meth:`Tally.accept`) fails the test. It counts the cases per function.
* :func:`register` adds a ``pytest_terminal_summary`` plugin, so the session ends with "fuzz cases" lines: how many
  cases each function or node was tried with.
* Hypothesis strategies for ComfyUI IMAGE / MASK tensors (good, extreme and broken) and for widget values.
* The valid population (:func:`valid_images`, :func:`valid_masks`: rules written here from the README) and its
  oracles: :func:`expected_mask` (the documented mask rule in numpy), :func:`check_valid_canvas`,
  :func:`check_untouched_edit_area`, :func:`check_stitched`, :func:`check_cut_back`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

#: Fixed seed, bounded counts: a case budget per suite (the whole fuzz suite stays under ~90 s on 2 cores).
def fuzz_settings(n: int) -> settings:
    return settings(derandomize=True, max_examples=n, deadline=None, database=None)


REFUSED = object()


def names_input(message: str, name: str) -> bool:
    """Whether ``message`` names the input ``name`` as a token (``image`` is not named by ``edit_image ...``)."""
    return re.search(rf"(^|[^a-z_]){re.escape(name)}([^a-z_]|$)", message) is not None


class Tally:
    """Counts the fuzz cases of one suite: name -> [returned, refused with a ValueError]."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.counts: dict[str, list[int]] = {}

    def call(self, name: str, invalid: str | Iterable[str] | None, fn: Callable, *args, **kwargs):
        """``fn(*args, **kwargs)``, or :data:`REFUSED` after a ``ValueError`` that names (as a token) one of the
        inputs that were ``invalid`` in this draw. With no invalid input (``None`` or ``()``) any ``ValueError``
        fails: a valid draw must be accepted."""
        entry = self.counts.setdefault(name, [0, 0])
        invalid = (invalid,) if isinstance(invalid, str) else tuple(invalid or ())
        try:
            out = fn(*args, **kwargs)
        except ValueError as e:
            message = str(e)
            if not invalid:
                raise AssertionError(f"{name} refused a valid input: {message!r}") from e
            if not any(names_input(message, n) for n in invalid):
                raise AssertionError(
                    f"{name}: ValueError that names none of the invalid inputs {invalid}: {message!r}") from e
            entry[1] += 1
            return REFUSED
        entry[0] += 1
        return out

    def note(self, name: str, n: int = 1) -> None:
        """Count ``n`` extra checks under ``name`` (shown in the session summary)."""
        self.counts.setdefault(name, [0, 0])[0] += n

    def accept(self, name: str, fn: Callable, *args, **kwargs):
        """``fn(*args, **kwargs)`` on a valid draw: any exception fails the test."""
        return self.call(name, None, fn, *args, **kwargs)

    def lines(self) -> list[str]:
        out = [f"fuzz cases ({self.title}): name: cases (returned / ValueError naming an input; validate_inputs: "
               "True / message naming the widget)"]
        for name, (ok, refused) in sorted(self.counts.items()):
            out.append(f"  {name}: {ok + refused} ({ok} / {refused})")
        return out


class _Summary:
    """A pytest plugin that prints every registered tally at the end of the session."""

    def __init__(self) -> None:
        self.tallies: list[Tally] = []

    def pytest_terminal_summary(self, terminalreporter) -> None:
        for tally in self.tallies:
            if tally.counts:
                for line in tally.lines():
                    terminalreporter.write_line(line)

    def pytest_sessionfinish(self, session) -> None:
        """On a pytest-xdist worker: hand the counts to the controller (tests/conftest.py adds them up there)."""
        if hasattr(session.config, "workeroutput"):
            session.config.workeroutput[WORKER_KEY] = [(t.title, t.counts) for t in self.tallies]


_PLUGIN_NAME = "ace-plus-fuzz-summary"
WORKER_KEY = "ace_plus_fuzz_tallies"


def register(config: pytest.Config, tally: Tally) -> None:
    plugin = config.pluginmanager.get_plugin(_PLUGIN_NAME)
    if plugin is None:
        plugin = _Summary()
        config.pluginmanager.register(plugin, _PLUGIN_NAME)
    if tally not in plugin.tallies:
        plugin.tallies.append(tally)


def merge_worker_tallies(config: pytest.Config, tallies: list[tuple[str, dict]]) -> None:
    """Adds a pytest-xdist worker's counts into this (controller) process's tallies of the same titles."""
    for title, counts in tallies:
        plugin = config.pluginmanager.get_plugin(_PLUGIN_NAME)
        tally = next((t for t in plugin.tallies if t.title == title), None) if plugin else None
        if tally is None:
            tally = Tally(title)
            register(config, tally)
        for name, (ok, refused) in counts.items():
            entry = tally.counts.setdefault(name, [0, 0])
            entry[0] += ok
            entry[1] += refused


# ==================================================================== checks of outputs


def assert_image(x, name: str, *, batch: int | None = None, hw: tuple[int, int] | None = None,
                 dtype: torch.dtype | None = None) -> None:
    assert isinstance(x, torch.Tensor) and x.ndim == 4 and x.shape[-1] == 3, (name, getattr(x, "shape", x))
    assert x.is_floating_point(), (name, x.dtype)
    if dtype is not None:
        assert x.dtype == dtype, (name, x.dtype, dtype)
    lo, hi = (float(v) for v in torch.aminmax(x))  # NaN propagates into both
    assert math.isfinite(lo) and math.isfinite(hi), f"{name}: non-finite values"
    assert lo >= 0.0 and hi <= 1.0, f"{name}: values outside [0, 1]: {lo}..{hi}"
    if batch is not None:
        assert x.shape[0] == batch, (name, tuple(x.shape), batch)
    if hw is not None:
        assert tuple(x.shape[1:3]) == tuple(hw), (name, tuple(x.shape), hw)


def assert_binary_mask(m, name: str, *, batch: int | None = None, hw: tuple[int, int] | None = None) -> None:
    assert isinstance(m, torch.Tensor) and m.ndim == 3, (name, getattr(m, "shape", m))
    assert torch.equal(m, (m > 0.5).to(m.dtype)), f"{name}: values other than 0 and 1"
    if batch is not None:
        assert m.shape[0] == batch, (name, tuple(m.shape), batch)
    if hw is not None:
        assert tuple(m.shape[1:3]) == tuple(hw), (name, tuple(m.shape), hw)


# ==================================================================== strategies

#: IMAGE inputs a node must accept (documented rules: alpha dropped, gray used as RGB, out-of-range clamped).
GOOD_IMAGES = ("ok", "ok", "ok", "ok", "unbatched", "out_of_range", "half", "float64", "gray", "rgba")
#: IMAGE inputs that must be refused with a ValueError naming the input.
BAD_IMAGES = ("nan", "inf", "uint8", "bool", "channels_2", "channels_5", "ndim_2", "ndim_5", "empty_batch",
              "not_a_tensor")
IMAGE_KINDS = GOOD_IMAGES + BAD_IMAGES


def _sizes(max_side: int, min_side: int = 1):
    small = st.integers(min_side, max_side)
    special = st.sampled_from([(1, 1), (1, 2), (2, 1), (1, 4000), (4000, 1), (3, 700), (16, 16), (17, 15)])
    return st.one_of(st.tuples(small, small), special)


@st.composite
def images(draw, max_side: int = 48, batches=(1, 1, 1, 2, 3), kinds=IMAGE_KINDS, hw=None, min_side: int = 1):
    """A ComfyUI IMAGE-like value: mostly good ``[B, H, W, 3]`` float tensors, sometimes extreme or broken."""
    kind = draw(st.sampled_from(kinds))
    b = draw(st.sampled_from(batches))
    h, w = hw if hw is not None else draw(_sizes(max_side, min_side))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    c = {"channels_2": 2, "channels_5": 5, "gray": 1, "rgba": 4}.get(kind, 3)
    x = torch.rand((b, h, w, c), generator=g)
    if kind == "unbatched" and b == 1:  # [H, W, C] is a batch of one
        return x[0]
    if kind in ("nan", "inf"):
        flat = x.view(-1)
        flat[int(torch.randint(0, flat.numel(), (1,), generator=g))] = math.nan if kind == "nan" else -math.inf
    elif kind == "out_of_range":
        x = x * 1.6 - 0.3
    elif kind == "half":
        x = x.half()
    elif kind == "float64":
        x = x.double()
    elif kind == "uint8":
        x = (x * 255).to(torch.uint8)
    elif kind == "bool":
        x = x > 0.5
    elif kind == "ndim_2":
        x = x[0, ..., 0]
    elif kind == "ndim_5":
        x = x.unsqueeze(0)
    elif kind == "empty_batch":
        x = x[:0]
    elif kind == "not_a_tensor":
        return x.tolist() if x.numel() < 64 else "an image"
    return x


#: MASK inputs that are valid (binarized at 0.5, NaN = 0, empty = everything, resized at the same aspect ratio).
GOOD_MASKS = ("none", "empty", "full", "rect", "rect", "soft", "bool", "int", "nan", "inf", "b1hw",
              "other_size_same_aspect", "loadimage_64", "tiny_dot")
#: MASK inputs that must be refused (another aspect ratio, batch, shape or type).
BAD_MASKS = ("other_size", "batch_mismatch", "ndim_4_bad", "not_a_tensor")
MASK_KINDS = GOOD_MASKS + BAD_MASKS


@st.composite
def masks(draw, hw: tuple[int, int], batch: int = 1, kinds=MASK_KINDS):
    """A ComfyUI MASK-like value for an image of ``hw``: None, empty, full, soft, odd dtypes, wrong sizes ..."""
    kind = draw(st.sampled_from(kinds))
    h, w = hw
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    b = draw(st.sampled_from([1, batch]))
    if kind == "none":
        return None
    if kind == "empty":
        return torch.zeros((b, h, w))
    if kind == "full":
        return torch.ones((b, h, w))
    if kind == "loadimage_64":
        return torch.zeros((1, 64, 64))
    if kind == "not_a_tensor":
        return "a mask"
    m = torch.zeros((b, h, w))
    if kind == "tiny_dot":
        m[:, int(torch.randint(0, h, (1,), generator=g)), int(torch.randint(0, w, (1,), generator=g))] = 1.0
        return m
    t = int(torch.randint(0, h, (1,), generator=g))
    lf = int(torch.randint(0, w, (1,), generator=g))
    bh = int(torch.randint(1, h - t + 1, (1,), generator=g))
    bw = int(torch.randint(1, w - lf + 1, (1,), generator=g))
    m[:, t : t + bh, lf : lf + bw] = 1.0
    if kind == "soft":
        m = m * torch.rand((b, h, w), generator=g)
    elif kind == "bool":
        m = m > 0.5
    elif kind == "int":
        m = (m * 255).to(torch.int64)
    elif kind == "nan":
        m[0, 0, 0] = math.nan
    elif kind == "inf":
        m[0, 0, 0] = math.inf
    elif kind == "b1hw":
        m = m.unsqueeze(1)
    elif kind == "other_size_same_aspect":
        m = torch.nn.functional.interpolate(m.unsqueeze(1), size=(2 * h, 2 * w), mode="nearest").squeeze(1)
    elif kind == "other_size":
        m = torch.ones((b, h + 7, 2 * w + 3))
    elif kind == "batch_mismatch":
        m = m[:1].expand(batch + 2, -1, -1).clone()
    elif kind == "ndim_4_bad":
        m = m.unsqueeze(-1).expand(-1, -1, -1, 3)
    return m


def widget_values(lo, hi, *, integer: bool, bad: bool | None = None):
    """Widget values in [lo, hi] (with the edges; ``bad=False``), out of range or of the wrong kind (``bad=True``:
    just outside, far outside, NaN/inf, bools, None, strings), or either (None)."""
    inside = st.integers(int(lo), int(hi)) if integer else st.floats(lo, hi, allow_nan=False)
    good = st.one_of(inside, inside, st.sampled_from([lo, hi] if not integer else [int(lo), int(hi)]))
    wrong = st.sampled_from([lo - 1, hi + 1, -(10**9), 10**9, 10**30, math.nan, math.inf, -math.inf, True, None, "1",
                             lo + 0.5 if integer else 10**40])
    if bad is None:
        return st.one_of(good, good, wrong)
    return wrong if bad else good


def faults(*names: str):
    """Which one input a fuzz case breaks: None (all inputs valid) half of the time, else one of ``names``."""
    return st.sampled_from((None,) * len(names) + names)


def pick(data, name: str, broken: str | None, good, bad):
    """Draw input ``name`` from ``bad`` when it is the one this case breaks, else from ``good``."""
    return data.draw(bad if broken == name else good, name)


# ==================================================================== the valid population
# Rules written here from the README ("Bad input"), not taken from the product's helpers or constants: every draw
# below is an input the pack documents as valid, so it must be ACCEPTED and give well-formed outputs.

#: Sides of valid photos (px) and their largest aspect ratio (both ways; the canvas crops only beyond 4:1).
VALID_SIDES = (24, 700)
VALID_ASPECT = 4
#: Float dtypes an IMAGE may arrive in (fp16 / bf16 VAEs, float64 from numpy-based nodes).
VALID_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
#: Memory layouts: upstream nodes hand over views (transposes, slices, channel-last permutes, expanded batches).
MEMORY_LAYOUTS = ("contiguous", "contiguous", "transposed", "sliced", "channels_first", "expanded")


def with_layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    """The values of ``x`` ``[B, H, W, C]`` as a (mostly non-contiguous) view of another tensor."""
    b, h, w, c = x.shape
    if layout == "transposed":
        return x.transpose(1, 2).contiguous().transpose(1, 2)
    if layout == "channels_first":
        return x.permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1)
    if layout == "sliced":
        base = torch.zeros((b, h + 2, 2 * w + 1, c + 1), dtype=x.dtype)
        base[:, 1 : h + 1, 1::2, :c] = x
        return base[:, 1 : h + 1, 1::2, :c]
    if layout == "expanded":  # one item used for the whole batch (stride 0)
        return x[:1].expand(b, -1, -1, -1)
    return x


@st.composite
def valid_hw(draw, lo: int = VALID_SIDES[0], hi: int = VALID_SIDES[1]) -> tuple[int, int]:
    """(H, W) with both sides in [lo, hi] and an aspect ratio of at most 4:1 either way (edges included)."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.sampled_from([(lo, lo), (lo, VALID_ASPECT * lo), (VALID_ASPECT * lo, lo), (hi, hi),
                                     (hi, hi // VALID_ASPECT), (hi // VALID_ASPECT, hi), (lo + 1, lo)]))
    a = draw(st.one_of(st.integers(lo, min(hi, 160)), st.integers(lo, hi)))  # mostly small: fast cases
    b = draw(st.integers(max(lo, -(-a // VALID_ASPECT)), min(hi, VALID_ASPECT * a)))
    return (a, b) if draw(st.booleans()) else (b, a)


@st.composite
def valid_images(draw, hw=None, batch: int | None = None, channels=(3, 3, 3, 3, 1, 4), lo: int = VALID_SIDES[0],
                 hi: int = VALID_SIDES[1]) -> torch.Tensor:
    """A valid IMAGE ``[B, H, W, C]``: values in [0, 1], any float dtype, any memory layout, C = 1, 3 or 4."""
    h, w = hw if hw is not None else draw(valid_hw(lo, hi))
    b = batch if batch is not None else draw(st.sampled_from([1, 2]))
    c = draw(st.sampled_from(channels))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    x = torch.rand((b, h, w, c), generator=g, dtype=torch.float64).to(draw(st.sampled_from(VALID_DTYPES)))
    return with_layout(x, draw(st.sampled_from(MEMORY_LAYOUTS)))


#: Valid MASK kinds: no mask, empty (everything), LoadImage's 64x64 zero placeholder, full, partial (hard, soft, bool,
#: uint8, with NaN or +inf, [H, W], [B, 1, H, W], transposed view, 2x the size at the same aspect ratio), and a batch
#: whose first item is partial and second empty.
VALID_MASKS = ("none", "empty", "placeholder_64", "full", "rect", "rect", "rects", "soft", "bool", "uint8", "nan",
               "inf", "hw", "b1hw", "transposed", "double_size", "partial_then_empty")


@st.composite
def valid_masks(draw, hw: tuple[int, int], batch: int, kinds=VALID_MASKS):
    kind = draw(st.sampled_from(kinds))
    h, w = hw
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    b = draw(st.sampled_from([1, batch]))
    if kind == "none":
        return None
    if kind == "empty":
        return torch.zeros((b, h, w))
    if kind == "placeholder_64":
        return torch.zeros((1, 64, 64))
    if kind == "full":
        return torch.ones((b, h, w))

    def rect(m: torch.Tensor) -> None:
        mh, mw = m.shape[-2:]
        t, lf = (int(torch.randint(0, n, (1,), generator=g)) for n in (mh, mw))
        bh = int(torch.randint(1, mh - t + 1, (1,), generator=g))
        bw = int(torch.randint(1, mw - lf + 1, (1,), generator=g))
        m[..., t : t + bh, lf : lf + bw] = 1.0

    m = torch.zeros((b, h, w))
    for item in m:
        for _ in range(3 if kind == "rects" else 1):
            rect(item)
    if kind == "soft":  # marked pixels in (0.5, 1], the rest in [0, 0.5]
        m = torch.where(m > 0, 0.5 + 0.5 * torch.rand(m.shape, generator=g).clamp_min(1e-3),
                        0.5 * torch.rand(m.shape, generator=g))
    elif kind == "bool":
        m = m > 0.5
    elif kind == "uint8":
        m = (m * 255).to(torch.uint8)
    elif kind in ("nan", "inf"):
        spot = torch.rand(m.shape, generator=g) < 0.05
        m = torch.where(spot, torch.tensor(math.nan if kind == "nan" else math.inf), m)
    elif kind == "hw":
        m = m[0]
    elif kind == "b1hw":
        m = m.unsqueeze(1)
    elif kind == "transposed":
        m = m.transpose(1, 2).contiguous().transpose(1, 2)
    elif kind == "double_size":  # every pixel becomes 2x2: the same mask at twice the size
        m = m.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
    elif kind == "partial_then_empty" and batch > 1:
        m = torch.cat([m[:1], torch.zeros((batch - 1, h, w))])
    return m


def _nearest_exact(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each output index for nearest-exact resampling: floor((i + 0.5) * n_in / n_out)."""
    return np.minimum(np.floor((np.arange(n_out) + 0.5) * n_in / n_out).astype(np.int64), n_in - 1)


def expected_mask(mask, hw: tuple[int, int], batch: int) -> np.ndarray:
    """The documented region rule, in numpy: bool ``[batch, H, W]``, True where the image is edited.

    Binarized at > 0.5 (NaN counts as 0, +inf as 1); [H, W] is one item, [B, 1, H, W] is [B, H, W]; a batch of 1
    is used for every item; an item with no marked pixel (any size: LoadImage's 64x64 zero placeholder) means
    "edit everything"; a marked mask of another size (same aspect ratio) is resized nearest-exact; None = all."""
    h, w = hw
    if mask is None:
        return np.ones((batch, h, w), dtype=bool)
    m = mask.detach().cpu().to(torch.float64).numpy()
    m = m[None] if m.ndim == 2 else m[:, 0] if m.ndim == 4 else m
    marked = m > 0.5
    if marked.shape[0] == 1:
        marked = np.repeat(marked, batch, axis=0)
    assert marked.shape[0] == batch, (marked.shape, batch)
    out = np.ones((batch, h, w), dtype=bool)
    for i, item in enumerate(marked):
        if not item.any():
            continue
        if item.shape != (h, w):
            item = item[_nearest_exact(item.shape[0], h)][:, _nearest_exact(item.shape[1], w)]
        out[i] = item
    return out


def as_dtype(x: np.ndarray, dtype: torch.dtype) -> np.ndarray:
    """float64 values rounded to ``dtype`` (what a cast to the output's dtype gives), back as float64."""
    return torch.from_numpy(np.ascontiguousarray(x)).to(dtype).double().numpy()


def rgb64(image: torch.Tensor) -> np.ndarray:
    """An IMAGE as float64 RGB numpy ``[B, H, W, 3]`` (gray repeated, alpha dropped), values as given."""
    x = image.detach().cpu().to(torch.float64).numpy()
    x = x[None] if x.ndim == 3 else x
    return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x[..., :3]


def check_valid_canvas(image, mask, geometry, *, batch: int, budget: float, source_hw: tuple[int, int],
                       dtype: torch.dtype, region: np.ndarray | None = None, repaint: bool = False,
                       uc=None, c=None) -> None:
    """A canvas made from a valid draw: ``[B, H, W, 3]`` of ``dtype`` in [0, 1], sides multiples of 16, at most
    ``budget`` tokens; the mask binary ``[B, H, W]``, 0 over the reference strip; each geometry's edit area (with
    its padding) inside the canvas, its crop box inside the source and within 4:1, every pixel of ``region`` (the
    expected edit region of the source, :func:`expected_mask`) inside the crop box. Repainting: gray under the
    mask. FFT (``uc``, ``c``): UC is the canvas grayed under the mask, C gray except under the mask."""
    assert_image(image, "canvas", batch=batch, dtype=dtype)
    h, w = int(image.shape[1]), int(image.shape[2])
    assert h % 16 == 0 and w % 16 == 0 and h >= 16 and w >= 16, (h, w)
    assert (h // 16) * (w // 16) <= budget, ((h, w), budget)
    assert_binary_mask(mask, "mask", batch=batch, hw=(h, w))
    assert isinstance(geometry, tuple) and len(geometry) == batch, geometry
    marked = mask > 0.5
    for i, g in enumerate(geometry):
        assert (g.canvas_h, g.canvas_w) == (h, w) and (g.source_h, g.source_w) == tuple(source_hw), g
        assert min(g.edit_w, g.edit_h, g.crop_w, g.crop_h) >= 1, g
        assert g.edit_x0 + g.edit_w + g.pad_right <= w and g.edit_y0 + g.edit_h + g.pad_bottom <= h, g
        assert g.crop_top + g.crop_h <= g.source_h and g.crop_left + g.crop_w <= g.source_w, g
        # (a generated area has the size asked for, whatever its aspect ratio: nothing of a photo is cut)
        assert g.reference_only or max(g.crop_h, g.crop_w) <= VALID_ASPECT * min(g.crop_h, g.crop_w), g
        assert not bool(marked[i, :, : g.edit_x0].any()), "the mask marks the reference strip"
        if region is not None:
            outside = region[i].copy()
            outside[g.crop_top : g.crop_top + g.crop_h, g.crop_left : g.crop_left + g.crop_w] = False
            assert not outside.any(), f"item {i}: the crop box {g.crop_box} leaves out marked pixels"
    gray = torch.tensor(0.5, dtype=image.dtype)
    marked = marked.unsqueeze(-1)
    if repaint:
        assert torch.equal(torch.where(marked, gray, image), image), "repainting: the masked canvas is not 0.5 gray"
    if uc is not None:
        assert_image(uc, "uc_image", batch=batch, hw=(h, w), dtype=dtype)
        assert_image(c, "c_image", batch=batch, hw=(h, w), dtype=dtype)
        assert torch.equal(torch.where(marked, gray, image), uc), "uc_image is not the canvas grayed under the mask"
        assert torch.equal(torch.where(marked, image, gray), c), "c_image is not gray except under the mask"


#: The canvas is computed around gray = 0 (x - 0.5, then + 0.5): in float32 that rounds values below 0.25 by up to
#: half an ulp of [0.25, 0.5), 2**-26. "Untouched" pixels are equal to within that (fp16 / bf16 inputs: exactly).
SHIFT_ROUNDING = 2.0**-26


def check_untouched_edit_area(image, mask, geometry, edit, region: np.ndarray, guidance=None) -> int:
    """Where a geometry maps its crop box 1:1 (no resampling), the canvas mask equals ``region`` over the box and
    the unmasked canvas pixels are the edit image's own (under the mask: ``guidance``'s, when given). Returns the
    number of items checked."""
    src = rgb64(edit)
    ctl = rgb64(guidance) if guidance is not None else None
    checked = 0
    for i, g in enumerate(geometry):
        if (g.edit_h, g.edit_w) != (g.crop_h, g.crop_w):
            continue
        t, lf, ch, cw = g.crop_top, g.crop_left, g.crop_h, g.crop_w
        box = region[i, t : t + ch, lf : lf + cw]
        canvas_mask = mask[i, g.edit_y0 : g.edit_y0 + ch, g.edit_x0 : g.edit_x0 + cw].numpy() > 0.5
        assert np.array_equal(canvas_mask, box), f"item {i}: canvas mask differs from the edit region"
        area = image[i, g.edit_y0 : g.edit_y0 + ch, g.edit_x0 : g.edit_x0 + cw].double().numpy()
        own = as_dtype(src[i % src.shape[0], t : t + ch, lf : lf + cw], image.dtype)
        np.testing.assert_allclose(area[~box], own[~box], rtol=0, atol=SHIFT_ROUNDING,
                                   err_msg=f"item {i}: edit pixels changed")
        if ctl is not None:
            own = as_dtype(ctl[i % ctl.shape[0], t : t + ch, lf : lf + cw], image.dtype)
            np.testing.assert_allclose(area[box], own[box], rtol=0, atol=SHIFT_ROUNDING,
                                       err_msg=f"item {i}: guidance under the mask changed")
        checked += 1
    return checked


def _edit_area(decoded: torch.Tensor, g, dtype: torch.dtype) -> np.ndarray:
    """The edit area of each decoded canvas item, rounded to ``dtype``, as float64 RGB ``[B, edit_h, edit_w, 3]``."""
    return as_dtype(rgb64(decoded), dtype)[:, g.edit_y0 : g.edit_y0 + g.edit_h, g.edit_x0 : g.edit_x0 + g.edit_w]


def check_cut_back(cut, decoded, geometry) -> None:
    """Cut Back of a valid draw: each item's crop box size; unscaled geometries give the edit area's own pixels."""
    g0 = geometry[0]
    assert_image(cut, "cut back", batch=len(geometry), hw=(g0.crop_h, g0.crop_w))
    for i, g in enumerate(geometry):
        if (g.edit_h, g.edit_w) == (g.crop_h, g.crop_w):
            np.testing.assert_array_equal(cut[i].double().numpy(), _edit_area(decoded, g, cut.dtype)[i],
                                          err_msg=f"item {i}: cut back is not the edit area")


def check_stitched(out, original, mask, geometry, decoded, grow: int, feather: int, color_match: bool) -> int:
    """Stitch of a valid draw: the original's size, float32; outside each crop box and
    farther than ``grow`` + the feather's reach (dilate by ceil(f/2), then blur over ceil(f/2): 2 ceil(f/2)) from the
    stitch mask (:func:`expected_mask`) the original pixels in float32, bit for bit; with no grow, feather or colour match and
    an unscaled geometry, the generated pixels under the mask. Returns how many items had their mask checked."""
    batch = len(geometry)
    h, w = geometry[0].source_h, geometry[0].source_w
    assert_image(out, "stitched", batch=batch, hw=(h, w), dtype=torch.float32)
    region = expected_mask(mask, (h, w), batch)
    reach = grow + 2 * math.ceil(feather / 2)
    got, orig = out.double().numpy(), as_dtype(rgb64(original), torch.float32)
    pasted_items = 0
    for i, g in enumerate(geometry):
        box = np.zeros((h, w), dtype=bool)
        box[g.crop_top : g.crop_top + g.crop_h, g.crop_left : g.crop_left + g.crop_w] = True
        near = ndimage.binary_dilation(region[i], np.ones((3, 3), bool), iterations=reach) if reach else region[i]
        keep = ~(near & box)
        np.testing.assert_array_equal(got[i][keep], orig[i % orig.shape[0]][keep],
                                      err_msg=f"item {i}: pixels away from the mask changed")
        if reach == 0 and not color_match and (g.edit_h, g.edit_w) == (g.crop_h, g.crop_w):
            rows, cols = slice(g.crop_top, g.crop_top + g.crop_h), slice(g.crop_left, g.crop_left + g.crop_w)
            pasted = region[i, rows, cols]
            np.testing.assert_array_equal(got[i, rows, cols][pasted], _edit_area(decoded, g, out.dtype)[i][pasted],
                                          err_msg=f"item {i}: the masked pixels are not the generated ones")
            pasted_items += 1
    return pasted_items



# ==================================================================== tests of the harness itself


def test_names_input_matches_whole_tokens_only():
    assert names_input("edit_image is 512x512 but ...", "edit_image")
    assert names_input("the decoded canvas (image) is 16x16", "image")
    assert names_input("mosaic ratio must be >= 1", "ratio")
    assert not names_input("edit_image must be an IMAGE", "image")  # "image" is not named by "edit_image"
    assert not names_input("edit_mask is 8x8", "mask") and not names_input("images are missing", "image")


def test_tally_fails_a_refused_valid_draw_and_a_message_naming_another_input():
    tally = Tally("self-test")

    def refuse(message):
        raise ValueError(message)

    assert tally.call("f", "edit_image", refuse, "edit_image: bad") is REFUSED
    with pytest.raises(AssertionError, match="refused a valid input"):
        tally.accept("f", refuse, "edit_image: refused")
    with pytest.raises(AssertionError, match="names none of the invalid inputs"):
        tally.call("f", "edit_image", refuse, "image must be an IMAGE")
    with pytest.raises(AssertionError, match="names none of the invalid inputs"):
        tally.call("f", "edit_mask", refuse, "edit_image is 8x8 but ...")


def test_expected_mask_follows_the_documented_rule():
    soft = torch.tensor([[[0.2, 0.51], [math.nan, math.inf]]])
    assert expected_mask(soft, (2, 2), 1).tolist() == [[[False, True], [False, True]]]
    assert expected_mask(None, (2, 3), 2).all() and expected_mask(torch.zeros((1, 64, 64)), (5, 7), 2).all()
    # Per item: an empty item edits everything; [H, W] and [B, 1, H, W] shapes; a batch of 1 for every item.
    two = torch.zeros((2, 2, 2))
    two[0, 0, 0] = 1
    assert expected_mask(two, (2, 2), 2).tolist() == [[[True, False], [False, False]], [[True, True], [True, True]]]
    assert expected_mask(two[0], (2, 2), 2)[1].tolist() == [[True, False], [False, False]]
    assert expected_mask(two.unsqueeze(1), (2, 2), 2)[0].tolist() == [[True, False], [False, False]]
    # Twice the size, same aspect ratio: nearest-exact back to the image (source index floor((i + 0.5) * 2)).
    big = torch.zeros((1, 4, 6))
    big[0, 1, 3] = 1  # rows 1, 3 and columns 1, 3, 5 are sampled
    assert expected_mask(big, (2, 3), 1).tolist() == [[[False, True, False], [False, False, False]]]


@fuzz_settings(40)
@given(st.data())
def test_the_valid_population_obeys_its_rules(data):
    hw = data.draw(valid_hw())
    assert all(VALID_SIDES[0] <= n <= VALID_SIDES[1] for n in hw) and max(hw) <= VALID_ASPECT * min(hw)
    x = data.draw(valid_images(hw=hw))
    assert x.ndim == 4 and tuple(x.shape[1:3]) == hw and x.shape[-1] in (1, 3, 4) and x.shape[0] in (1, 2)
    assert x.dtype in VALID_DTYPES and float(x.min()) >= 0 and float(x.max()) <= 1
    m = data.draw(valid_masks(hw, int(x.shape[0])))
    region = expected_mask(m, hw, int(x.shape[0]))
    assert region.shape == (x.shape[0], *hw) and all(item.any() for item in region)


def test_the_valid_population_has_views_of_every_kind():
    x = torch.rand((2, 5, 7, 3))
    for layout in MEMORY_LAYOUTS:
        y = with_layout(x, layout)
        assert y.shape == x.shape and (layout in ("contiguous", "expanded") or not y.is_contiguous()), layout
        assert torch.equal(y, x if layout != "expanded" else x[:1].expand(2, -1, -1, -1)), layout
