"""Run a ComfyUI workflow headless — in-process through the real ComfyUI executor, or on running ComfyUI servers —
writing the images and a JSON report.

    python runner/run_workflow.py WORKFLOW.json [--out DIR] [--models DIR] [--image NAME=PATH ...]
        [--batch-image NAME=GLOB ...] [--drop-node-type TYPE ...] [--prompt TEXT] [--seed N] [--steps N]
        [--server URL ...] [--synthetic]

Workflows may be UI format (what ComfyUI's frontend saves: ``nodes``/``links``) or API format ("Export (API)",
what ``POST /prompt`` takes); the format is detected. A UI workflow is converted with runner/workflow_convert.py
against the live node definitions (``/object_info``) exactly as the frontend's ``graphToPrompt()`` does.
``--drop-node-type TYPE`` removes nodes of a type the ComfyUI lacks (e.g. ``MaskPreview+``, a third-party
preview) together with the links from them.

Images: each ``LoadImage``/``LoadImageMask`` file is looked up next to the workflow (``inputs/`` or beside it).
``--image NAME=PATH`` replaces one; NAME is the node's file name, its node id or its title.
``--batch-image NAME=GLOB`` runs the graph once per matching file (sorted; several ``--batch-image`` options are
paired in order and must match as many files); each run writes into ``OUT/run_NNN_<file stem>/``. Every run
uses the saved seed (or ``--seed``): a frontend "randomize" seed control is not applied between runs; ``{a|b}``
dynamic prompts of a UI workflow are drawn per run, as the frontend does per queued prompt.

Backends:
* in-process (default): boots ComfyUI (runner/comfy_host.py), loads this pack through ComfyUI's own loader, runs
  the graph through its ``PromptExecutor``. Weights: ``--models DIR`` (a ComfyUI-style models folder), or
  ``COMFYUI_PATH`` (that ComfyUI's ``models/`` and ``extra_model_paths.yaml``, when they hold a diffusion model),
  or else **synthetic weights** (runner/tiny_models.py): a full-width, one-block random FLUX with the real layout
  (384 Fill / 448 FFT), a random CLIP-L in place of CLIP-L + T5-XXL, a tiny 16-channel VAE, no Redux. The result
  is noise shaped like the real output (sizes, crops, stitching are real); it proves the graph runs, not the art.
* ``--server URL`` (repeatable): sends the API graph(s) to running ComfyUI servers over their HTTP API (inputs
  uploaded with ``POST /upload/image``, ``POST /prompt``, progress from the ``/ws`` websocket, results from
  ``/history/<id>`` and ``GET /view``). A batch is spread over the servers: each takes the next run as soon as it
  is free (every server gets one to start with). The servers use their own weights; ``--synthetic`` applies the
  synthetic substitutions (the servers then need the synthetic files). Standard library only.

Progress (per node, per sampler step) goes to stdout; ``OUT/report.json`` lists every run: inputs, server,
status, seconds per node, images (``type`` output = saved, temp = previews, written under ``preview/``).
Exit status 0 when every run succeeded, 1 otherwise.
"""

from __future__ import annotations

import argparse
import base64
import copy
import glob
import json
import mimetypes
import os
import queue
import random
import shutil
import socket
import struct
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import workflow_convert as wc  # noqa: E402

MODEL_FOLDERS = ("diffusion_models", "loras", "vae", "vae_approx", "text_encoders", "clip", "clip_vision",
                 "style_models", "unet")
IMAGE_LOADERS = ("LoadImage", "LoadImageMask")

#: Synthetic model sets (runner/tiny_models.py): "demo" passes ComfyUI's unpatched Flux detection (the runner's
#: default); "tiny" needs the test-only detection patch (tests/tiny_flux_detection.py) and is for tests. Each has a
#: LoRA made for its Fill model (real key names, small rank), applied at the workflow's own strength.
SYNTHETIC_SETS: dict[str, dict[str, str]] = {
    "demo": {"fill": "demo_flux_fill.safetensors", "fft": "demo_ace_plus_fft.safetensors",
             "lora": "demo_fill_lora_peft.safetensors"},
    "tiny": {"fill": "tiny_flux_fill.safetensors", "fft": "tiny_ace_plus_fft.safetensors",
             "lora": "tiny_fill_lora_peft.safetensors"},
}
SYNTHETIC_STEPS = 2  # synthetic output is noise whatever the count: two steps prove the sampler loop
# Budgets in synthetic mode, CPU-friendly (outputs keep their full size): ACE++ Canvas at most 256 image tokens (the
# face-swap main job: 28 -> 19 s on one core, against 1024), the official processors at most 1024 (their smallest
# max_seq_length).
SYNTHETIC_TOKENS = 256
SYNTHETIC_SEQ_LENGTH = 1024
#: The Redux branch (FLUX.1 Redux + SigCLIP vision) has no synthetic stand-in: StyleModelApply is bypassed (its
#: conditioning input passes through, as the frontend's bypass does) and the branch's loaders are removed.
REDUX_TYPES = ("StyleModelApply", "CLIPVisionEncode", "StyleModelLoader", "CLIPVisionLoader")


class RunnerError(RuntimeError):
    """A workflow, input or server problem the runner reports instead of a traceback."""


# --------------------------------------------------------------------------------------------------
# Graph edits (API format)
# --------------------------------------------------------------------------------------------------


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)


def drop_node_types(prompt: dict, types) -> tuple[dict, list[str]]:
    """Remove nodes of the given types from an API graph and every input linked to them (as the frontend
    does for a muted node)."""
    types = set(types or ())
    prompt = copy.deepcopy(prompt)
    gone = {k for k, v in prompt.items() if v.get("class_type") in types}
    notes = [f"{k} {prompt[k]['class_type']}: dropped" for k in sorted(gone, key=wc._id_key)]
    for k in gone:
        del prompt[k]
    for node_id, node in prompt.items():
        for name, value in list(node["inputs"].items()):
            if _is_link(value) and value[0] in gone:
                del node["inputs"][name]
                notes.append(f"{node_id} {node['class_type']}.{name}: link from a dropped node removed")
    return prompt, notes


def bypass_redux(prompt: dict) -> tuple[dict, list[str]]:
    """Bypass ``StyleModelApply`` (its CONDITIONING output becomes its conditioning input) and remove the Redux
    loaders/encoders nothing else uses."""
    prompt = copy.deepcopy(prompt)
    notes: list[str] = []
    applies = {k: v for k, v in prompt.items() if v["class_type"] == "StyleModelApply"}
    if not applies:
        return prompt, notes

    def source(link):
        seen = set()
        while _is_link(link) and link[0] in applies and link[0] not in seen:
            seen.add(link[0])
            link = applies[link[0]]["inputs"].get("conditioning")
        return link

    for node in prompt.values():
        for name, value in list(node["inputs"].items()):
            if _is_link(value) and value[0] in applies:
                new = source(value)
                if _is_link(new):
                    node["inputs"][name] = list(new)
                else:
                    del node["inputs"][name]
    for k in applies:
        del prompt[k]
        notes.append(f"{k} StyleModelApply: bypassed (no synthetic Redux model)")
    while True:  # remove the branch's now unused nodes
        used = {v[0] for node in prompt.values() for v in node["inputs"].values() if _is_link(v)}
        orphans = [k for k, v in prompt.items() if v["class_type"] in REDUX_TYPES and k not in used]
        if not orphans:
            return prompt, notes
        for k in orphans:
            notes.append(f"{k} {prompt[k]['class_type']}: removed with the Redux branch")
            del prompt[k]


def synthetic_graph(prompt: dict, model_set: str = "demo", tokens: int = SYNTHETIC_TOKENS,
                    seq_length: int = SYNTHETIC_SEQ_LENGTH) -> tuple[dict, list[str]]:
    """Swap real model files for synthetic ones (runner/tiny_models.py names), replace DualCLIPLoader by a
    CLIP-L CLIPLoader, cap ``max_image_tokens`` at ``tokens`` and ``max_seq_length`` at ``seq_length``, bypass the
    Redux branch. Returns (graph, notes)."""
    names = SYNTHETIC_SETS[model_set]
    prompt, notes = bypass_redux(prompt)
    for node_id, node in prompt.items():
        ct, inputs = node["class_type"], node["inputs"]
        if ct == "UNETLoader" and isinstance(inputs.get("unet_name"), str):
            new = names["fft"] if "fft" in inputs["unet_name"].lower() else names["fill"]
            notes.append(f"{node_id} {ct}.unet_name: {inputs['unet_name']} -> {new}")
            inputs["unet_name"] = new
        if ct == "ACEPlusLoader" and isinstance(inputs.get("unet_name"), str):
            notes.append(f"{node_id} {ct}.unet_name: {inputs['unet_name']} -> {names['fft']}")
            inputs["unet_name"] = names["fft"]
        if ct == "VAELoader" and isinstance(inputs.get("vae_name"), str):
            notes.append(f"{node_id} {ct}.vae_name: {inputs['vae_name']} -> tiny_taef1.safetensors")
            inputs["vae_name"] = "tiny_taef1.safetensors"
        if ct == "DualCLIPLoader":
            node["class_type"] = "CLIPLoader"
            node["inputs"] = {"clip_name": "clip_l_random.safetensors", "type": "stable_diffusion"}
            notes.append(f"{node_id} DualCLIPLoader -> CLIPLoader(clip_l_random) (no T5-XXL in synthetic mode)")
        if ct in ("LoraLoaderModelOnly", "ACEPlusLoraLoader"):
            if isinstance(inputs.get("lora_name"), str):
                notes.append(f"{node_id} {ct}.lora_name: {inputs['lora_name']} -> {names['lora']}")
                inputs["lora_name"] = names["lora"]
            if isinstance(inputs.get("strength_model"), (int, float)):
                notes.append(f"{node_id} {ct}: LoRA applied at the workflow's strength {inputs['strength_model']}")
        for key, cap in (("max_image_tokens", tokens), ("max_seq_length", seq_length)):
            if isinstance(inputs.get(key), int) and inputs[key] > cap:
                notes.append(f"{node_id} {ct}.{key}: {inputs[key]} -> {cap}")
                inputs[key] = cap
    return prompt, notes


def set_values(prompt: dict, *, seed: int | None = None, steps: int | None = None,
               text: str | None = None) -> list[str]:
    """``--seed`` (seed/noise_seed widgets), ``--steps``, ``--prompt`` (every non-empty CLIPTextEncode)."""
    notes = []
    for node_id, node in prompt.items():
        inputs = node["inputs"]
        for key in ("seed", "noise_seed"):
            if seed is not None and key in inputs and not _is_link(inputs[key]):
                inputs[key] = seed
        if steps is not None and "steps" in inputs and not _is_link(inputs["steps"]):
            inputs["steps"] = steps
            notes.append(f"{node_id} steps -> {steps}")
        if text is not None and node["class_type"] == "CLIPTextEncode" and inputs.get("text") \
                and not _is_link(inputs["text"]):
            inputs["text"] = text
    return notes


# --------------------------------------------------------------------------------------------------
# Workflows and inputs
# --------------------------------------------------------------------------------------------------


def load_workflow(path: Path) -> tuple[dict, str]:
    """(document, "ui" | "api")."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise RunnerError(f"cannot read workflow {path}: {e}") from e
    if wc.is_ui_workflow(doc):
        return doc, "ui"
    if isinstance(doc, dict) and isinstance(doc.get("prompt"), dict) and wc.is_api_workflow(doc["prompt"]):
        return doc["prompt"], "api"  # a /prompt request body
    if wc.is_api_workflow(doc):
        return doc, "api"
    raise RunnerError(f"{path} is neither a UI-format workflow (nodes/links) nor an API-format graph")


def to_api(doc: dict, fmt: str, object_info: dict, drop_types=(), rng: random.Random | None = None
           ) -> tuple[dict, list[str]]:
    """The API graph of a loaded workflow (UI converted like the frontend does), dropped types removed."""
    if fmt == "ui":
        try:
            prompt = wc.ui_to_api(doc, object_info, drop_types=drop_types,
                                  dynamic_prompts=rng if rng is not None else True)
        except wc.ConversionError as e:
            raise RunnerError(str(e)) from e
        return prompt, [f"dropped node types: {', '.join(sorted(drop_types))}"] if drop_types else []
    prompt, notes = drop_node_types(doc, drop_types)
    missing = sorted({v["class_type"] for v in prompt.values() if v["class_type"] not in object_info})
    if missing:
        raise RunnerError(f"the workflow uses node types this ComfyUI does not have: {', '.join(missing)} "
                          "(install them, or drop them with --drop-node-type TYPE)")
    return prompt, notes


def _clean_name(value: str) -> str:
    """A LoadImage value without its folder annotation (``name.png [input]``)."""
    for tag in (" [input]", " [output]", " [temp]"):
        if value.endswith(tag):
            return value[: -len(tag)]
    return value


def image_nodes(prompt: dict) -> dict[str, dict]:
    return {k: v for k, v in prompt.items()
            if v["class_type"] in IMAGE_LOADERS and isinstance(v["inputs"].get("image"), str)}


def match_image_nodes(prompt: dict, key: str) -> list[str]:
    """LoadImage nodes named by ``key``: their file name (with or without folder/annotation), id or title."""
    hits = []
    for node_id, node in image_nodes(prompt).items():
        value = node["inputs"]["image"]
        title = (node.get("_meta") or {}).get("title")
        if key in (node_id, title, value, _clean_name(value), Path(_clean_name(value)).name):
            hits.append(node_id)
    return hits


def find_local_input(workflow: Path, value: str) -> Path | None:
    name = _clean_name(value)
    for cand in (workflow.parent / "inputs" / name, workflow.parent / name,
                 workflow.parent / "inputs" / Path(name).name, workflow.parent / Path(name).name):
        if cand.is_file():
            return cand
    return None


@dataclass
class Run:
    index: int
    label: str
    images: dict[str, Path]  # LoadImage node id -> file to load
    prompt: dict = field(default_factory=dict)
    attempts: int = 0
    record: dict = field(default_factory=dict)


def _parse_pairs(items: list[str], option: str) -> list[tuple[str, str]]:
    pairs = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise RunnerError(f"{option} expects NAME=VALUE, got {item!r}")
        pairs.append((name, value))
    return pairs


def plan_runs(prompt: dict, workflow: Path, images: list[str], batch: list[str], *, need_local: bool) -> list[Run]:
    """One Run per batch item (or a single run): the file every LoadImage node loads."""
    base: dict[str, Path] = {}
    for name, path in _parse_pairs(images, "--image"):
        nodes = match_image_nodes(prompt, name)
        if not nodes:
            raise RunnerError(f"--image {name}: no LoadImage node has that file name, id or title "
                              f"(they load: {_describe_images(prompt)})")
        if not Path(path).is_file():
            raise RunnerError(f"--image {name}: {path} is not a file")
        for node_id in nodes:
            base[node_id] = Path(path)
    for node_id, node in image_nodes(prompt).items():
        if node_id in base:
            continue
        local = find_local_input(workflow, node["inputs"]["image"])
        if local is not None:
            base[node_id] = local
    columns: list[tuple[list[str], list[Path]]] = []
    for name, pattern in _parse_pairs(batch, "--batch-image"):
        nodes = match_image_nodes(prompt, name)
        if not nodes:
            raise RunnerError(f"--batch-image {name}: no LoadImage node has that file name, id or title "
                              f"(they load: {_describe_images(prompt)})")
        files = sorted(Path(p) for p in glob.glob(os.path.expanduser(pattern)) if Path(p).is_file())
        if not files:
            raise RunnerError(f"--batch-image {name}={pattern}: no file matches")
        columns.append((nodes, files))
    if columns and len({len(files) for _, files in columns}) != 1:
        counts = ", ".join(f"{len(f)}" for _, f in columns)
        raise RunnerError(f"--batch-image patterns match different numbers of files ({counts}); they are paired "
                          "in sorted order and must match as many")
    count = len(columns[0][1]) if columns else 1
    runs = []
    for i in range(count):
        files = dict(base)
        stems = []
        for nodes, paths in columns:
            for node_id in nodes:
                files[node_id] = paths[i]
            stems.append(paths[i].stem)
        label = f"run_{i:03d}_{'_'.join(stems)}" if columns else "run"
        runs.append(Run(i, label, files))
    if need_local:
        missing = [f"{k} ({v['inputs']['image']})" for k, v in image_nodes(prompt).items() if k not in runs[0].images]
        if missing:
            raise RunnerError(f"LoadImage file(s) not found next to {workflow} (inputs/) and not given by --image: "
                              f"{', '.join(missing)}")
    return runs


def _describe_images(prompt: dict) -> str:
    return ", ".join(f"{k}={v['inputs']['image']!r}" for k, v in image_nodes(prompt).items()) or "none"


def _staged_name(run: Run, node_id: str, src: Path, original: str, batch: bool) -> tuple[str, str]:
    """(subfolder, file name) a run's input gets in the ComfyUI input folder."""
    if not batch and src.name == Path(_clean_name(original)).name:
        sub = str(Path(_clean_name(original)).parent)
        return ("" if sub == "." else sub), src.name
    return "ace_plus_runs", f"{run.index:03d}_{node_id}_{src.name}"


# --------------------------------------------------------------------------------------------------
# Reporting helpers
# --------------------------------------------------------------------------------------------------


def _image_size(path: Path) -> tuple[int | None, int | None]:
    try:
        from PIL import Image

        with Image.open(path) as im:
            return im.width, im.height
    except Exception:  # no PIL (HTTP mode may run anywhere): PNG header
        with open(path, "rb") as f:
            head = f.read(24)
        if head[:8] == b"\x89PNG\r\n\x1a\n":
            return struct.unpack(">II", head[16:24])
        return None, None


class _Printer:
    lock = threading.Lock()

    def __call__(self, msg: str) -> None:
        with self.lock:
            print(f"[ace++] {msg}", flush=True)


say = _Printer()


class _Progress:
    """Turns executor events into progress lines and per-node seconds."""

    def __init__(self, prompt: dict, prefix: str) -> None:
        self.prompt, self.prefix = prompt, prefix
        self.timings: dict[str, float] = {}
        self.node: str | None = None
        self.t = time.perf_counter()

    def __call__(self, event: str, data: dict) -> None:
        if event == "executing":
            now = time.perf_counter()
            if self.node is not None:
                self.timings[self.node] = self.timings.get(self.node, 0.0) + now - self.t
            self.node, self.t = data.get("node"), now
            if self.node is not None:
                ct = self.prompt.get(self.node, {}).get("class_type", "?")
                say(f"{self.prefix}node {self.node} {ct}")
        elif event == "progress":
            say(f"{self.prefix}  node {data.get('node')} step {data.get('value')}/{data.get('max')}")
        elif event == "execution_cached" and data.get("nodes"):
            say(f"{self.prefix}cached: {', '.join(map(str, data['nodes']))}")

    def finish(self) -> dict[str, float]:
        self("executing", {"node": None})
        return {k: round(v, 3) for k, v in self.timings.items()}


def _collect(outputs: dict, fetch, run_dir: Path) -> list[dict]:
    """Write every image of a run's history outputs (saved and preview) into ``run_dir``."""
    images = []
    for node_id, ui in outputs.items():
        for img in (ui or {}).get("images", []) or []:
            kind = img.get("type", "output")
            if kind not in ("output", "temp"):
                continue
            if kind == "output":
                dst = run_dir / img["filename"]
            else:  # previews: named after their node, the server's temp names mean nothing
                dst = run_dir / "preview" / f"{node_id}_{img['filename']}"
            dst.parent.mkdir(parents=True, exist_ok=True)
            fetch(img, dst)
            width, height = _image_size(dst)
            images.append({"path": str(dst), "width": width, "height": height, "node": node_id, "type": kind})
    return images


# --------------------------------------------------------------------------------------------------
# In-process backend
# --------------------------------------------------------------------------------------------------


class LocalBackend:
    name = "in-process"

    def __init__(self, args) -> None:
        import comfy_host

        self.base = Path(tempfile.mkdtemp(prefix="ace_plus_run_"))
        self.host = comfy_host.boot(self.base)
        self.mode = "synthetic weights"
        self.synthetic = False
        comfy_path = os.environ.get("COMFYUI_PATH")
        if args.models:
            for folder in MODEL_FOLDERS:
                self.host.add_model_dir(folder, Path(args.models) / folder)
        if comfy_path:
            for folder in MODEL_FOLDERS:
                self.host.add_model_dir(folder, Path(comfy_path) / "models" / folder)
            extra = Path(comfy_path) / "extra_model_paths.yaml"
            if extra.is_file():
                import utils.extra_config

                utils.extra_config.load_extra_path_config(str(extra))
        # COMFYUI_PATH's weights count when that ComfyUI has a diffusion model at all (a fresh checkout has none).
        if args.models or (comfy_path and self.host.folder_paths.get_filename_list("diffusion_models")):
            self.mode = "real weights"
        else:
            import tiny_models

            self.synthetic = True
            cache = comfy_host.default_host_dir() / "demo-models"
            why = "no --models given" + (" and no diffusion model under COMFYUI_PATH" if comfy_path else "")
            say(f"{why}: building/reusing synthetic weights in {cache}")
            tiny_models.build_model_set(cache, demo=True)
            for folder in ("diffusion_models", "loras", "vae", "vae_approx", "text_encoders"):
                self.host.add_model_dir(folder, cache / folder)

    def object_info(self) -> dict:
        return self.host.object_info()

    def execute(self, runs: list[Run], out: Path, batch: bool, timeout: float) -> None:
        from comfy_host import GraphError

        folder_paths = self.host.folder_paths
        for run in runs:
            run_dir = out / run.label if batch else out
            prompt = copy.deepcopy(run.prompt)
            staged = {}
            for node_id, src in run.images.items():
                original = prompt[node_id]["inputs"]["image"]
                sub, name = _staged_name(run, node_id, src, original, batch)
                dst_dir = self.host.input_dir / sub
                dst_dir.mkdir(parents=True, exist_ok=True)
                shutil.copy(src, dst_dir / name)
                value = f"{sub}/{name}" if sub else name
                prompt[node_id]["inputs"]["image"] = value
                staged[node_id] = {"source": str(src), "name": value}
            run.record.update(inputs=staged, server=self.name)
            prefix = f"run {run.index}: " if batch else ""
            progress = _Progress(prompt, prefix)
            t0 = time.perf_counter()
            try:
                result = self.host.run(prompt, on_event=progress)
            except GraphError as e:
                run.record.update(status="error", error=str(e), seconds=round(time.perf_counter() - t0, 2))
                say(f"{prefix}FAILED: {e}")
                continue
            run.record.update(status="ok", prompt_id=result.prompt_id, seconds=round(time.perf_counter() - t0, 2),
                              node_seconds=progress.finish())

            def fetch(img, dst):
                root = Path(folder_paths.get_directory_by_type(img.get("type", "output")))
                shutil.copy(root / img.get("subfolder", "") / img["filename"], dst)

            run.record["images"] = _collect(result.outputs, fetch, run_dir)

    def close(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# HTTP backend (standard library only)
# --------------------------------------------------------------------------------------------------


class _WebSocket:
    """The client half of RFC 6455, enough for ComfyUI's /ws: text messages in, pongs and close out."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        u = urllib.parse.urlsplit(url)
        self.sock = socket.create_connection((u.hostname, u.port or 80), timeout=timeout)
        self.buf = b""
        self.kind: int | None = None
        self.parts: list[bytes] = []
        self.broken = False
        key = base64.b64encode(os.urandom(16)).decode()
        path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        request = (f"GET {path} HTTP/1.1\r\nHost: {u.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
        self.sock.sendall(request.encode())
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("websocket handshake: connection closed")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n", 1)[0] + b" ":
            raise ConnectionError(f"websocket handshake refused: {head[:80]!r}")

    def _fill(self, n: int, deadline: float) -> bool:
        """Buffer at least ``n`` bytes; False if the deadline passed first (nothing is consumed)."""
        while len(self.buf) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.sock.settimeout(max(0.05, min(1.0, remaining)))
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                raise ConnectionError("websocket closed")
            self.buf += chunk
        return True

    def _frame(self, deadline: float) -> tuple[bool, int, bytes] | None:
        """(fin, opcode, payload) of the next complete frame, or None at the deadline (partial data kept)."""
        if not self._fill(2, deadline):
            return None
        b0, b1 = self.buf[0], self.buf[1]
        n, pos = b1 & 0x7F, 2
        if n == 126:
            if not self._fill(4, deadline):
                return None
            n, pos = struct.unpack(">H", self.buf[2:4])[0], 4
        elif n == 127:
            if not self._fill(10, deadline):
                return None
            n, pos = struct.unpack(">Q", self.buf[2:10])[0], 10
        masked = bool(b1 & 0x80)
        total = pos + (4 if masked else 0) + n
        if not self._fill(total, deadline):
            return None
        payload = self.buf[pos + (4 if masked else 0): total]
        if masked:
            mask = self.buf[pos: pos + 4]
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.buf = self.buf[total:]
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def _send(self, opcode: int, payload: bytes = b"") -> None:
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 1 << 16:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def recv(self, timeout: float) -> str | None:
        """The next text message, or None if none completed within ``timeout``; ConnectionError when closed.
        Binary messages (previews) are skipped."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self._frame(deadline)
            if frame is None:
                return None
            fin, opcode, payload = frame
            if opcode == 8:
                raise ConnectionError("websocket closed by the server")
            if opcode == 9:
                self._send(10, payload)
                continue
            if opcode == 10:
                continue
            if opcode in (1, 2):
                self.kind, self.parts = opcode, [payload]
            elif opcode == 0:
                self.parts.append(payload)
            if fin:
                kind, parts = self.kind, self.parts
                self.kind, self.parts = None, []
                if kind == 1:
                    return b"".join(parts).decode("utf-8", "replace")

    def close(self) -> None:
        try:
            self._send(8)
        except OSError:
            pass
        self.sock.close()


class ServerError(RunnerError):
    """The server refused or failed a request (details in the message)."""


class ComfyClient:
    """One ComfyUI server's HTTP API."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        if "://" not in url:
            url = "http://" + url
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.client_id = uuid.uuid4().hex
        self.label = urllib.parse.urlsplit(self.url).netloc

    def _request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> bytes:
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.read()
        except urllib.error.HTTPError as e:
            detail = e.read().decode("utf-8", "replace")
            try:
                data = json.loads(detail)
            except ValueError:
                data = detail[:500]
            raise ServerError(f"{self.label} {method} {path}: HTTP {e.code}: {_format_server_error(data)}") from e

    def get_json(self, path: str) -> Any:
        return json.loads(self._request("GET", path))

    def object_info(self) -> dict:
        return self.get_json("/object_info")

    def upload_image(self, path: Path, name: str, subfolder: str) -> str:
        boundary = uuid.uuid4().hex
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        fields = [("type", "input"), ("subfolder", subfolder), ("overwrite", "true")]
        body = b"".join(
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n".encode() for k, v in fields
        )
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
                 f"Content-Type: {ctype}\r\n\r\n").encode() + Path(path).read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        data = json.loads(self._request("POST", "/upload/image", body,
                                        {"Content-Type": f"multipart/form-data; boundary={boundary}"}))
        return f"{data['subfolder']}/{data['name']}" if data.get("subfolder") else data["name"]

    def queue_prompt(self, prompt: dict) -> str:
        body = json.dumps({"prompt": prompt, "client_id": self.client_id}).encode()
        data = json.loads(self._request("POST", "/prompt", body, {"Content-Type": "application/json"}))
        if data.get("node_errors"):
            raise ServerError(f"{self.label} rejected the graph: {_format_server_error(data)}")
        return data["prompt_id"]

    def history(self, prompt_id: str) -> dict | None:
        return self.get_json(f"/history/{urllib.parse.quote(prompt_id)}").get(prompt_id)

    def view(self, img: dict) -> bytes:
        query = urllib.parse.urlencode({"filename": img["filename"], "subfolder": img.get("subfolder", ""),
                                        "type": img.get("type", "output")})
        return self._request("GET", f"/view?{query}")

    def websocket(self) -> _WebSocket | None:
        ws_url = self.url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        if ws_url.startswith("wss://"):
            return None  # TLS: fall back to polling
        try:
            return _WebSocket(f"{ws_url}/ws?clientId={self.client_id}", timeout=self.timeout)
        except OSError:
            return None

    def wait(self, prompt_id: str, timeout: float, ws: _WebSocket | None, on_event) -> dict:
        """Follow a queued prompt (websocket events when connected, /history polls always) until it ends."""
        deadline = time.monotonic() + timeout
        next_poll = 0.0
        ending = False  # the end event came: the history entry follows within moments
        while time.monotonic() < deadline:
            if ws is not None and not ws.broken:
                try:
                    msg = ws.recv(timeout=0.5)
                except OSError:  # ConnectionError included: follow the prompt by polling from here on
                    ws.broken = True
                    msg = None
                if msg:
                    try:
                        event = json.loads(msg)
                    except ValueError:
                        event = {}
                    data = event.get("data") or {}
                    if data.get("prompt_id") == prompt_id:
                        on_event(event.get("type"), data)
                        if event.get("type") in ("execution_success", "execution_error", "execution_interrupted") \
                                or (event.get("type") == "executing" and data.get("node") is None):
                            next_poll, ending = 0.0, True
            else:
                time.sleep(0.25)
            if time.monotonic() >= next_poll:
                entry = self.history(prompt_id)
                if entry and (entry.get("status") or {}).get("status_str") in ("success", "error"):
                    return entry
                slow = ws is not None and not ws.broken and not ending
                next_poll = time.monotonic() + (2.0 if slow else 0.25 if ending else 0.5)
        raise ServerError(f"{self.label}: prompt {prompt_id} did not finish within {timeout:.0f} s")


def _format_server_error(data: Any) -> str:
    if not isinstance(data, dict):
        return str(data)
    parts = []
    err = data.get("error")
    if isinstance(err, dict):
        parts.append(f"{err.get('message', '')} {err.get('details', '')}".strip())
    elif err:
        parts.append(str(err))
    for node_id, info in (data.get("node_errors") or {}).items():
        for e in info.get("errors", []):
            parts.append(f"node {node_id} ({info.get('class_type')}): {e.get('message')}: {e.get('details')}")
    return "; ".join(p for p in parts if p) or json.dumps(data)[:500]


def _history_error(entry: dict) -> str:
    for kind, data in (entry.get("status") or {}).get("messages", []):
        if kind == "execution_error":
            return (f"node {data.get('node_id')} ({data.get('node_type')}) failed: {data.get('exception_type')}: "
                    f"{data.get('exception_message')}")
        if kind == "execution_interrupted":
            return "execution interrupted"
    return "execution failed"


class HttpBackend:
    name = "http"

    def __init__(self, args) -> None:
        self.clients = [ComfyClient(url) for url in args.server]
        self.synthetic = bool(args.synthetic)
        self.mode = "synthetic weights (server side)" if self.synthetic else "server weights"
        self.infos: list[dict] = []
        for c in self.clients:
            try:
                self.infos.append(c.object_info())
            except (OSError, ServerError) as e:
                raise RunnerError(f"server {c.url} does not answer /object_info: {e}") from e

    def object_info(self) -> dict:
        return self.infos[0]

    def check(self, prompt: dict) -> None:
        for c, info in zip(self.clients, self.infos, strict=True):
            missing = sorted({v["class_type"] for v in prompt.values() if v["class_type"] not in info})
            if missing:
                raise RunnerError(f"server {c.url} lacks node types {', '.join(missing)}")

    def execute(self, runs: list[Run], out: Path, batch: bool, timeout: float) -> None:
        """Every server takes one run to start with, then the next pending one whenever it is free. A server
        that stops answering gives its run back (at most twice per run) and takes no more."""
        pending: queue.Queue[Run] = queue.Queue()
        first = {i: runs[i] for i in range(min(len(runs), len(self.clients)))}
        for run in runs[len(first):]:
            pending.put(run)
        state = {"open": len(runs), "alive": len(self.clients)}
        lock = threading.Lock()

        def finished() -> None:
            with lock:
                state["open"] -= 1

        def worker(i: int) -> None:
            client = self.clients[i]
            ws = None
            run: Run | None = first.get(i)
            try:
                while True:
                    if run is None:
                        with lock:
                            if state["open"] <= 0:
                                return
                        try:
                            run = pending.get(timeout=0.2)
                        except queue.Empty:
                            continue
                    if ws is None or ws.broken:
                        if ws is not None:
                            ws.close()
                        ws = client.websocket()
                    try:
                        self._one(client, ws, run, out, batch, timeout)
                        finished()
                    except OSError as e:  # the server went away: hand the run to another one
                        say(f"run {run.index} @ {client.label}: connection failed: {e}")
                        with lock:
                            state["alive"] -= 1
                            retry = run.attempts < 2 and state["alive"] > 0
                        if retry:
                            run.attempts += 1
                            run.record.clear()
                            pending.put(run)
                        else:
                            run.record.update(status="error", error=f"{client.label}: {e}")
                            finished()
                        return
                    run = None
            finally:
                if ws is not None:
                    ws.close()

        threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(len(self.clients))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        while not pending.empty():  # every server stopped answering
            run = pending.get_nowait()
            run.record.update(status="error", error="no server left to run it")

    def _one(self, client: ComfyClient, ws, run: Run, out: Path, batch: bool, timeout: float) -> None:
        run_dir = out / run.label if batch else out
        prefix = f"run {run.index} @ {client.label}: " if batch or len(self.clients) > 1 else f"{client.label}: "
        prompt = copy.deepcopy(run.prompt)
        staged = {}
        t0 = time.perf_counter()
        run.record.update(server=client.url)
        try:
            for node_id, src in run.images.items():
                original = prompt[node_id]["inputs"]["image"]
                sub, name = _staged_name(run, node_id, src, original, batch)
                value = client.upload_image(src, name, sub)
                prompt[node_id]["inputs"]["image"] = value
                staged[node_id] = {"source": str(src), "name": value}
            run.record["inputs"] = staged
            prompt_id = client.queue_prompt(prompt)
            run.record["prompt_id"] = prompt_id
            say(f"{prefix}queued prompt {prompt_id}")
            progress = _Progress(prompt, prefix)
            entry = client.wait(prompt_id, timeout, ws, progress)
        except ServerError as e:
            run.record.update(status="error", error=str(e), seconds=round(time.perf_counter() - t0, 2))
            say(f"{prefix}FAILED: {e}")
            return
        status = entry.get("status") or {}
        run.record.update(seconds=round(time.perf_counter() - t0, 2), node_seconds=progress.finish())
        if status.get("status_str") == "error" or not status.get("completed"):
            run.record.update(status="error", error=_history_error(entry))
            say(f"{prefix}FAILED: {run.record['error']}")
            return
        run.record["status"] = "ok"

        def fetch(img, dst):
            dst.write_bytes(client.view(img))

        run.record["images"] = _collect(entry.get("outputs") or {}, fetch, run_dir)

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    ap.add_argument("workflow", type=Path, help="UI-format or API-format workflow JSON")
    ap.add_argument("--out", type=Path, default=Path("output/ace_plus_run"), help="where images and report go")
    ap.add_argument("--models", type=Path, help="ComfyUI-style models folder with the real weights (in-process)")
    ap.add_argument("--image", action="append", default=[], metavar="NAME=PATH",
                    help="replace a LoadImage file (NAME: its file name, node id or title)")
    ap.add_argument("--batch-image", action="append", default=[], metavar="NAME=GLOB",
                    help="run once per file matching GLOB, loaded by the LoadImage node NAME")
    ap.add_argument("--drop-node-type", action="append", default=[], metavar="TYPE",
                    help="remove nodes of this type and the links from them (e.g. MaskPreview+)")
    ap.add_argument("--prompt", help="replace the text of every non-empty CLIPTextEncode")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--server", action="append", default=[], metavar="URL",
                    help="run on this ComfyUI server (repeatable: a batch is spread over them)")
    ap.add_argument("--synthetic", action="store_true",
                    help="with --server: substitute the synthetic model files (the servers must have them)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds one run may take on a server")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    t_start = time.perf_counter()
    try:
        doc, fmt = load_workflow(args.workflow)
        backend = HttpBackend(args) if args.server else LocalBackend(args)
    except RunnerError as e:
        say(f"error: {e}")
        return 2
    try:
        return _main(args, doc, fmt, backend, t_start)
    except RunnerError as e:
        say(f"error: {e}")
        return 2
    finally:
        backend.close()


def _main(args, doc: dict, fmt: str, backend, t_start: float) -> int:
    rng = random.Random(args.seed) if args.seed is not None else random.Random()
    if backend.synthetic and args.steps is None:
        args.steps = SYNTHETIC_STEPS

    def build() -> tuple[dict, list[str]]:
        """The API graph one run queues. A UI workflow is converted for every run, as the frontend converts on
        every queue: ``{a|b}`` dynamic prompts are drawn again (from ``--seed`` when given)."""
        prompt, notes = to_api(doc, fmt, backend.object_info(), args.drop_node_type, rng)
        if backend.synthetic:
            prompt, more = synthetic_graph(prompt)
            notes += more
        notes += set_values(prompt, seed=args.seed, steps=args.steps, text=args.prompt)
        return prompt, notes

    prompt, notes = build()
    if isinstance(backend, HttpBackend):
        backend.check(prompt)
    runs = plan_runs(prompt, args.workflow, args.image, args.batch_image, need_local=isinstance(backend, LocalBackend))
    runs[0].prompt = prompt
    for run in runs[1:]:
        run.prompt = build()[0] if fmt == "ui" else prompt
    for n in notes:
        say(n)
    batch = bool(args.batch_image)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "ui":  # the converted graph (of the first run), for inspection or "Load (API)"
        (out / "prompt_api.json").write_text(json.dumps(prompt, indent=2))
    say(f"{len(runs)} run(s) on {backend.name}" + (f" ({', '.join(c.url for c in backend.clients)})"
                                                  if isinstance(backend, HttpBackend) else ""))
    backend.execute(runs, out, batch, args.timeout)

    records = []
    for run in runs:
        rec = {"index": run.index, "label": run.label, "status": run.record.get("status", "error")}
        rec.update({k: v for k, v in run.record.items() if k != "status"})
        rec.setdefault("images", [])
        records.append(rec)
    report = {
        "workflow": str(args.workflow.resolve()),
        "format": fmt,
        "backend": backend.name,
        "servers": [c.url for c in backend.clients] if isinstance(backend, HttpBackend) else [],
        "mode": backend.mode,
        "dropped_node_types": sorted(args.drop_node_type),
        "seconds": round(time.perf_counter() - t_start, 2),
        "notes": notes,
        "runs": records,
        "images": [im for rec in records for im in rec["images"] if im["type"] == "output"],
    }
    if not batch and records:  # single run: the run's fields at the top level too
        for key in ("inputs", "node_seconds", "prompt_id", "server", "error"):
            if key in records[0]:
                report[key] = records[0][key]
    (out / "report.json").write_text(json.dumps(report, indent=2))
    for rec in records:
        for im in rec["images"]:
            say(f"wrote {im['path']} ({im['width']}x{im['height']}, {im['type']})")
    ok = sum(r["status"] == "ok" for r in records)
    say(f"report: {out / 'report.json'} ({backend.mode}, {ok}/{len(records)} run(s) ok, {report['seconds']:.1f} s)")
    return 0 if ok == len(records) else 1


if __name__ == "__main__":
    sys.exit(main())
