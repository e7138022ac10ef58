"""Run an ACE++ example workflow headless through the real ComfyUI executor, writing images and a JSON report.

    python tools/run_workflow.py workflow_example_lora/local_editing_api.json [--models DIR] [--out DIR]
        [--image NAME=PATH ...] [--prompt TEXT] [--seed N] [--steps N]

Workflows are API-format JSON (the format ComfyUI's "Export (API)" writes and its /prompt endpoint takes).
``LoadImage`` file names are looked up next to the workflow (``inputs/``) and copied into ComfyUI's input folder;
``--image NAME=PATH`` replaces one of them.

Weights:
* ``--models DIR``: a ComfyUI-style models folder (``diffusion_models/``, ``loras/``, ``vae/``, ``text_encoders/``...).
* ``COMFYUI_PATH`` set: that ComfyUI (its ``models/`` and ``extra_model_paths.yaml``).
* neither: synthetic weights (tools/tiny_models.py): a full-width, one-block random FLUX with the real layout
  (384 Fill / 448 FFT), a random CLIP-L in place of CLIP-L + T5-XXL, a tiny 16-channel VAE. The result is noise
  shaped like the real output (sizes, crops, stitching are real); it proves the graph runs, not the art.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import comfy_host  # noqa: E402

MODEL_FOLDERS = ("diffusion_models", "loras", "vae", "vae_approx", "text_encoders", "clip", "clip_vision",
                 "style_models", "unet")

# Real model files -> the synthetic stand-ins used when no weights are given.
SYNTHETIC = {
    "UNETLoader": {"unet_name": lambda name: "demo_ace_plus_fft.safetensors" if "fft" in name.lower()
                   else "demo_flux_fill.safetensors"},
    "ACEPlusLoader": {"unet_name": lambda name: "demo_ace_plus_fft.safetensors"},
    "VAELoader": {"vae_name": lambda name: "tiny_taef1.safetensors"},
}
SYNTHETIC_STEPS = 4
SYNTHETIC_TOKENS = 1024  # canvas budget in synthetic mode: CPU-friendly; outputs keep their full size


def _synthetic_graph(prompt: dict) -> tuple[dict, list[str]]:
    """Swap real model files for synthetic ones; drop LoRAs (they belong to real weights). Returns notes."""
    notes = []
    prompt = json.loads(json.dumps(prompt))
    for node_id, node in list(prompt.items()):
        ct, inputs = node["class_type"], node["inputs"]
        for key, fn in SYNTHETIC.get(ct, {}).items():
            if key in inputs:
                new = fn(inputs[key])
                notes.append(f"{node_id} {ct}.{key}: {inputs[key]} -> {new}")
                inputs[key] = new
        if ct == "DualCLIPLoader":
            node["class_type"] = "CLIPLoader"
            node["inputs"] = {"clip_name": "clip_l_random.safetensors", "type": "stable_diffusion"}
            notes.append(f"{node_id} DualCLIPLoader -> CLIPLoader(clip_l_random) (no T5-XXL in synthetic mode)")
        if ct in ("LoraLoaderModelOnly", "ACEPlusLoraLoader") and "strength_model" in inputs:
            inputs["strength_model"] = 0.0
            notes.append(f"{node_id} {ct}: strength 0 (an ACE++ LoRA does not fit synthetic weights)")
        if ct in ("LoraLoaderModelOnly",) and "lora_name" in inputs:
            inputs["lora_name"] = "tiny_fill_lora_peft.safetensors"
        for key in ("max_image_tokens", "max_seq_length"):
            if isinstance(inputs.get(key), int) and inputs[key] > SYNTHETIC_TOKENS:
                notes.append(f"{node_id} {ct}.{key}: {inputs[key]} -> {SYNTHETIC_TOKENS}")
                inputs[key] = SYNTHETIC_TOKENS
    return prompt, notes


def _set_values(prompt: dict, args) -> list[str]:
    notes = []
    for node_id, node in prompt.items():
        inputs = node["inputs"]
        if args.seed is not None and "seed" in inputs and not isinstance(inputs["seed"], list):
            inputs["seed"] = args.seed
        if args.steps is not None and "steps" in inputs and not isinstance(inputs["steps"], list):
            inputs["steps"] = args.steps
            notes.append(f"{node_id} steps -> {args.steps}")
        if args.prompt is not None and node["class_type"] == "CLIPTextEncode" and inputs.get("text"):
            inputs["text"] = args.prompt
    return notes


def _stage_inputs(prompt: dict, workflow: Path, overrides: dict[str, Path], input_dir: Path) -> list[str]:
    staged = []
    for node in prompt.values():
        if node["class_type"] not in ("LoadImage", "LoadImageMask"):
            continue
        name = node["inputs"]["image"]
        src = overrides.get(name)
        if src is None:
            for cand in (workflow.parent / "inputs" / name, workflow.parent / name):
                if cand.is_file():
                    src = cand
                    break
        if src is None:
            raise SystemExit(f"LoadImage file {name!r} not found next to {workflow} (inputs/) and not given by --image")
        shutil.copy(src, input_dir / name)
        staged.append(f"{name} <- {src}")
    return staged


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workflow", type=Path, help="API-format workflow JSON")
    ap.add_argument("--models", type=Path, help="ComfyUI-style models folder with the real weights")
    ap.add_argument("--out", type=Path, default=Path("output/ace_plus_run"), help="where images and report go")
    ap.add_argument("--image", action="append", default=[], metavar="NAME=PATH", help="replace a LoadImage file")
    ap.add_argument("--prompt", help="replace the text of every non-empty CLIPTextEncode")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--steps", type=int)
    args = ap.parse_args(argv)

    prompt = json.loads(args.workflow.read_text())
    if "nodes" in prompt:
        raise SystemExit(f"{args.workflow} is a UI-format workflow; export it with 'Export (API)' in ComfyUI")
    overrides = {}
    for item in args.image:
        name, _, path = item.partition("=")
        overrides[name] = Path(path)

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="ace_plus_run_"))
    host = comfy_host.boot(base)

    import os

    notes: list[str] = []
    comfy_path = os.environ.get("COMFYUI_PATH")
    if args.models or comfy_path:
        mode = "real weights"
        if args.models:
            for folder in MODEL_FOLDERS:
                host.add_model_dir(folder, args.models / folder)
        if comfy_path:
            for folder in MODEL_FOLDERS:
                host.add_model_dir(folder, Path(comfy_path) / "models" / folder)
            extra = Path(comfy_path) / "extra_model_paths.yaml"
            if extra.is_file():
                import utils.extra_config

                utils.extra_config.load_extra_path_config(str(extra))
    else:
        mode = "synthetic weights"
        import tiny_models

        cache = comfy_host.default_host_dir() / "demo-models"
        print(f"[ace++] no --models given: building/reusing synthetic weights in {cache}", flush=True)
        tiny_models.build_model_set(cache, demo=True)
        for folder in ("diffusion_models", "loras", "vae", "vae_approx", "text_encoders"):
            host.add_model_dir(folder, cache / folder)
        prompt, notes = _synthetic_graph(prompt)
        if args.steps is None:
            args.steps = SYNTHETIC_STEPS
    notes += _set_values(prompt, args)
    staged = _stage_inputs(prompt, args.workflow, overrides, host.input_dir)
    for n in notes:
        print(f"[ace++] {n}", flush=True)

    timings: dict[str, float] = {}
    state = {"node": None, "t": time.perf_counter()}

    def on_event(event, data):
        if event == "executing":
            now = time.perf_counter()
            if state["node"] is not None:
                timings[state["node"]] = now - state["t"]
            state["node"], state["t"] = data.get("node"), now
            if data.get("node") is not None:
                ct = prompt.get(data["node"], {}).get("class_type", "?")
                print(f"[ace++] node {data['node']} {ct}", flush=True)
        elif event == "progress":
            print(f"[ace++]   node {data.get('node')} step {data.get('value')}/{data.get('max')}", flush=True)

    t0 = time.perf_counter()
    result = host.run(prompt, on_event=on_event)
    elapsed = time.perf_counter() - t0

    from PIL import Image

    images = []
    for src in result.image_paths(host.output_dir):
        dst = out / src.name
        shutil.copy(src, dst)
        with Image.open(dst) as im:
            images.append({"path": str(dst), "width": im.width, "height": im.height})
    report = {
        "workflow": str(args.workflow.resolve()),
        "mode": mode,
        "seconds": round(elapsed, 2),
        "inputs": staged,
        "notes": notes,
        "node_seconds": {k: round(v, 3) for k, v in timings.items() if k is not None},
        "images": images,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    for im in images:
        print(f"[ace++] wrote {im['path']} ({im['width']}x{im['height']})", flush=True)
    print(f"[ace++] report: {out / 'report.json'} ({mode}, {elapsed:.1f} s)", flush=True)
    shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
