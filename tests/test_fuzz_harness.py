"""Shared pieces of the fuzz suites (tests/test_fuzz_core.py, tests/test_fuzz_nodes.py); holds no tests.

* :class:`Tally` runs one fuzz case: the call either returns (the caller then checks the outputs are well formed) or
  raises a ``ValueError`` whose message names one of the function's inputs; any other exception, or a message that
  names no input, fails the test. It counts the cases per function.
* :func:`report_fixture` makes a module fixture that registers a ``pytest_terminal_summary`` plugin, so the session
  ends with "fuzz cases" lines: how many cases each function or node was tried with.
* Hypothesis strategies for ComfyUI IMAGE / MASK tensors (good, extreme and broken) and for widget values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import pytest
import torch
from hypothesis import settings
from hypothesis import strategies as st

#: Fixed seed, bounded counts: a case budget per suite (the whole fuzz suite stays under ~90 s on 2 cores).
def fuzz_settings(n: int) -> settings:
    return settings(derandomize=True, max_examples=n, deadline=None, database=None)


REFUSED = object()


class Tally:
    """Counts the fuzz cases of one suite: name -> [returned, refused with a ValueError]."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.counts: dict[str, list[int]] = {}

    def call(self, name: str, inputs: Iterable[str], fn: Callable, *args, **kwargs):
        """``fn(*args, **kwargs)``, or :data:`REFUSED` after a ``ValueError`` that names one of ``inputs``."""
        entry = self.counts.setdefault(name, [0, 0])
        inputs = tuple(inputs)
        try:
            out = fn(*args, **kwargs)
        except ValueError as e:
            message = str(e)
            if not any(n in message for n in inputs):
                raise AssertionError(f"{name}: ValueError that names none of the inputs {inputs}: {message!r}") from e
            entry[1] += 1
            return REFUSED
        entry[0] += 1
        return out

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


_PLUGIN_NAME = "ace-plus-fuzz-summary"


def register(config: pytest.Config, tally: Tally) -> None:
    plugin = config.pluginmanager.get_plugin(_PLUGIN_NAME)
    if plugin is None:
        plugin = _Summary()
        config.pluginmanager.register(plugin, _PLUGIN_NAME)
    if tally not in plugin.tallies:
        plugin.tallies.append(tally)


# ==================================================================== checks of outputs


def assert_image(x, name: str, *, batch: int | None = None, hw: tuple[int, int] | None = None) -> None:
    assert isinstance(x, torch.Tensor) and x.ndim == 4 and x.shape[-1] == 3, (name, getattr(x, "shape", x))
    assert x.is_floating_point(), (name, x.dtype)
    assert bool(torch.isfinite(x).all()), f"{name}: non-finite values"
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0, f"{name}: values outside [0, 1]: {x.min()}..{x.max()}"
    if batch is not None:
        assert x.shape[0] == batch, (name, tuple(x.shape), batch)
    if hw is not None:
        assert tuple(x.shape[1:3]) == tuple(hw), (name, tuple(x.shape), hw)


def assert_binary_mask(m, name: str, *, batch: int | None = None, hw: tuple[int, int] | None = None) -> None:
    assert isinstance(m, torch.Tensor) and m.ndim == 3, (name, getattr(m, "shape", m))
    assert bool(((m == 0) | (m == 1)).all()), f"{name}: values other than 0 and 1"
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
    if kind == "unbatched":
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
