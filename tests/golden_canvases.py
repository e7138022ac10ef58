"""Golden canvases: what the canvas-building nodes of every saved workflow output, as SHA-256 digests.

For each workflow (the nine official ACE++ workflows and the 13 examples of this pack) the UI file is converted
with runner/workflow_convert.py against the live node definitions (``MaskPreview+`` dropped for the official
ones), cut down to its canvas-building nodes (ACE++ Canvas, ACE++ LoRA Processor, ACE++ FFT Processor) and their
ancestors, and run on ComfyUI's real executor with a test-only probe on every IMAGE, MASK and INT output of those
nodes. No model is loaded: nothing samples.

Recorded per output: the SHA-256 of the tensor's float32 contiguous bytes and its shape, or the INT's value; the
file also records the torch version and CPU kernel family the digests hold for (``platform``).
The two official control workflows (``contour_repainting``) need a line drawing on ``control_image``; they run
with one, wired as tests/test_official_workflows.py does (the ``+control_image`` variant).

Inputs: the examples' LoadImage files from each workflow's own ``inputs/`` folder (the runner's own look-up);
the official workflows' generated inputs from tests/test_official_workflows.py; JPEG and WebP files among them
staged as PNGs of PIL's decoding (:func:`_inputs_as_png`).

``python tests/golden_canvases.py --pack DIR --out FILE`` boots ComfyUI with the pack at DIR and writes FILE
(tests/data/golden_canvases.json is made from a frozen commit); tests/test_golden_canvases.py recomputes the
digests with the working tree's pack and compares.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import subprocess
import sys
import tempfile
from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
for _p in (REPO / "runner", TESTS):  # appended, as conftest.py does: the pack's nodes/ must not shadow ComfyUI's
    if str(_p) not in sys.path:
        sys.path.append(str(_p))

import run_workflow as rw  # noqa: E402
import workflow_convert as wc  # noqa: E402
from paths import OFFICIAL_WORKFLOWS  # noqa: E402

CANVAS_NODES = ("ACEPlusCanvas", "ACEPlusLoraProcessor", "ACEPlusFFTProcessor")
PROBED = {"IMAGE": "image", "MASK": "mask", "INT": "value"}
EXAMPLE_DIRS = (REPO / "workflow_example_lora", REPO / "workflow_example_fft")
GOLDEN = TESTS / "data" / "golden_canvases.json"
#: One file per CPU kernel family (tests/test_golden_canvases.py takes the one it runs on).
GOLDEN_FILES = (GOLDEN, TESTS / "data" / "golden_canvases_default.json")
# Resampled pixels are bit-exact only within one torch build and one family of CPU kernels: torch's AVX2 and
# AVX512 kernels give the same bits (checked with ATEN_CPU_CAPABILITY=avx2), its plain ("DEFAULT") ones do not.
SAME_BITS = ("AVX2", "AVX512")


def platform() -> dict[str, str]:
    """What the digests depend on beyond the pack: the torch version and its CPU kernel family."""
    import torch

    cap = torch.backends.cpu.get_cpu_capability()
    return {"torch": torch.__version__, "cpu_kernels": "AVX2/AVX512" if cap in SAME_BITS else cap}


def workflow_files() -> list[Path]:
    """The official workflows, then the examples (UI format only: face_swap_api.json is an export of one)."""
    official = sorted(OFFICIAL_WORKFLOWS.glob("ACE_Plus_*.json")) if OFFICIAL_WORKFLOWS.is_dir() else []
    examples = [p for d in EXAMPLE_DIRS for p in sorted(d.glob("*.json")) if wc.is_ui_workflow(json.loads(p.read_text()))]
    return official + examples


def workflow_key(path: Path) -> str:
    return path.stem if path.parent == OFFICIAL_WORKFLOWS else f"{path.parent.name}/{path.stem}"


def _links(node: dict) -> list[str]:
    return [v[0] for v in node["inputs"].values() if rw._is_link(v)]


def canvas_subgraph(api: dict) -> dict:
    """The canvas-building nodes and their ancestors (empty when the workflow has none)."""
    keep: set[str] = set()
    todo = [k for k, v in api.items() if v["class_type"] in CANVAS_NODES]
    while todo:
        node_id = todo.pop()
        if node_id not in keep:
            keep.add(node_id)
            todo += _links(api[node_id])
    return {k: v for k, v in api.items() if k in keep}


def add_probes(graph: dict, object_info: dict, key: str) -> dict[str, str]:
    """A probe on every IMAGE/MASK/INT output of each canvas node; returns probe label -> record name."""
    labels = {}
    canvas_ids = sorted((k for k, v in graph.items() if v["class_type"] in CANVAS_NODES), key=wc._id_key)
    for node_id in canvas_ids:
        info = object_info[graph[node_id]["class_type"]]
        for slot, (out_type, out_name) in enumerate(zip(info["output"], info["output_name"])):
            if out_type not in PROBED:
                continue
            name = f"{node_id} {graph[node_id]['class_type']}.{out_name}"
            label = f"golden/{key}/{name}"
            graph[f"golden_probe_{node_id}_{slot}"] = {
                "class_type": "ACEPlusTestOnlyProbe", "inputs": {"label": label, PROBED[out_type]: [node_id, slot]}}
            labels[label] = name
    return labels


def digest(value) -> dict:
    if isinstance(value, int):
        return {"value": value}
    t = value.detach().float().cpu().contiguous()
    return {"shape": list(t.shape), "sha256": hashlib.sha256(t.numpy().tobytes()).hexdigest()}


def prepare(path: Path, host, object_info: dict) -> tuple[str, dict]:
    """(key, API graph) of one workflow, its inputs staged in ComfyUI's input folder."""
    import test_official_workflows as tow

    doc = json.loads(path.read_text())
    key = workflow_key(path)
    if path.parent != OFFICIAL_WORKFLOWS:
        api = wc.ui_to_api(doc, object_info)
        for node in rw.image_nodes(api).values():
            src = rw.find_local_input(path, node["inputs"]["image"])
            if src is None:
                raise FileNotFoundError(f"{path}: input {node['inputs']['image']} is not in {path.parent}/inputs")
            (host.input_dir / rw._clean_name(node["inputs"]["image"])).write_bytes(src.read_bytes())
        return key, _inputs_as_png(host, api)
    api = wc.ui_to_api(doc, object_info, drop_types={"MaskPreview+"})
    if path.stem in tow.CONTROL:  # contour_repainting refuses to run without a drawing on control_image
        (proc_id,) = [k for k, v in api.items() if v["class_type"] in CANVAS_NODES]
        doc, key = tow._add_control_image(doc, int(proc_id)), f"{key}+control_image"
        api = wc.ui_to_api(doc, object_info, drop_types={"MaskPreview+"})
    tow._write_inputs(host.input_dir, api)
    return key, _inputs_as_png(host, api)


def _inputs_as_png(host, api: dict) -> dict:
    """Staged inputs that are not PNG (JPEG, WebP) are replaced by lossless RGB(A) PNGs of PIL's decoding (what
    LoadImage gives up to 0.3.75, so the digests are those of the original files there). ComfyUI 0.33's LoadImage
    decodes through PyAV (ffmpeg), whose JPEG and WebP pixels differ from PIL's in their last bits; 8-bit RGB(A)
    PNG decodes to the same bytes either way."""
    from PIL import Image, ImageOps

    for node in rw.image_nodes(api).values():
        name = rw._clean_name(node["inputs"]["image"])
        with Image.open(host.input_dir / name) as img:
            if img.format == "PNG":
                continue
            mode = "RGBA" if "A" in img.getbands() else "RGB"
            ImageOps.exif_transpose(img).convert(mode).save(host.input_dir / f"{name}.png")
        node["inputs"]["image"] = f"{name}.png"
    return api


def compute(host, paths: list[Path] | None = None) -> dict[str, dict[str, dict]]:
    """{workflow key: {"<node id> <class>.<output>": digest}} for every workflow that has a canvas node."""
    recorded = host.node_class_mappings["ACEPlusTestOnlyProbe"].RECORDED
    object_info = host.object_info()
    out = {}
    for path in paths if paths is not None else workflow_files():
        key, api = prepare(path, host, object_info)
        graph = canvas_subgraph(api)
        if not graph:
            logging.info("%s: no canvas node, skipped", key)
            continue
        labels = add_probes(graph, object_info, key)
        for label in labels:
            recorded.pop(label, None)
        host.run(graph)
        out[key] = {name: digest(recorded[label]) for label, name in labels.items()}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pack", type=Path, default=REPO, help="the node pack to load (a checkout of this repo)")
    parser.add_argument("--out", type=Path, default=GOLDEN, help="the JSON file to write")
    parser.add_argument("--like", type=Path, help="only the workflows of this golden file (e.g. to add the file of "
                        "another CPU kernel family for the same reference)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import comfy_host

    paths = None
    if args.like:
        keys = {k.split("+")[0] for k in json.loads(args.like.read_text())["workflows"]}
        paths = [p for p in workflow_files() if workflow_key(p) in keys]
    with tempfile.TemporaryDirectory() as base:
        host = comfy_host.boot(Path(base), extra_custom_nodes=(TESTS / "comfy_test_nodes",), pack_dir=args.pack)
        result = compute(host, paths)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "-C", str(args.pack), "rev-parse", "HEAD"], capture_output=True, text=True)
    doc = {"platform": platform(), "reference_commit": commit.stdout.strip() or str(args.pack), "workflows": result}
    args.out.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    logging.info("%s: %d workflows, %d outputs (pack %s)", args.out, len(result),
                 sum(len(v) for v in result.values()), args.pack)
    return 0


if __name__ == "__main__":
    sys.exit(main())
