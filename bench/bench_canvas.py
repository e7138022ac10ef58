"""Time the ACE++ canvas: a 4096x4096 edit image with a 2048x2048 reference at a 4096-token budget.

Both budget fits (``official``: assemble at full resolution then nearest-exact; ``exact``: resize each part once,
antialiased) for both layouts; median of several runs. Prints the machine and torch's thread count, and writes one
line per run of this script into the "Canvas" section of docs/BENCHMARKS.md (other sections are left alone).

    python bench/bench_canvas.py [--runs 5] [--device cpu|cuda] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ace_plus_core.canvas import build_canvas  # noqa: E402
from machine import cpu_name  # noqa: E402

DOC = REPO / "docs" / "BENCHMARKS.md"
SECTION = "## Canvas"


def machine(device: str) -> str:
    cpu = cpu_name()
    desc = f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} CPUs, torch {torch.__version__} "
    desc += f"({torch.get_num_threads()} threads)"
    if device.startswith("cuda"):
        desc += f", {torch.cuda.get_device_name(device)}"
    return desc


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def bench(fns: dict, runs: int, device: str) -> dict:
    """Run every function ``runs`` times, interleaved (so that load from other processes hits all alike);
    returns {key: (median, min)} in seconds."""
    for fn in fns.values():  # warm-up
        fn()
    sync(device)
    times: dict = {k: [] for k in fns}
    for _ in range(runs):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[k].append(time.perf_counter() - t0)
    return {k: (statistics.median(v), min(v)) for k, v in times.items()}


def write_section(line: str) -> None:
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    intro = (
        f"{SECTION}\n\n`bench/bench_canvas.py`: 4096x4096 edit image + 2048x2048 reference, 4096-token budget, "
        "repainting with a mask; wall time of one `build_canvas` call, median (and minimum) of interleaved "
        "runs. The minimum is the better estimate on a loaded machine.\n\n"
    )
    match = pattern.search(text)
    if match:
        body = match.group(0)
        lines = [ln for ln in body.splitlines() if ln.startswith("- ")]
        # Keep earlier results from other machines; replace the one from this machine.
        key = line.split(":", 1)[0]
        lines = [ln for ln in lines if ln.split(":", 1)[0] != key] + [line]
        text = text[: match.start()] + intro + "\n".join(lines) + "\n\n" + text[match.end() :]
    else:
        text = text.rstrip("\n") + "\n\n" + intro + line + "\n"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text.rstrip("\n") + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-write", action="store_true", help="do not update docs/BENCHMARKS.md")
    args = ap.parse_args()

    dev = args.device
    g = torch.Generator().manual_seed(0)
    edit = torch.rand((1, 4096, 4096, 3), generator=g).to(dev)
    ref = torch.rand((1, 2048, 2048, 3), generator=g).to(dev)
    mask = torch.zeros((1, 4096, 4096), device=dev)
    mask[:, 1024:3072, 1024:3072] = 1.0

    who = machine(dev)
    print(f"machine: {who}; 1-min load average {os.getloadavg()[0]:.1f}")
    fns = {}
    for layout, mode in (("lora", "resize_to_height"), ("fft", "keep_pixels_pad")):
        for fit in ("official", "exact"):

            def run(layout=layout, mode=mode, fit=fit):
                return build_canvas(layout, "repainting", mode, ref, edit, mask, 4096, 0.8, fit=fit)

            g0 = run().geometry[0]
            print(
                f"{layout}/{fit}: canvas {g0.canvas_w}x{g0.canvas_h} ({g0.tokens} tokens), "
                f"edit area {g0.edit_w}x{g0.edit_h} at x={g0.edit_x0}"
            )
            fns[f"{layout}/{fit}"] = run
    results = bench(fns, args.runs, dev)
    for key, (med, best) in results.items():
        print(f"{key:13s}: median {med * 1000:7.1f} ms, min {best * 1000:7.1f} ms")

    line = (
        f"- {who}, device {dev}: "
        + ", ".join(f"{k} {med * 1000:.0f} ms (min {best * 1000:.0f})" for k, (med, best) in results.items())
        + f"; median of {args.runs} interleaved runs, 1-min load average {os.getloadavg()[0]:.1f} at the end"
    )
    if not args.no_write:
        write_section(line)
        print(f"wrote {DOC.relative_to(REPO)}")


if __name__ == "__main__":
    main()
