"""Token accounting: the official default graphs vs this pack's crop-around-mask canvas, for three local edits.

    python bench/token_accounting.py [--write docs/TOKENS.md]

Everything is computed by the canvas code itself (no sampling), on random images of the scenario's sizes:

* official LoRA: ``ACEPlusLoraProcessor`` defaults (max_seq_length 3072, so a 2 x 3072 token budget), the
  official workflow crops the decode at SLICE_W and keeps that size (no scale-back, no stitch);
* official FFT: ``ACEPlusFFTProcessor`` defaults (max_seq_length 3072, keep_pixels_rate 0.8), same output rule;
* this pack: ``ACE++ Canvas`` with crop_to_mask (context 0.25 + 32 px, min 384 px, upscale) at 3072 image tokens,
  and at 2048 (a third of the official LoRA budget), then ``ACE++ Stitch`` into the original; for the try-on also
  a tighter crop (context 0.1 + 16 px) with the reference kept at half the edit height (keep_pixels_pad 0.5).

Columns: tokens per sampling step (image tokens of the canvas), the pixels the model renders for the edited
(masked) region (mask area x the canvas scale of the edit area), and the output resolution.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ace_plus_core.canvas import build_canvas, official_processor  # noqa: E402
from ace_plus_core.crop import ContextSpec  # noqa: E402

SCENARIOS = [
    # name, edit (w, h), mask box (left, top, w, h), reference (w, h)
    ("face swap", (2048, 2048), (874, 600, 300, 380), (512, 512)),
    ("virtual try-on", (1536, 2048), (418, 620, 700, 820), (768, 1024)),
    ("logo paste", (4000, 3000), (1800, 1300, 500, 400), (512, 512)),
]
BUDGET = 3072
SMALL = 2048  # a third of the official LoRA graph's 2 x 3072


def _inputs(edit_wh, box, ref_wh):
    w, h = edit_wh
    image = torch.rand(1, h, w, 3)
    mask = torch.zeros(1, h, w)
    left, top, bw, bh = box
    mask[0, top : top + bh, left : left + bw] = 1
    ref = torch.rand(1, ref_wh[1], ref_wh[0], 3)
    return image, mask, ref, bw * bh


def _row(label, g, mask_area, out_wh):
    rendered = mask_area * g.scale_x * g.scale_y
    return label, g.tokens, rendered, out_wh


def account():
    rows = []
    for name, edit_wh, box, ref_wh in SCENARIOS:
        image, mask, ref, area = _inputs(edit_wh, box, ref_wh)
        lora = official_processor("lora", ref, image, mask, True, "repainting", max_seq_length=BUDGET)
        fft = official_processor("fft", ref, image, mask, True, "repainting", max_seq_length=BUDGET,
                                 keep_pixels_rate=0.8)
        ours = build_canvas("lora", "repainting", "resize_to_height", ref, image, mask, BUDGET, context=ContextSpec())
        small = build_canvas("lora", "repainting", "resize_to_height", ref, image, mask, SMALL, context=ContextSpec())
        whole = build_canvas("lora", "repainting", "resize_to_height", ref, image, mask, BUDGET)
        out = []
        for label, r in (("official LoRA (2 x 3072)", lora), ("official FFT (3072)", fft)):
            g = r.geometry[0]
            out.append(_row(label, g, area, (g.canvas_w - r.slice_w, g.canvas_h)))
        out.append(_row("ACE++ Canvas, whole image (3072)", whole.geometry[0], area, edit_wh))
        out.append(_row("ACE++ Canvas, crop to mask (3072)", ours.geometry[0], area, edit_wh))
        out.append(_row("ACE++ Canvas, crop to mask (2048)", small.geometry[0], area, edit_wh))
        if name == "virtual try-on":
            tight = build_canvas("lora", "repainting", "keep_pixels_pad", ref, image, mask, SMALL, 0.5,
                                 context=ContextSpec(margin_rel=0.1, margin_px=16))
            out.append(_row("ACE++ Canvas, tight crop, reference at half height (2048)", tight.geometry[0], area,
                            edit_wh))
        rows.append((name, edit_wh, box, ref_wh, out))
    return rows


def markdown(rows) -> str:
    lines = [
        "# Token accounting: official graphs vs crop to mask",
        "",
        "Computed by `bench/token_accounting.py` (the canvas code itself, no sampling); do not edit by hand.",
        "Rendered px = pixels the model generates for the masked region (mask area x canvas scale of the edit area).",
        "",
    ]
    for name, edit_wh, box, ref_wh, out in rows:
        lines += [
            f"## {name}: {edit_wh[0]}x{edit_wh[1]} photo, {box[2]}x{box[3]} mask, {ref_wh[0]}x{ref_wh[1]} reference",
            "",
            "| graph | tokens per step | rendered px of the edited region | output resolution | rendered vs official LoRA |",
            "|---|---:|---:|---|---:|",
        ]
        base = out[0][2]
        for label, tokens, rendered, (ow, oh) in out:
            lines.append(f"| {label} | {tokens} | {rendered:,.0f} | {ow}x{oh} | {rendered / base:.1f}x |")
        lines.append("")
    lines += [
        "## Summary",
        "",
        "Goal: at equal or fewer tokens than the official graph, at least 3x the rendered pixels of the edited region,",
        "and the full output resolution.",
        "",
        "| scenario | crop to mask at 3072 vs official LoRA (2x the tokens) | vs official FFT (same tokens) | best at "
        "2048 vs official LoRA (3x the tokens) | goal met at 3072 / 2048 |",
        "|---|---:|---:|---:|---|",
    ]
    for name, _, _, _, out in rows:
        ours, best_small = out[3][2], max(r[2] for r in out[4:])
        lora, fft = out[0][2], out[1][2]
        met = ["yes" if px >= 3 * max(lora, fft) else "no" for px in (ours, best_small)]
        lines.append(f"| {name} | {ours / lora:.1f}x | {ours / fft:.1f}x | {best_small / lora:.1f}x | "
                     f"{met[0]} / {met[1]} |")
    lines += [
        "",
        "The try-on garment mask covers 18 % of the photo: the crop (mask + 25 % context on each side) is most of the",
        "photo, so cropping gains little there, and the 768x1024 garment reference, resized to the edit height, takes",
        "a third of the canvas. A tighter crop with the reference kept at half the edit height helps at 2048 tokens,",
        "but the 3x goal is still not met: the masked region itself is large, so rendering it at 3x the official",
        "pixels needs more tokens than the official graph spends. The output is still full resolution and the",
        "unmasked pixels the input's own. Face swap and logo paste meet the goal even at a third of the official",
        "budget. Of the options added with the official nodes' gaps in mind, none lowers the token count:",
        "repainting_scale and soft seams change what the model sees, not the canvas size, and a second garment",
        "reference (front and back) costs tokens; tighter context and keep_pixels_pad are what help here.",
    ]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", type=Path, help="write the markdown table to this file")
    args = ap.parse_args()
    text = markdown(account())
    print(text)
    if args.write:
        args.write.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
