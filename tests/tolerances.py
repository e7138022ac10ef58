"""Tolerances of the numeric tests, derived from what is compared: the dtype's rounding unit x the magnitude of the
values x the number of operations that round. Never a number that happened to pass on one CPU.

Two rules, both from Higham, *Accuracy and Stability of Numerical Algorithms* (2nd ed., 2002):

* worst case (section 3.1): a sum or dot product of ``n`` terms in a dtype with machine epsilon ``eps`` is off by
  at most ``n * eps * sum |terms|`` whatever order or vector width the kernel uses (AVX-512, AVX2, scalar
  ``ATEN_CPU_CAPABILITY=default`` all fall under it). Used for short sums: resampling taps, blends, block means.
* probabilistic (Higham & Mary, SIAM J. Sci. Comput. 41(5), 2019): with rounding errors that behave as independent,
  a dot product of ``n`` terms is off by about ``sqrt(n) * eps`` relative, and the bounds of the layers of a
  network add. Used for deep networks (VAE encoders, transformers), where the worst case is orders of magnitude
  above anything reachable and would hide a real fault. ``SAFETY`` covers the constant of that bound.

Whatever a test exists to catch (a swapped UC/C latent, a misfolded mask, a shifted crop, a wrong convention) is
off by more than 0.05 relative: every bound here stays far below that (``assert_catches`` checks it where a bound
is computed).
"""

from __future__ import annotations

import math

import torch

#: The constant of the probabilistic bound (the ``lambda`` of Higham & Mary; 4 keeps a failure rate far below 1e-6).
SAFETY = 4.0
#: What the numeric tests exist to catch is off by more than this (relative): every tolerance must stay below it.
FAULT = 0.05


def eps(dtype: torch.dtype = torch.float32) -> float:
    return float(torch.finfo(dtype).eps)


def sum_bound(n_terms: int, dtype: torch.dtype = torch.float32, magnitude: float = 1.0) -> float:
    """Worst case of a sum / dot product of ``n_terms`` terms of at most ``magnitude`` in ``dtype``, including the
    rounding of the inputs to ``dtype`` (one more term)."""
    return (n_terms + 1) * eps(dtype) * magnitude


def resample_bound(src_hw: tuple[int, int], dst_hw: tuple[int, int], dtype: torch.dtype = torch.float32,
                   magnitude: float = 1.0, support: float = 1.0) -> float:
    """Separable resampling (bilinear, ``support`` 1; antialiased when shrinking: the support widens by the scale):
    each axis sums ``2 * ceil(support * scale) + 1`` taps and normalises by their sum; the two passes add."""
    taps = sum(2 * math.ceil(support * max(s / d, 1.0)) + 2 for s, d in zip(src_hw, dst_hw))
    return sum_bound(taps, dtype, magnitude)


def network_bound(module: torch.nn.Module, dtype: torch.dtype = torch.float32, extra_fan_ins=()) -> float:
    """Relative error of ``module`` run in ``dtype`` against the same maths done otherwise (another kernel, another
    order, float64): every Linear / Conv layer adds ``sqrt(fan_in) * eps`` (probabilistic rule, times
    :data:`SAFETY`); ``extra_fan_ins`` adds reductions that are not layers (attention over a sequence, norms)."""
    fan_ins = [m.weight[0].numel() for m in module.modules()
               if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d))]
    fan_ins += list(extra_fan_ins)
    assert fan_ins, f"{type(module).__name__} has no layers to bound"
    return SAFETY * eps(dtype) * sum(math.sqrt(n) for n in fan_ins)


def assert_catches(tol: float) -> float:
    """``tol`` unchanged, after checking it still catches a fault of :data:`FAULT` (by a factor of 5 at least)."""
    assert tol < FAULT / 5, f"tolerance {tol:.2e} would not catch a fault of {FAULT}"
    return tol
