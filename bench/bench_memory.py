"""Peak memory of the canvas and stitch for a large photo: an 8192x8192 edit image with a 4096x4096 reference.

Every case runs in a fresh subprocess and reads the process' RSS high-water mark
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``): torch's CPU allocator is invisible to ``tracemalloc``. A case
reports the **extra** peak, the high-water mark minus the resident size once the inputs exist (the edit image,
its mask and the reference), in bytes and as a multiple of the edit image's float32 size (8192 x 8192 x 3 x 4 B =
768 MiB).

Cases (repainting, a 3072x2560 px rectangular mask off the centre, 4096-token budget, LoRA layout):

* ``canvas official`` / ``canvas exact``: :func:`ace_plus_core.canvas.build_canvas` with each fit (the whole
  photo is the edit area);
* ``canvas around_mask``: :func:`ace_plus_core.canvas.build_canvas` with a ``ContextSpec`` (the canvas node's default);
* ``stitch <fit>``: :func:`ace_plus_core.stitch.stitch` of a decoded canvas of that case's size back into the
  8192x8192 photo (its own subprocess, fed the geometry the canvas case wrote as JSON), the output included.

    python bench/bench_memory.py [--size 8192] [--ref 4096] [--tokens 4096] [--fits ...] [--no-write]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from machine import cpu_name, find_section, replace_section

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "BENCHMARKS.md"
SECTION = "## Memory"
FITS = ("official", "exact", "around_mask")


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _inputs(size: int, ref_size: int):
    import torch

    g = torch.Generator().manual_seed(0)
    edit = torch.rand((1, size, size, 3), generator=g)
    ref = torch.rand((1, ref_size, ref_size, 3), generator=g)
    mask = torch.zeros((1, size, size))
    top, left = size // 4, 3 * size // 8
    mask[:, top : top + 3 * size // 8, left : left + 5 * size // 16] = 1.0
    return edit, ref, mask


def child(args) -> None:
    """One case in this (fresh) process; prints a JSON line with the figures."""
    import torch

    sys.path.insert(0, str(REPO))
    from ace_plus_core.canvas import build_canvas
    from ace_plus_core.crop import ContextSpec
    from ace_plus_core.geometry import CanvasGeometry
    from ace_plus_core.stitch import stitch

    stage, fit = args.child
    edit, ref, mask = _inputs(args.size, args.ref)
    base = _rss_bytes()
    t0 = time.perf_counter()
    if stage == "canvas":
        if fit == "around_mask":
            r = build_canvas("lora", "repainting", "resize_to_height", ref, edit, mask, args.tokens, context=ContextSpec())
        else:
            r = build_canvas("lora", "repainting", "resize_to_height", ref, edit, mask, args.tokens, fit=fit)
        out_bytes = sum(t.numel() * t.element_size() for t in (r.image, r.mask))
        Path(args.geometry).write_text(json.dumps(dataclasses.asdict(r.geometry[0])))
        shape = list(r.image.shape)
    else:
        g = CanvasGeometry(**json.loads(Path(args.geometry).read_text()))
        decoded = torch.rand((1, g.canvas_h, g.canvas_w, 3), generator=torch.Generator().manual_seed(1))
        base = _rss_bytes()
        t0 = time.perf_counter()
        out = stitch(decoded, (g,), edit, mask, 8, 16)
        out_bytes = out.numel() * out.element_size()
        shape = list(out.shape)
    seconds = time.perf_counter() - t0
    peak = _maxrss_bytes()
    print(json.dumps({"stage": stage, "fit": fit, "base": base, "peak": peak, "extra": peak - base,
                      "output_bytes": out_bytes, "shape": shape, "seconds": seconds,
                      "input_image_bytes": edit.numel() * edit.element_size()}))


def machine() -> str:
    cpu = cpu_name()
    try:
        mem = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
        ram = f", {mem / 2**30:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        ram = ""
    import torch

    return f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} CPUs{ram}, torch {torch.__version__}"


def run_case(stage: str, fit: str, args, geometry: Path) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", stage, fit, "--geometry", str(geometry),
           "--size", str(args.size), "--ref", str(args.ref), "--tokens", str(args.tokens)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"case {stage} {fit} failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


TABLE_HEAD = ("| machine | case | extra peak (bytes) | x edit image | process peak | time |\n"
              "|---|---|---:|---:|---:|---:|")


def write_section(rows: list[str], machine_name: str, intro: str) -> None:
    """Replace this machine's rows of the Memory table (rows of other machines stay); other sections untouched."""
    text, match = find_section(DOC, SECTION)
    kept = []
    if match:
        kept = [ln for ln in match.group(0).splitlines()
                if ln.startswith("| ") and not ln.startswith("| machine") and not ln.startswith(f"| {machine_name} |")]
    body = f"{SECTION}\n\n{intro}\n\n{TABLE_HEAD}\n" + "\n".join(kept + rows) + "\n"
    replace_section(DOC, text, match, body)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=8192, help="edit image side (px)")
    ap.add_argument("--ref", type=int, default=4096, help="reference image side (px)")
    ap.add_argument("--tokens", type=int, default=4096, help="token budget of the canvas")
    ap.add_argument("--fits", nargs="+", choices=FITS, default=list(FITS), help="which cases to run")
    ap.add_argument("--no-write", action="store_true", help="do not update docs/BENCHMARKS.md")
    ap.add_argument("--child", nargs=2, metavar=("STAGE", "FIT"), help=argparse.SUPPRESS)
    ap.add_argument("--geometry", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return

    who = machine()
    print(f"machine: {who}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for fit in args.fits:
            geometry = Path(tmp) / f"{fit}.json"
            for stage in ("canvas", "stitch"):
                r = run_case(stage, fit, args, geometry)
                rows.append(r)
                ratio = r["extra"] / r["input_image_bytes"]
                print(f"{stage:6s} {fit:11s}: extra peak {_mib(r['extra']):>10s} = {ratio:4.2f}x the edit image "
                      f"(output {_mib(r['output_bytes'])}, shape {r['shape']}, {r['seconds']:.1f} s; process peak "
                      f"{_mib(r['peak'])})")
    image_bytes = rows[0]["input_image_bytes"]
    intro = (
        f"`bench/bench_memory.py`: {args.size}x{args.size} edit image (float32: {image_bytes:,} bytes = "
        f"{_mib(image_bytes)}) + {args.ref}x{args.ref} reference, repainting with a "
        f"{5 * args.size // 16}x{3 * args.size // 8} px mask, {args.tokens}-token budget, LoRA layout. Each case runs "
        "in a fresh process; *extra peak* = RSS high-water mark (`ru_maxrss`) minus the resident size once the "
        "inputs exist (stitch: once the decoded canvas exists too), i.e. what the call itself needed, output "
        "included; the ratio is to the edit image's float32 size. `ace_plus_core.stitch` works in bands of rows "
        "with separable window sums; before that (same machine) the whole-photo stitches needed 5.76x and took "
        "44-62 s, the around-mask stitch 2.54x."
    )
    table = [
        f"| {who} | {r['stage']} {r['fit']} | {r['extra']:,} | {r['extra'] / image_bytes:.2f} | {_mib(r['peak'])} | "
        f"{r['seconds']:.1f} s |"
        for r in rows
    ]
    print("\n".join(table))
    if not args.no_write:
        if args.fits != list(FITS):
            raise SystemExit("only a run of every case is written to docs/BENCHMARKS.md (drop --fits)")
        write_section(table, who, intro)
        print(f"wrote {DOC.relative_to(REPO)}")


if __name__ == "__main__":
    main()
