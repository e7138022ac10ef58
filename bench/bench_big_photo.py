"""Control tasks on a phone photo: a 4000x3000 edit image, a 500x500 mask, crop to mask on (issue 20, item 4).

Side by side in one run, on 2 threads (``torch.set_num_threads(2)``, ``cv2.setNumThreads(2)``):

* **time**: :func:`ace_plus_core.canvas.build_canvas` with ``ContextSpec()`` (the canvas node's crop to mask) for
  every task, interleaved with ``cv2.Canny`` over the whole photo; minimum (and median) of ``--runs`` runs. The
  figure of merit is canny_repainting's time minus plain repainting's, over cv2's (goal: at most 2).
* **memory**: each case in a fresh process; *extra peak* = the resident-set high-water mark during the call (reset
  through ``/proc/self/clear_refs`` once the inputs exist; else ``ru_maxrss``) minus the resident size before it,
  over the photo's float32 size 4000 x 3000 x 3 x 4 B (goal: at most 2). ``tracemalloc`` cannot see torch.

``--before REV`` (default: the commit before the crop-only control tasks) runs the same cases with that commit's
``ace_plus_core`` (extracted with ``git archive`` into a temporary folder, imported as ``ace_plus_core_before``).
The photo is the astronaut of the examples mirrored out to 4000x3000 (natural edges, Canny edges on ~9 % of it).

    python bench/bench_big_photo.py [--runs 3] [--before REV | --before none] [--no-write]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import datetime, timezone
from io import BytesIO
from pathlib import Path

from machine import cpu_name, find_section, replace_section

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "BENCHMARKS.md"
SECTION = "## Big photos"
BEFORE = "169dc5d"  # the last commit that derived the guidance from the whole (outpainted) photo
H, W, MASK = 3000, 4000, (1250, 1750, 500, 500)  # photo height, width; mask top, left, height, width
THREADS = 2  # the setting; --threads changes it (and the section written)
CASES = {  # name -> build_canvas keyword arguments (beyond the photo, mask and ContextSpec())
    "repainting": dict(task="repainting"),
    "no_preprocess": dict(task="no_preprocess"),
    "recolorizing": dict(task="recolorizing"),
    "mosaic_repainting": dict(task="mosaic_repainting"),
    "canny_repainting": dict(task="canny_repainting"),
    "contour_repainting": dict(task="contour_repainting", control=True),
    "depth_repainting": dict(task="depth_repainting", control=True),
    "repainting_scale 0.6": dict(task="repainting", repainting_scale=0.6),
    # Outpainting masks the new strip: without the 500x500 mask, the crop is the strip and its context.
    "outpaint right 256, no mask": dict(task="repainting", outpaint=(0, 0, 0, 256), mask=False),
    "canny, outpaint right 256, no mask": dict(task="canny_repainting", outpaint=(0, 0, 0, 256), mask=False),
}


def _threads() -> None:
    import cv2
    import torch

    torch.set_num_threads(THREADS)
    cv2.setNumThreads(THREADS)


def _section() -> str:
    return SECTION if THREADS == 2 else f"{SECTION}, {THREADS} thread(s)"


def photo_u8():
    """The examples' astronaut (512x512) mirrored out to W x H, uint8 RGB."""
    import numpy as np
    from PIL import Image

    u8 = np.asarray(Image.open(REPO / "workflow_example_lora" / "inputs" / "astronaut.png").convert("RGB"))
    reps = (-(-H // u8.shape[0]), -(-W // u8.shape[1]))
    big = np.pad(u8, ((0, (reps[0] - 1) * u8.shape[0]), (0, (reps[1] - 1) * u8.shape[1]), (0, 0)), mode="symmetric")
    return np.ascontiguousarray(big[:H, :W])


def inputs():
    """(uint8 photo, IMAGE, MASK, control IMAGE) as LoadImage would give them."""
    import torch

    u8 = photo_u8()
    image = torch.from_numpy(u8).float().div_(255.0).unsqueeze(0)
    mask = torch.zeros((1, H, W))
    top, left, mh, mw = MASK
    mask[:, top : top + mh, left : left + mw] = 1.0
    control = image.flip(2).contiguous()  # a stand-in line drawing / depth map of the photo's size
    return u8, image, mask, control


def core(version: str, tmp: Path | None):
    """The ``ace_plus_core`` package of ``version`` ("after": this checkout; "before": extracted to ``tmp``)."""
    if version == "after":
        sys.path.insert(0, str(REPO))
        return importlib.import_module("ace_plus_core.canvas"), importlib.import_module("ace_plus_core.crop")
    sys.path.insert(0, str(tmp))
    return (importlib.import_module("ace_plus_core_before.canvas"),
            importlib.import_module("ace_plus_core_before.crop"))


def extract_before(rev: str, tmp: Path) -> None:
    """``rev``'s ace_plus_core as ``tmp/ace_plus_core_before`` (its imports are relative)."""
    data = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", rev, "ace_plus_core"],
                          capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(tmp, filter="data")
    (tmp / "ace_plus_core").rename(tmp / "ace_plus_core_before")


def call(canvas, crop, case: dict, image, mask, control):
    kwargs = {k: v for k, v in case.items() if k not in ("task", "control", "mask")}
    mask = mask if case.get("mask", True) else None
    return canvas.build_canvas("lora", case["task"], "resize_to_height", None, image, mask, 4096,
                               control_image=control if case.get("control") else None,
                               context=crop.ContextSpec(), **kwargs)


# ==================================================================== memory (one case per process)


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak(reset: bool) -> int:
    if reset:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(version: str, name: str, tmp: str | None) -> None:
    _threads()
    canvas, crop = core(version, Path(tmp) if tmp else None)
    u8, image, mask, control = inputs()
    del u8
    case = CASES[name]
    base = _rss()
    reset = _reset_peak()
    t0 = time.perf_counter()
    res = call(canvas, crop, case, image, mask, control)
    seconds = time.perf_counter() - t0
    peak = _peak(reset)
    print(json.dumps({"extra": peak - base, "seconds": seconds, "hwm_reset": reset,
                      "canvas": list(res.image.shape), "photo_bytes": image.numel() * image.element_size()}))


def memory(version: str, name: str, tmp: Path | None) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", version, name, "--threads", str(THREADS)]
    if tmp:
        cmd += ["--tmp", str(tmp)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"memory case {version} {name} failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ==================================================================== time (interleaved, in this process)


def timings(versions: list[str], tmp: Path | None, runs: int) -> dict:
    import cv2

    _threads()
    u8, image, mask, control = inputs()
    fns = {("cv2", "cv2.Canny whole photo"): lambda: cv2.Canny(u8, 100, 200)}
    for version in versions:
        canvas, crop = core(version, tmp)
        for name, case in CASES.items():
            fns[(version, name)] = lambda canvas=canvas, crop=crop, case=case: call(canvas, crop, case, image, mask,
                                                                                    control)
    for fn in fns.values():  # warm-up
        fn()
    times: dict = {k: [] for k in fns}
    for _ in range(runs):
        for key, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t0)
    return {k: (min(v), statistics.median(v)) for k, v in times.items()}


# ==================================================================== report


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.1f} / {five:.1f} / {fifteen:.1f} (1 / 5 / 15 min)"


def machine() -> str:
    import torch

    return (f"{platform.system()} {platform.machine()}, {cpu_name()}, {os.cpu_count()} CPUs, torch {torch.__version__}"
            f", {THREADS} threads")


def write_section(body: str) -> None:
    """Replace the "Big photos" section of docs/BENCHMARKS.md (other sections untouched)."""
    text, match = find_section(DOC, _section())
    replace_section(DOC, text, match, body)


def main() -> None:
    global THREADS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="timed runs per case (interleaved)")
    ap.add_argument("--before", default=BEFORE, help="the commit to compare with ('none': this checkout only)")
    ap.add_argument("--threads", type=int, default=THREADS, help="torch and OpenCV threads (the goals: 2)")
    ap.add_argument("--no-write", action="store_true", help="do not update docs/BENCHMARKS.md")
    ap.add_argument("--child", nargs=2, metavar=("VERSION", "CASE"), help=argparse.SUPPRESS)
    ap.add_argument("--tmp", help=argparse.SUPPRESS)
    args = ap.parse_args()
    THREADS = args.threads
    if args.child:
        child(*args.child, args.tmp)
        return

    who, started = machine(), datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load_start = load()
    print(f"machine: {who}; {started}; {load_start}")
    photo_bytes = H * W * 3 * 4
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = None
        versions = ["after"]
        if args.before != "none":
            tmp = Path(tmp_name)
            extract_before(args.before, tmp)
            versions = ["before", "after"]
        mem = {(v, name): memory(v, name, tmp) for v in versions for name in CASES}
        for (v, name), r in mem.items():
            print(f"memory {v:6s} {name:32s}: extra peak {r['extra'] / 2**20:8.0f} MiB = "
                  f"{r['extra'] / photo_bytes:5.2f}x the photo ({r['seconds']:.2f} s)")
        t = timings(versions, tmp, args.runs)
    load_end = load()
    for key, (best, med) in t.items():
        print(f"time {key[0]:6s} {key[1]:32s}: min {best * 1000:8.0f} ms, median {med * 1000:8.0f} ms")
    cv2_min = t[("cv2", "cv2.Canny whole photo")][0]
    lines = []
    for v in versions:
        extra = t[(v, "canny_repainting")][0] - t[(v, "repainting")][0]
        worst = max((mem[(v, name)]["extra"] / photo_bytes, name) for name in CASES)
        lines.append((v, extra, extra / cv2_min, worst))
        print(f"{v}: canny_repainting - repainting = {extra * 1000:.0f} ms = {extra / cv2_min:.2f}x cv2.Canny "
              f"(goal <= 2); largest extra peak {worst[0]:.2f}x the photo ({worst[1]}; goal <= 2)")
    print(f"at the end: {load_end}")

    rows = ["| case | " + " | ".join(f"{v}: time min (median) | {v}: extra peak, x photo" for v in versions) + " |",
            "|---|" + "---:|---:|" * len(versions)]
    for name in CASES:
        cells = []
        for v in versions:
            best, med = t[(v, name)]
            r = mem[(v, name)]
            cells.append(f"{best * 1000:.0f} ms ({med * 1000:.0f}) | {r['extra'] / 2**20:.0f} MiB, "
                         f"{r['extra'] / photo_bytes:.2f}x")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    cv = t[("cv2", "cv2.Canny whole photo")]
    summary = [f"- cv2.Canny (aperture 3, L1) over the whole photo: {cv[0] * 1000:.0f} ms ({cv[1] * 1000:.0f})"]
    summary += [f"- **{v}**: canny_repainting - repainting = {extra * 1000:.0f} ms = **{ratio:.2f}x** cv2.Canny of the "
               f"whole photo (goal <= 2); largest extra peak **{worst[0]:.2f}x** the photo ({worst[1]}; goal <= 2)"
               for v, extra, ratio, worst in lines]
    hwm = "VmHWM reset through /proc/self/clear_refs" if all(r["hwm_reset"] for r in mem.values()) else "ru_maxrss"
    body = (
        f"{_section()}\n\n`bench/bench_big_photo.py` (issue 20, item 4): a {W}x{H} photo (the astronaut mirrored out; "
        f"float32 {photo_bytes:,} bytes = {photo_bytes / 2**20:.0f} MiB), a {MASK[3]}x{MASK[2]} mask, crop to mask "
        f"on (`ContextSpec()`), 4096-token budget, LoRA layout, {THREADS} threads for torch and OpenCV. Time: "
        f"`build_canvas`, minimum (median) of {args.runs} interleaved runs in one process. Memory: each case in a "
        f"fresh process, the peak resident size during the call ({hwm}) minus the resident size before it. "
        f"*before* = commit {args.before if args.before != 'none' else '-'} (guidance over the whole photo), "
        "*after* = this checkout.\n\n"
        f"{who}; {started}; at the start {load_start}, at the end {load_end} (the machine was shared).\n\n"
        + "\n".join(summary) + "\n\n" + "\n".join(rows) + "\n"
    )
    print(body)
    if not args.no_write:
        write_section(body)
        print(f"wrote {DOC.relative_to(REPO)}")


if __name__ == "__main__":
    main()
