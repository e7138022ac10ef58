"""The example workflows, written once in Python and saved as the UI-format JSON ComfyUI's frontend loads.

    ~/.cache/ace-plus-host/venv/bin/python tools/make_examples.py [--photos SKIMAGE_WHEEL_OR_DIR]

Each example is an API graph (the same node/inputs shape as ``tests/graphs.py``) plus a column for every node.
:func:`to_ui` turns it into the workflow JSON the frontend saves (``nodes``, ``links``, ``groups``,
``widgets_values`` in each node definition's widget order, ...), using the node definitions (object_info) of the
in-process ComfyUI that ``runner/comfy_host.py`` boots, so the files always match the nodes they name. Every loader
node carries its files' download rows (``properties.models``, from the one table :data:`MODELS`), so the
frontend's missing-models list offers the downloads. Running the script rewrites every file under
``workflow_example_lora/`` and ``workflow_example_fft/`` deterministically, and their copies in
``example_workflows/`` (what ComfyUI's template browser lists, named by :func:`templates`) with a thumbnail each
(:func:`thumbnail`, made from the workflow's input pictures); ``tests/test_examples.py`` checks that the committed
files equal what it generates.

Inputs: the masks, the logo and the garment are drawn here (written only when their pixels change). The photos
come from scikit-image's sample data (public domain / CC0): pass ``--photos`` the scikit-image wheel
(``pip download --no-deps scikit-image``) or a folder holding its ``astronaut.png``, ``chelsea.png`` and
``coffee.png`` to (re)write them; without it the committed photos are kept.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import math
import re
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
LORA_DIR = REPO / "workflow_example_lora"
FFT_DIR = REPO / "workflow_example_fft"

# --------------------------------------------------------------------------------------------------
# Models: the published file names, where ComfyUI looks for them, where to download them.
# --------------------------------------------------------------------------------------------------

FILL = "flux1-fill-dev.safetensors"
FFT = "ace_plus_fft.safetensors"
PORTRAIT_LORA = "comfyui_portrait_lora64.safetensors"
SUBJECT_LORA = "comfyui_subject_lora16.safetensors"
LOCAL_LORA = "comfyui_local_lora16.safetensors"
VAE = "ae.safetensors"
CLIP_L = "clip_l.safetensors"
T5 = "t5xxl_fp16.safetensors"
REDUX = "flux1-redux-dev.safetensors"
SIGCLIP = "sigclip_vision_patch14_384.safetensors"

FFT_FP8 = "ace_plus_fft_fp8.safetensors"  # named in no workflow: the FFT notes offer it

# The one model table: file -> (ComfyUI models/ folder, direct download URL of the published file). Every loader
# node carries its files' rows as ``properties.models`` (the frontend's missing-models list offers the download).
HF = "https://huggingface.co"
ACE = f"{HF}/ali-vilab/ACE_Plus/resolve/main"
MODELS = {
    FILL: ("diffusion_models", f"{HF}/black-forest-labs/FLUX.1-Fill-dev/resolve/main/{FILL}"),
    PORTRAIT_LORA: ("loras", f"{ACE}/portrait/{PORTRAIT_LORA}"),
    SUBJECT_LORA: ("loras", f"{ACE}/subject/{SUBJECT_LORA}"),
    LOCAL_LORA: ("loras", f"{ACE}/local_editing/{LOCAL_LORA}"),
    FFT: ("diffusion_models", f"{ACE}/{FFT}"),
    FFT_FP8: ("diffusion_models", f"{ACE}/{FFT_FP8}"),
    VAE: ("vae", f"{HF}/black-forest-labs/FLUX.1-dev/resolve/main/{VAE}"),
    CLIP_L: ("text_encoders", f"{HF}/comfyanonymous/flux_text_encoders/resolve/main/{CLIP_L}"),
    T5: ("text_encoders", f"{HF}/comfyanonymous/flux_text_encoders/resolve/main/{T5}"),
    REDUX: ("style_models", f"{HF}/black-forest-labs/FLUX.1-Redux-dev/resolve/main/{REDUX}"),
    SIGCLIP: ("clip_vision", f"{HF}/Comfy-Org/sigclip_vision_384/resolve/main/{SIGCLIP}"),
}
GATED = (FILL, VAE, REDUX)  # Black Forest Labs repositories: accept the licence on the model page first
# The (node type, input) pairs that name a model file.
MODEL_INPUTS = (
    ("UNETLoader", "unet_name"), ("ACEPlusLoader", "unet_name"), ("LoraLoaderModelOnly", "lora_name"),
    ("ACEPlusLoraLoader", "lora_name"), ("VAELoader", "vae_name"), ("DualCLIPLoader", "clip_name1"),
    ("DualCLIPLoader", "clip_name2"), ("StyleModelLoader", "style_model_name"), ("CLIPVisionLoader", "clip_name"),
)

# LoadImage nodes load the example pictures from this subfolder of ComfyUI's input folder, where the pack copies
# workflow_example_*/inputs/ at start-up (nodes/example_inputs.py, SUBFOLDER); the builders name the bare files.
INPUT_SUBFOLDER = "ace_plus"
IMAGE_LOADERS = ("LoadImage", "LoadImageMask")

# Official defaults (ACE++ example workflows).
STEPS = 28
GUIDANCE = 50.0
SEED = 42
TOKENS = 4096  # ACE++ Canvas budget: a 1024x1024 canvas

# The files are generated against the pinned host ComfyUI (tools/setup_host.sh): its node definitions decide the
# widget order and the defaults of widgets the examples do not set.
GENERATED_WITH_COMFYUI = "0.3.75"

# Frontend-only node types: saved in the UI file, never sent to the server.
VIRTUAL_NODES = ("Note", "MarkdownNote")
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
SEED_INPUTS = ("seed", "noise_seed")

# --------------------------------------------------------------------------------------------------
# Node definitions (object_info), computed from the live registry as ComfyUI's server does.
# --------------------------------------------------------------------------------------------------


def node_info(node_type: str, mappings: dict | None = None) -> dict:
    """The ``/object_info`` entry of one node type (V3 nodes: ``GET_NODE_INFO_V1``; classic nodes: from
    ``INPUT_TYPES``/``RETURN_TYPES``/``RETURN_NAMES``, as ``server.py`` builds it)."""
    if mappings is None:
        import nodes

        mappings = nodes.NODE_CLASS_MAPPINGS
    cls = mappings[node_type]
    if hasattr(cls, "GET_NODE_INFO_V1"):
        return cls.GET_NODE_INFO_V1()
    inputs = cls.INPUT_TYPES()
    return {
        "input": inputs,
        "input_order": {key: list(value.keys()) for key, value in inputs.items()},
        "output": list(cls.RETURN_TYPES),
        "output_name": list(getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES),
        "name": node_type,
        "python_module": getattr(cls, "RELATIVE_PYTHON_MODULE", "nodes"),
    }


def object_info(node_types=None) -> dict[str, dict]:
    """object_info of ``node_types`` (default: every registered node) from the booted ComfyUI."""
    import nodes

    names = sorted(nodes.NODE_CLASS_MAPPINGS) if node_types is None else sorted(set(node_types))
    return {name: node_info(name) for name in names if name in nodes.NODE_CLASS_MAPPINGS}


@dataclasses.dataclass(frozen=True)
class InputDef:
    name: str
    type: str  # "INT", "COMBO", "IMAGE", ...
    options: dict
    optional: bool

    @property
    def is_widget(self) -> bool:
        return self.type in WIDGET_TYPES and not self.options.get("forceInput", False)

    @property
    def has_control(self) -> bool:
        """INT seeds get the frontend's extra "control_after_generate" widget right after them (the flag, or when
        it is absent the names seed/noise_seed, as the frontend decides)."""
        flag = self.options.get("control_after_generate")
        return self.type == "INT" and (bool(flag) if flag is not None else self.name in SEED_INPUTS)

    def default(self) -> Any:
        if "default" in self.options:
            return self.options["default"]
        if self.type == "COMBO":
            choices = self.options.get("options") or []
            return choices[0] if choices else None
        return {"STRING": "", "BOOLEAN": False}.get(self.type)


def input_defs(info: dict) -> list[InputDef]:
    """Inputs in the frontend's order: required, then optional (hidden inputs are not shown)."""
    out = []
    order = info.get("input_order") or {k: list(v) for k, v in info["input"].items()}
    for section in ("required", "optional"):
        specs = info["input"].get(section) or {}
        for name in order.get(section, list(specs)):
            spec = specs[name]
            raw_type = spec[0]
            options = dict(spec[1]) if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if isinstance(raw_type, (list, tuple)):
                options.setdefault("options", list(raw_type))
                raw_type = "COMBO"
            out.append(InputDef(name, raw_type, options, section == "optional"))
    return out


def has_upload_widget(info: dict) -> bool:
    """LoadImage-style nodes: the frontend adds an upload button widget (saved as "image") after the others."""
    return any(d.options.get("image_upload") for d in input_defs(info))


# --------------------------------------------------------------------------------------------------
# The builder
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Out:
    node: int
    slot: int


@dataclasses.dataclass
class Node:
    id: int
    type: str
    inputs: dict[str, Any]
    col: int
    title: str | None = None
    color: str | None = None  # a key of COLORS

    def __getitem__(self, slot: int) -> Out:
        return Out(self.id, slot)


COLORS = {  # the frontend's palette: (color, bgcolor)
    "yellow": ("#432", "#653"),  # the Note
    "green": ("#232", "#353"),  # what to change: images, prompt
    "blue": ("#223", "#335"),  # the ACE++ nodes
}


@dataclasses.dataclass
class Workflow:
    """One example: nodes with API inputs (values or ``Out`` links), a column each, and a Note."""

    path: str  # relative to the repository, without ".json"
    title: str
    columns: dict[int, str]  # column -> group title
    nodes: list[Node] = dataclasses.field(default_factory=list)
    api_export: bool = False

    def add(self, node_type: str, col: int, *, title: str | None = None, color: str | None = None,
            **inputs) -> Node:
        node = Node(len(self.nodes) + 1, node_type, inputs, col, title, color)
        self.nodes.append(node)
        return node

    def note(self, text: str) -> Node:
        return self.add("MarkdownNote", 0, title="Read me", color="yellow", text=text)

    def node(self, node_id: int) -> Node:
        return self.nodes[node_id - 1]

    def model_files(self) -> list[tuple[str, str]]:
        """(folder, file name) of every model file the graph loads, in node order."""
        out = []
        for n in self.nodes:
            for name in node_model_files(n):
                if (MODELS[name][0], name) not in out:
                    out.append((MODELS[name][0], name))
        return out

    def image_files(self) -> list[str]:
        return [n.inputs["image"] for n in self.nodes if n.type in IMAGE_LOADERS]


def node_model_files(node: Node) -> list[str]:
    """The model files one node names, in input order."""
    return [node.inputs[key] for node_type, key in MODEL_INPUTS if node.type == node_type and key in node.inputs]


def _check_node(wf: Workflow, node: Node, info: dict[str, dict]) -> None:
    """Input names, link types and combo values against the node definitions: a typo fails here, not in ComfyUI."""
    defs = {d.name: d for d in input_defs(info[node.type])}
    for name, value in node.inputs.items():
        if name not in defs:
            raise ValueError(f"{wf.path}: node {node.id} {node.type} has no input {name!r}; it has {sorted(defs)}")
        d = defs[name]
        if isinstance(value, Out):
            src = wf.node(value.node)
            out_type = info[src.type]["output"][value.slot]
            if d.type != out_type and "*" not in (d.type, out_type):
                raise ValueError(f"{wf.path}: {src.type} output {value.slot} ({out_type}) -> {node.type}.{name} "
                                 f"({d.type})")
        elif not d.is_widget:
            raise ValueError(f"{wf.path}: {node.type}.{name} is a {d.type} socket; connect it, do not set a value")
        elif d.type == "COMBO" and value not in d.options.get("options", [value]) and not _is_file_combo(d):
            raise ValueError(f"{wf.path}: {node.type}.{name}={value!r} is not one of {d.options.get('options')}")
    for d in defs.values():
        if not d.optional and d.name not in node.inputs and (not d.is_widget or d.default() is None):
            raise ValueError(f"{wf.path}: node {node.id} {node.type} needs {d.name!r}")


def _is_file_combo(d: InputDef) -> bool:
    # File lists (models, input images) depend on the machine; any name is accepted here.
    return d.name in {k for _, k in MODEL_INPUTS} or bool(d.options.get("image_upload"))


def _prepare(wf: Workflow, info: dict[str, dict]) -> None:
    for node in wf.nodes:
        if node.type in VIRTUAL_NODES:
            continue
        if node.type not in info:
            raise ValueError(f"{wf.path}: node type {node.type} is not registered in this ComfyUI")
        _check_node(wf, node, info)


def escape_dynamic_prompt(text: str) -> str:
    """How a literal text is saved in a ``dynamicPrompts`` STRING widget (CLIPTextEncode's text).

    When it queues, the frontend replaces every ``{a|b}`` by one option at random and drops ``//`` comments, so
    ACE++'s ``{image}`` would be sent as ``image``; escaped as ``\\{image\\}`` it is sent as ``{image}``."""
    if "//" in text or "/*" in text:
        raise ValueError(f"the frontend strips comments ('//', '/*') from prompts: {text!r}")
    return re.sub(r"([{}|])", r"\\\1", text)


def saved_inputs(node: Node) -> dict[str, Any]:
    """The node's inputs as the files save them: an example picture as ``ace_plus/<name>``."""
    if node.type in IMAGE_LOADERS:
        return {**node.inputs, "image": f"{INPUT_SUBFOLDER}/{node.inputs['image']}"}
    return node.inputs


def _widget_values(node: Node, info: dict) -> list:
    values = []
    inputs = saved_inputs(node)
    for d in input_defs(info):
        if not d.is_widget:
            continue
        value = inputs.get(d.name)
        value = d.default() if value is None or isinstance(value, Out) else value
        if d.type == "STRING" and d.options.get("dynamicPrompts") and isinstance(value, str):
            value = escape_dynamic_prompt(value)
        values.append(value)
        if d.has_control:
            values.append("fixed")
    if has_upload_widget(info):
        values.append("image")
    return values


def to_api(wf: Workflow, info: dict[str, dict]) -> dict[str, dict]:
    """The API graph (what the frontend's graphToPrompt sends): every widget value, then the links."""
    _prepare(wf, info)
    prompt = {}
    for node in wf.nodes:
        if node.type in VIRTUAL_NODES:
            continue
        inputs: dict[str, Any] = {}
        defs = input_defs(info[node.type])
        saved = saved_inputs(node)
        for d in defs:
            if d.is_widget:
                value = saved.get(d.name, d.default())
                inputs[d.name] = [str(value.node), value.slot] if isinstance(value, Out) else value
        for d in defs:
            value = node.inputs.get(d.name)
            if not d.is_widget and isinstance(value, Out):
                inputs[d.name] = [str(value.node), value.slot]
        prompt[str(node.id)] = {"class_type": node.type, "inputs": inputs}
    return prompt


# --------------------------------------------------------------------------------------------------
# UI format: sizes, layout, links
# --------------------------------------------------------------------------------------------------

TITLE_H = 30  # LiteGraph's title bar, drawn above a node's pos
SLOT_H = 20
WIDGET_H = 24
COL_GAP = 70
ROW_GAP = 40
GROUP_PAD = 14
GROUP_TITLE_H = 40
TOP = TITLE_H + GROUP_TITLE_H + GROUP_PAD + 10
NOTE_W = 460
WIDTHS = {"CLIPTextEncode": 400, "ACEPlusCanvas": 340, "ACEPlusCanvasConditioning": 340, "SaveImage": 360,
          "ACEPlusStitch": 315, "KSampler": 315}
MIN_HEIGHTS = {"LoadImage": 330, "LoadImageMask": 330, "SaveImage": 380}


def _note_height(text: str) -> int:
    # The frontend's Note textarea: about 6.5 px per character, 13 px per line (measured on its screenshots).
    chars_per_line = int((NOTE_W - 20) / 6.5)
    lines = sum(max(1, math.ceil(len(line) / chars_per_line)) for line in text.split("\n"))
    return 40 + 13 * lines


def _node_size(node: Node, info: dict | None, n_in_sockets: int, n_outputs: int) -> list[int]:
    if info is None:  # a Note
        return [NOTE_W, _note_height(node.inputs["text"])]
    height = max(n_in_sockets, n_outputs, 1) * SLOT_H + 12
    for d in input_defs(info):
        if d.is_widget:
            height += 100 if d.options.get("multiline") else WIDGET_H
            if d.has_control:
                height += WIDGET_H
    if has_upload_widget(info):
        height += WIDGET_H
    height = max(height, MIN_HEIGHTS.get(node.type, 0))
    return [WIDTHS.get(node.type, 315), height]


def _topological_order(wf: Workflow) -> dict[int, int]:
    """Execution order as LiteGraph computes it: a node after everything it reads from (ties: by id)."""
    deps = {n.id: {v.node for v in n.inputs.values() if isinstance(v, Out)} for n in wf.nodes}
    order: dict[int, int] = {}
    while len(order) < len(wf.nodes):
        ready = [i for i, d in sorted(deps.items()) if i not in order and d <= set(order)]
        if not ready:
            raise ValueError(f"{wf.path}: the graph has a cycle")
        for i in ready:
            order[i] = len(order)
    return order


def to_ui(wf: Workflow, info: dict[str, dict]) -> dict:
    """The UI-format workflow (what the frontend's "Save" writes), laid out in columns left to right."""
    _prepare(wf, info)
    order = _topological_order(wf)
    links: list[list] = []
    out_links: dict[tuple[int, int], list[int]] = {}
    in_entries: dict[int, list[dict]] = {}
    for node in wf.nodes:  # links numbered in node order, then input order
        entries = []
        if node.type not in VIRTUAL_NODES:
            defs = input_defs(info[node.type])
            sockets = [d for d in defs if not d.is_widget]
            linked_widgets = [d for d in defs if d.is_widget and isinstance(node.inputs.get(d.name), Out)]
            for d in sockets + linked_widgets:
                value = node.inputs.get(d.name)
                link_id = None
                if isinstance(value, Out):
                    link_id = len(links) + 1
                    src_type = info[wf.node(value.node).type]["output"][value.slot]
                    links.append([link_id, value.node, value.slot, node.id, len(entries), src_type])
                    out_links.setdefault((value.node, value.slot), []).append(link_id)
                entry: dict[str, Any] = {"name": d.name, "type": d.type, "link": link_id}
                if d.is_widget:
                    entry["widget"] = {"name": d.name}
                if d.optional and not d.is_widget:
                    entry["shape"] = 7
                entries.append(entry)
        in_entries[node.id] = entries

    # Sizes, then columns: x from the widest node of each column to its left, nodes stacked top down.
    sizes = {}
    for node in wf.nodes:
        ni = info.get(node.type) if node.type not in VIRTUAL_NODES else None
        n_out = len(ni["output"]) if ni else 0
        sizes[node.id] = _node_size(node, ni, len(in_entries[node.id]), n_out)
    cols = sorted({n.col for n in wf.nodes})
    col_x, x = {}, 0
    for c in cols:
        col_x[c] = x
        x += max(sizes[n.id][0] for n in wf.nodes if n.col == c) + COL_GAP
    pos, col_y = {}, dict.fromkeys(cols, TOP)
    for node in wf.nodes:
        pos[node.id] = [col_x[node.col], col_y[node.col]]
        col_y[node.col] += sizes[node.id][1] + TITLE_H + ROW_GAP

    ui_nodes = []
    for node in wf.nodes:
        entry: dict[str, Any] = {"id": node.id, "type": node.type, "pos": pos[node.id], "size": sizes[node.id],
                                 "flags": {}, "order": order[node.id], "mode": 0, "inputs": in_entries[node.id]}
        if node.type in VIRTUAL_NODES:
            entry["outputs"] = []
            entry["properties"] = {}
            entry["widgets_values"] = [node.inputs["text"]]
        else:
            ni = info[node.type]
            outputs = []
            for slot, (name, out_type) in enumerate(zip(ni["output_name"], ni["output"], strict=True)):
                ids = out_links.get((node.id, slot))
                out = {"name": name, "type": out_type, "links": ids}
                if ids:
                    out["slot_index"] = slot
                outputs.append(out)
            entry["outputs"] = outputs
            entry["properties"] = {"Node name for S&R": node.type}
            files = node_model_files(node)
            if files:
                entry["properties"]["models"] = [{"name": f, "url": MODELS[f][1], "directory": MODELS[f][0]}
                                                 for f in files]
            entry["widgets_values"] = _widget_values(node, ni)
        if node.title:
            entry["title"] = node.title
        if node.color:
            entry["color"], entry["bgcolor"] = COLORS[node.color]
        ui_nodes.append(entry)

    groups = []
    for c in cols:
        members = [n for n in wf.nodes if n.col == c]
        if c not in wf.columns:
            continue
        x0 = min(pos[n.id][0] for n in members) - GROUP_PAD
        y0 = min(pos[n.id][1] for n in members) - TITLE_H - GROUP_TITLE_H
        x1 = max(pos[n.id][0] + sizes[n.id][0] for n in members) + GROUP_PAD
        y1 = max(pos[n.id][1] + sizes[n.id][1] for n in members) + GROUP_PAD
        groups.append({"id": len(groups) + 1, "title": wf.columns[c], "bounding": [x0, y0, x1 - x0, y1 - y0],
                       "color": "#3f789e", "font_size": 24, "flags": {}})

    return {
        "last_node_id": max(n.id for n in wf.nodes),
        "last_link_id": len(links),
        "nodes": ui_nodes,
        "links": links,
        "groups": groups,
        "config": {},
        "extra": {"ds": {"scale": 0.9, "offset": [0, 0]}},
        "version": 0.4,
    }


def dump_ui(ui: dict) -> str:
    return json.dumps(ui, indent=2, ensure_ascii=False) + "\n"


def dump_api(prompt: dict) -> str:
    """One node per line: readable diffs, still plain JSON."""
    lines = [f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in prompt.items()]
    return "{\n" + ",\n".join(lines) + "\n}\n"


# --------------------------------------------------------------------------------------------------
# The examples
# --------------------------------------------------------------------------------------------------

COLUMNS = {1: "Models", 2: "Images", 3: "Prompt", 4: "ACE++ canvas", 5: "Sampling", 6: "Result"}
COLUMNS_REDUX = {**COLUMNS, 3: "Prompt + Redux"}

PORTRAIT_PROMPT = (
    "Maintain the facial features, a woman in a neat police uniform with a badge, smiling with a friendly and "
    "confident demeanor, blurred city background."
)
ROBOT_PROMPT = (
    "{image} Beautiful female portrait, robot with smooth white transparent carbon shell, rococo detailing, "
    "natural lighting, highly detailed, cinematic, 4K."
)


def _fill_model(wf: Workflow, lora: str) -> Node:
    unet = wf.add("UNETLoader", 1, unet_name=FILL, weight_dtype="default")
    lora_node = wf.add("LoraLoaderModelOnly", 1, model=unet[0], lora_name=lora, strength_model=1.0)
    return wf.add("DifferentialDiffusion", 1, model=lora_node[0])


def _fft_model(wf: Workflow) -> Node:
    unet = wf.add("ACEPlusLoader", 1, unet_name=FFT, weight_dtype="default")
    return wf.add("DifferentialDiffusion", 1, model=unet[0])


def _text(wf: Workflow, prompt: str) -> tuple[Node, Node, Node]:
    """(guided positive, negative, VAE): DualCLIPLoader, the prompt, an empty negative, FluxGuidance 50."""
    clip = wf.add("DualCLIPLoader", 1, clip_name1=CLIP_L, clip_name2=T5, type="flux")
    pos = wf.add("CLIPTextEncode", 3, title="Prompt", color="green", clip=clip[0], text=prompt)
    neg = wf.add("CLIPTextEncode", 3, title="Negative (unused at cfg 1)", clip=clip[0], text="")
    guided = wf.add("FluxGuidance", 3, conditioning=pos[0], guidance=GUIDANCE)
    vae = wf.add("VAELoader", 1, vae_name=VAE)
    return guided, neg, vae


def _images(wf: Workflow, reference: str | None, edit: str | None, mask: str | None):
    ref = wf.add("LoadImage", 2, title="Reference image", color="green", image=reference) if reference else None
    img = wf.add("LoadImage", 2, title="Edit image", color="green", image=edit) if edit else None
    msk = (wf.add("LoadImageMask", 2, title="Edit mask (white = edit)", color="green", image=mask, channel="red")
           if mask else None)
    return ref, img, msk


def _redux(wf: Workflow, conditioning: Node, image: Node, strength: float, strength_type: str) -> Node:
    """The official Redux branch: the reference image, encoded by SigCLIP, appended to the prompt by Redux."""
    vision = wf.add("CLIPVisionLoader", 1, clip_name=SIGCLIP)
    style = wf.add("StyleModelLoader", 1, style_model_name=REDUX)
    encoded = wf.add("CLIPVisionEncode", 3, clip_vision=vision[0], image=image[0], crop="center")
    return wf.add("StyleModelApply", 3, conditioning=conditioning[0], style_model=style[0],
                  clip_vision_output=encoded[0], strength=strength, strength_type=strength_type)


def _canvas_to_result(wf: Workflow, model: Node, positive: Node, negative: Node, vae: Node, *, layout: str,
                      task: str, ref: Node | None, edit: Node | None, mask: Node | None, crop_to_mask: bool,
                      prefix: str, width: int = 1024, height: int = 1024, canvas_extra: dict | None = None,
                      variations: int = 1) -> Node:
    """ACE++ Canvas -> ACE++ Conditioning -> KSampler -> VAEDecode -> ACE++ Stitch -> SaveImage. ``canvas_extra``:
    more ACE++ Canvas inputs; with a soft_seam_px the canvas's soft_mask becomes the sampler's noise mask. With
    ``variations`` > 1 the latent goes through RepeatLatentBatch first (each copy gets its own noise; ACE++ Stitch
    takes the batch of one canvas)."""
    links = dict(canvas_extra or {})
    if ref is not None:
        links["reference_image"] = ref[0]
    if edit is not None:
        links["edit_image"] = edit[0]
    if mask is not None:
        links["edit_mask"] = mask[0]
    canvas = wf.add("ACEPlusCanvas", 4, color="blue", layout=layout, task=task, reference_mode="auto",
                    max_image_tokens=TOKENS, keep_pixels_rate=0.8, width=width, height=height,
                    crop_to_mask=crop_to_mask, **links)
    soft = {"sampling_mask": canvas[5]} if links.get("soft_seam_px") else {}
    cond = wf.add("ACEPlusCanvasConditioning", 4, color="blue", model=model[0], positive=positive[0],
                  negative=negative[0], vae=vae[0], uc_image=canvas[1], c_image=canvas[2], mask=canvas[3],
                  geometry=canvas[4], noise_mask=True, **soft)
    latent = cond[3]
    if variations > 1:
        latent = wf.add("RepeatLatentBatch", 5, title="Variations", color="green", samples=latent,
                        amount=variations)[0]
    samples = wf.add("KSampler", 5, model=cond[0], seed=SEED, steps=STEPS, cfg=1.0, sampler_name="euler",
                     scheduler="normal", positive=cond[1], negative=cond[2], latent_image=latent, denoise=1.0)
    decoded = wf.add("VAEDecode", 5, samples=samples[0], vae=vae[0])
    stitch_links = {}
    if edit is not None:
        stitch_links["original_image"] = edit[0]
    if mask is not None:
        stitch_links["mask"] = mask[0]
    out = wf.add("ACEPlusStitch", 6, color="blue", image=decoded[0], geometry=canvas[4], grow_mask_px=8,
                 feather_px=16, color_match=False, **stitch_links)
    wf.add("SaveImage", 6, images=out[0], filename_prefix=f"ace_plus/{prefix}")
    return out


def _md(text: str) -> str:
    """Plain note text as Markdown: ``\\{image\\}`` (what to type in a prompt box) in a code span, so the
    backslashes stay visible."""
    return text.replace("\\{image\\}", "`\\{image\\}`")


def note_text(wf: Workflow, what: str, connect: list[str], tips: list[str]) -> str:
    """The Read me (Markdown): what the workflow does, what to connect, the model files (folder, download), where
    the example inputs are, tips."""
    lines = [f"**{wf.title}**", "", what, "", "**CONNECT / SET**"]
    lines += [f"- {_md(c)}" for c in connect]
    lines += ["", "**MODELS** (download, put in `ComfyUI/models/<folder>/`; when one is missing ComfyUI lists it "
                  "with its download link)"]
    for folder, name in wf.model_files():
        gated = " (accept the licence on its model page first)" if name in GATED else ""
        lines.append(f"- `{folder}/{name}` from <{MODELS[name][1]}>{gated}")
    inputs = f"{Path(wf.path).parent.name}/inputs"
    lines += ["", "**EXAMPLE INPUTS**",
              f"- The pictures this workflow opens ({', '.join(f'`{n}`' for n in wf.image_files())}) come with "
              f"this node pack (`ComfyUI/custom_nodes/<pack folder>/{inputs}/`); it copies them into "
              f"`ComfyUI/input/{INPUT_SUBFOLDER}/` when ComfyUI starts (never over a file of yours). Load your own "
              "images in the green nodes."]
    lines += ["", "**TIPS**"]
    lines += [f"- {_md(t)}" for t in tips]
    return "\n".join(lines)


COMMON_TIPS = [
    "{image} in a prompt refers to the edit image. In a prompt box it is typed \\{image\\}: ComfyUI reads "
    "{a|b} as a random choice and would send {image} as just \"image\".",
    "Official settings: 28 steps, euler / normal, cfg 1, FluxGuidance 50, Differential Diffusion. "
    "max_image_tokens (ACE++ Canvas) sets the canvas size: 4096 tokens = a 1024x1024 canvas; more tokens, "
    "more detail, slower.",
]
LOCAL_TIPS = [
    "crop_to_mask renders only the region around the mask (plus context) with the whole token budget; "
    "ACE++ Stitch puts it back into the full-resolution photo, pixels outside the grown + feathered mask "
    "unchanged.",
    "Draw the mask in ComfyUI instead: right-click the edit image > Open in MaskEditor, then connect its MASK "
    "output to edit_mask and mask instead of the mask file.",
]
LOW_MEMORY_TIP = "Less GPU memory: set UNETLoader weight_dtype to fp8_e4m3fn (computation stays bf16)."


def face_swap() -> Workflow:
    wf = Workflow("workflow_example_lora/face_swap", "ACE++ face swap (portrait LoRA on FLUX.1-Fill-dev)", COLUMNS,
                  api_export=True)
    model = _fill_model(wf, PORTRAIT_LORA)
    pos, neg, vae = _text(wf, "Maintain the facial features, a woman in an orange flight suit smiles at the "
                              "camera, studio portrait.")
    ref, img, msk = _images(wf, "face_reference.png", "astronaut.png", "astronaut_face_mask.png")
    _canvas_to_result(wf, model, pos, neg, vae, layout="lora", task="repainting", ref=ref, edit=img, mask=msk,
                      crop_to_mask=True, prefix="face_swap")
    wf.note(note_text(
        wf, "Puts the face of the reference image into the edit image, inside the mask.",
        ["Reference image: a photo of the face to use (the face filling most of the frame).",
         "Edit image: the photo to change. Edit mask: white over the face to replace, same size as the photo.",
         "Prompt: describe the whole result."],
        ["Portrait prompts may start with \"Maintain the facial features,\" to keep the identity.",
         *LOCAL_TIPS, *COMMON_TIPS, LOW_MEMORY_TIP]))
    return wf


def portrait_reference_generation() -> Workflow:
    wf = Workflow("workflow_example_lora/portrait_reference_generation",
                  "ACE++ portrait-consistent generation (portrait LoRA on FLUX.1-Fill-dev)", COLUMNS)
    model = _fill_model(wf, PORTRAIT_LORA)
    pos, neg, vae = _text(wf, PORTRAIT_PROMPT)
    ref, _, _ = _images(wf, "face_reference.png", None, None)
    _canvas_to_result(wf, model, pos, neg, vae, layout="lora", task="repainting", ref=ref, edit=None, mask=None,
                      crop_to_mask=False, prefix="portrait_reference_generation", width=768, height=1024)
    wf.note(note_text(
        wf, "Generates a new image of the person in the reference photo (no edit image).",
        ["Reference image: a photo of the face (the face filling most of the frame).",
         "ACE++ Canvas width / height: the size of the new image.",
         "Prompt: describe the new image."],
        ["Start portrait prompts with \"Maintain the facial features,\" to keep the identity.",
         *COMMON_TIPS, LOW_MEMORY_TIP]))
    return wf


def subject_reference_generation() -> Workflow:
    wf = Workflow("workflow_example_lora/subject_reference_generation",
                  "ACE++ subject-consistent generation (subject LoRA on FLUX.1-Fill-dev)", COLUMNS)
    model = _fill_model(wf, SUBJECT_LORA)
    pos, neg, vae = _text(wf, "Display the logo printed on a white ceramic coffee mug standing on a wooden cafe "
                              "table next to a croissant, soft morning light.")
    ref, _, _ = _images(wf, "ace_logo.png", None, None)
    _canvas_to_result(wf, model, pos, neg, vae, layout="lora", task="repainting", ref=ref, edit=None, mask=None,
                      crop_to_mask=False, prefix="subject_reference_generation")
    wf.note(note_text(
        wf, "Generates a new image that shows the subject of the reference (a logo, an object) as described.",
        ["Reference image: the logo or object, on a plain background.",
         "ACE++ Canvas width / height: the size of the new image.",
         "Prompt: say what the subject is and where it appears (\"the logo is printed on ...\")."],
        [*COMMON_TIPS, LOW_MEMORY_TIP]))
    return wf


def logo_paste() -> Workflow:
    wf = Workflow("workflow_example_lora/logo_paste", "ACE++ logo paste (subject LoRA on FLUX.1-Fill-dev)", COLUMNS)
    model = _fill_model(wf, SUBJECT_LORA)
    pos, neg, vae = _text(wf, "The logo is printed on the coffee cup.")
    ref, img, msk = _images(wf, "ace_logo.png", "coffee.jpg", "coffee_cup_front_mask.png")
    _canvas_to_result(wf, model, pos, neg, vae, layout="lora", task="repainting", ref=ref, edit=img, mask=msk,
                      crop_to_mask=True, prefix="logo_paste")
    wf.note(note_text(
        wf, "Puts the logo of the reference image onto the product in the edit image, inside the mask.",
        ["Reference image: the logo on a plain background.",
         "Edit image: the product photo. Edit mask: white where the logo goes, same size as the photo.",
         "Prompt: \"The logo is printed on the ...\"."],
        [*LOCAL_TIPS, *COMMON_TIPS, LOW_MEMORY_TIP]))
    return wf


def virtual_try_on() -> Workflow:
    wf = Workflow("workflow_example_lora/virtual_try_on", "ACE++ virtual try-on (subject LoRA on FLUX.1-Fill-dev)",
                  COLUMNS)
    model = _fill_model(wf, SUBJECT_LORA)
    pos, neg, vae = _text(wf, "The woman dresses this striped shirt.")
    ref, img, msk = _images(wf, "striped_shirt.png", "astronaut.png", "astronaut_suit_mask.png")
    _canvas_to_result(wf, model, pos, neg, vae, layout="lora", task="repainting", ref=ref, edit=img, mask=msk,
                      crop_to_mask=True, prefix="virtual_try_on")
    wf.note(note_text(
        wf, "Dresses the person in the edit image in the garment of the reference image, inside the mask.",
        ["Reference image: the garment alone, on a plain background.",
         "Edit image: the person. Edit mask: white over the clothes to replace (a bit larger than the new garment), "
         "same size as the photo.",
         "Prompt: \"The woman dresses this ...\"."],
        [*LOCAL_TIPS, *COMMON_TIPS, LOW_MEMORY_TIP]))
    return wf


def local_editing() -> Workflow:
    wf = Workflow("workflow_example_lora/local_editing",
                  "ACE++ local editing, four variations (local LoRA on FLUX.1-Fill-dev)", COLUMNS)
    model = _fill_model(wf, LOCAL_LORA)
    pos, neg, vae = _text(wf, "{image} a cappuccino with a heart of latte art in the cup.")
    _, img, msk = _images(wf, None, "coffee.jpg", "coffee_crema_mask.png")
    _canvas_to_result(wf, model, pos, neg, vae, layout="lora", task="repainting", ref=None, edit=img, mask=msk,
                      crop_to_mask=True, prefix="local_editing", variations=4)
    wf.note(note_text(
        wf, "Repaints the masked region of the edit image from the prompt (no reference image), four times with "
            "different noise: keep the best of the four stitched photos.",
        ["Edit image: the photo. Edit mask: white over the region to repaint, same size as the photo.",
         "Prompt: describe what the masked region shows after the edit.",
         "Variations (Repeat Latent Batch) amount: how many versions one run makes (1 for a single one); ACE++ "
         "Stitch puts each into the photo."],
        [*LOCAL_TIPS, *COMMON_TIPS, LOW_MEMORY_TIP]))
    return wf


def local_control_editing() -> Workflow:
    wf = Workflow("workflow_example_lora/local_control_editing",
                  "ACE++ local editing with a control (local LoRA on FLUX.1-Fill-dev)", COLUMNS)
    model = _fill_model(wf, LOCAL_LORA)
    pos, neg, vae = _text(wf, ROBOT_PROMPT)
    _, img, msk = _images(wf, None, "astronaut.png", "astronaut_head_mask.png")
    _canvas_to_result(wf, model, pos, neg, vae, layout="lora", task="canny_repainting", ref=None, edit=img,
                      mask=msk, crop_to_mask=True, prefix="local_control_editing")
    wf.note(note_text(
        wf, "Repaints the masked region following the edges of the photo (Canny, computed offline by ACE++ Canvas).",
        ["Edit image: the photo. Edit mask: white over the region to repaint, same size as the photo.",
         "ACE++ Canvas task: canny_repainting (edges; canny_low/high_threshold, official 100/200) or "
         "mosaic_repainting (keeps the coarse colours; mosaic_ratio, official 64). For contour_repainting or "
         "depth_repainting connect a line drawing / depth map (a preprocessor node's output) to control_image.",
         "Prompt: describe the result; {image} refers to the edit image."],
        [*LOCAL_TIPS, *COMMON_TIPS, LOW_MEMORY_TIP]))
    return wf


def virtual_try_on_front_back() -> Workflow:
    wf = Workflow("workflow_example_lora/virtual_try_on_front_back",
                  "ACE++ virtual try-on with the garment's front and back, soft seams (subject LoRA)", COLUMNS)
    model = _fill_model(wf, SUBJECT_LORA)
    pos, neg, vae = _text(wf, "The woman dresses this striped shirt.")
    ref, img, msk = _images(wf, "striped_shirt.png", "astronaut.png", "astronaut_suit_mask.png")
    back = wf.add("LoadImage", 2, title="Reference image 2 (the back)", color="green", image="striped_shirt_back.png")
    _canvas_to_result(wf, model, pos, neg, vae, layout="lora", task="repainting", ref=ref, edit=img, mask=msk,
                      crop_to_mask=True, prefix="virtual_try_on_front_back",
                      canvas_extra={"reference_image_2": back[0], "soft_seam_px": 16})
    wf.note(note_text(
        wf, "Dresses the person in the garment shown from the front (reference image) and the back (reference "
        "image 2), with soft seams: the sampler's noise mask fades out over 16 px (soft_seam_px) while the model "
        "sees the exact mask.",
        ["Reference image: the garment's front; reference image 2: its back (experimental: the released models "
         "were trained with one reference; compare with the one-reference try-on).",
         "Edit image: the person. Edit mask: white over the clothes to replace, same size as the photo.",
         "ACE++ Canvas soft_mask -> ACE++ Conditioning sampling_mask carries the soft seam (Differential Diffusion "
         "is on the model)."],
        [*LOCAL_TIPS, *COMMON_TIPS, LOW_MEMORY_TIP]))
    return wf


def outpainting() -> Workflow:
    wf = Workflow("workflow_example_lora/outpainting", "ACE++ outpainting: a photo widened (local LoRA)", COLUMNS)
    model = _fill_model(wf, LOCAL_LORA)
    pos, neg, vae = _text(wf, "{image} an espresso cup on a saucer on a wooden cafe table, more of the table and "
                              "the cafe around it.")
    _, img, _ = _images(wf, None, "coffee.jpg", None)
    _canvas_to_result(wf, model, pos, neg, vae, layout="lora", task="repainting", ref=None, edit=img, mask=None,
                      crop_to_mask=False, prefix="outpainting",
                      canvas_extra={"outpaint_left": 200, "outpaint_right": 200})
    wf.note(note_text(
        wf, "Widens the photo by 200 px on the left and the right (outpaint_* on ACE++ Canvas); ACE++ Stitch "
        "returns the 1000x400 photo with the original 600x400 pixels unchanged.",
        ["Edit image: the photo. No mask: with outpainting an empty edit_mask marks only the new area (connect a "
         "mask to repaint parts of the photo too).",
         "ACE++ Canvas outpaint_top / bottom / left / right: how far to extend each side.",
         "Prompt: describe the whole, wider scene; {image} refers to the edit image."],
        [*COMMON_TIPS, LOW_MEMORY_TIP]))
    return wf


def guided_repainting() -> Workflow:
    wf = Workflow("workflow_example_lora/guided_repainting",
                  "ACE++ repainting that keeps the shape (repainting_scale, local LoRA)", COLUMNS)
    model = _fill_model(wf, LOCAL_LORA)
    pos, neg, vae = _text(wf, "{image} a glossy red ceramic cup and saucer.")
    _, img, msk = _images(wf, None, "coffee.jpg", "coffee_cup_mask.png")
    _canvas_to_result(wf, model, pos, neg, vae, layout="lora", task="repainting", ref=None, edit=img, mask=msk,
                      crop_to_mask=True, prefix="guided_repainting", canvas_extra={"repainting_scale": 0.6})
    wf.note(note_text(
        wf, "Repaints the cup but keeps a faint version of it under the mask (repainting_scale 0.6, the official "
        "inference's formula), so the new cup follows the old one's shape and light.",
        ["Edit image: the photo. Edit mask: white over what to repaint.",
         "ACE++ Canvas repainting_scale: 1 blanks the masked area (plain repainting), 0 keeps it as it is (like "
         "no_preprocess); 0.4-0.8 keeps its structure.",
         "Prompt: describe the result; {image} refers to the edit image."],
        [*LOCAL_TIPS, *COMMON_TIPS, LOW_MEMORY_TIP]))
    return wf


def redux_reference_generation() -> Workflow:
    wf = Workflow("workflow_example_lora/redux_reference_generation",
                  "ACE++ portrait generation with Redux (portrait LoRA + FLUX.1-Redux)", COLUMNS_REDUX)
    model = _fill_model(wf, PORTRAIT_LORA)
    pos, neg, vae = _text(wf, PORTRAIT_PROMPT)
    ref, _, _ = _images(wf, "face_reference.png", None, None)
    styled = _redux(wf, pos, ref, 0.2, "attn_bias")
    _canvas_to_result(wf, model, styled, neg, vae, layout="lora", task="repainting", ref=ref, edit=None, mask=None,
                      crop_to_mask=False, prefix="redux_reference_generation", width=768, height=1024)
    wf.note(note_text(
        wf, "Portrait-consistent generation as in portrait_reference_generation, with the reference also given to "
            "the model as Redux image tokens (as in the official Redux workflow).",
        ["Reference image: a photo of the face; it goes both to the canvas and to CLIP Vision Encode.",
         "ACE++ Canvas width / height: the size of the new image.",
         "Apply Style Model strength: how strongly Redux pulls towards the reference (official 0.2, attn_bias)."],
        ["Start portrait prompts with \"Maintain the facial features,\" to keep the identity.",
         *COMMON_TIPS, LOW_MEMORY_TIP]))
    return wf


def redux_reference_editing() -> Workflow:
    wf = Workflow("workflow_example_lora/redux_reference_editing",
                  "ACE++ logo paste with Redux (subject LoRA + FLUX.1-Redux)", COLUMNS_REDUX)
    model = _fill_model(wf, SUBJECT_LORA)
    pos, neg, vae = _text(wf, "The logo is printed on the coffee cup.")
    ref, img, msk = _images(wf, "ace_logo.png", "coffee.jpg", "coffee_cup_front_mask.png")
    styled = _redux(wf, pos, ref, 1.0, "multiply")
    _canvas_to_result(wf, model, styled, neg, vae, layout="lora", task="repainting", ref=ref, edit=img, mask=msk,
                      crop_to_mask=True, prefix="redux_reference_editing")
    wf.note(note_text(
        wf, "Reference editing (logo paste) as in logo_paste, with the reference also given to the model as Redux "
            "image tokens (as in the official Redux workflow).",
        ["Reference image: the logo; it goes both to the canvas and to CLIP Vision Encode.",
         "Edit image: the product photo. Edit mask: white where the logo goes, same size as the photo.",
         "Apply Style Model strength: how strongly Redux pulls towards the reference (official 1.0, multiply)."],
        [*LOCAL_TIPS, *COMMON_TIPS, LOW_MEMORY_TIP]))
    return wf


FFT_TIPS = [
    "The ACE++ FFT model does every task with one model: no LoRA. Set ACE++ Canvas layout to fft (ACE++ "
    "Conditioning refuses a canvas built for the other model and says so).",
    f"Less GPU memory: `{FFT_FP8}` (half the size, also in `{MODELS[FFT_FP8][0]}`, from <{MODELS[FFT_FP8][1]}>) "
    "in ACE++ FFT Loader; it stays fp8 in memory, computation is bf16.",
]


def fft_reference_generation() -> Workflow:
    wf = Workflow("workflow_example_fft/reference_generation", "ACE++ FFT: portrait-consistent generation", COLUMNS)
    model = _fft_model(wf)
    pos, neg, vae = _text(wf, PORTRAIT_PROMPT)
    ref, _, _ = _images(wf, "face_reference.png", None, None)
    _canvas_to_result(wf, model, pos, neg, vae, layout="fft", task="repainting", ref=ref, edit=None, mask=None,
                      crop_to_mask=False, prefix="fft_reference_generation", width=768, height=1024)
    wf.note(note_text(
        wf, "Generates a new image of the person (or subject) in the reference photo, with the fully fine-tuned "
            "ACE++ model.",
        ["Reference image: a photo of the face or subject.",
         "ACE++ Canvas width / height: the size of the new image.",
         "Prompt: describe the new image."],
        ["Start portrait prompts with \"Maintain the facial features,\" to keep the identity.",
         *FFT_TIPS, *COMMON_TIPS]))
    return wf


def fft_reference_editing() -> Workflow:
    wf = Workflow("workflow_example_fft/reference_editing", "ACE++ FFT: reference editing (logo paste)", COLUMNS)
    model = _fft_model(wf)
    pos, neg, vae = _text(wf, "The logo is printed on the coffee cup.")
    ref, img, msk = _images(wf, "ace_logo.png", "coffee.jpg", "coffee_cup_front_mask.png")
    _canvas_to_result(wf, model, pos, neg, vae, layout="fft", task="repainting", ref=ref, edit=img, mask=msk,
                      crop_to_mask=True, prefix="fft_reference_editing")
    wf.note(note_text(
        wf, "Puts the reference (a logo, a face, a garment) into the edit image inside the mask, with the fully "
            "fine-tuned ACE++ model.",
        ["Reference image: the logo / face / garment.",
         "Edit image: the photo. Edit mask: white where the reference goes, same size as the photo.",
         "Prompt: describe the result (\"The logo is printed on ...\", \"Maintain the facial features, ...\")."],
        [*FFT_TIPS, *LOCAL_TIPS, *COMMON_TIPS]))
    return wf


def fft_no_preprocess() -> Workflow:
    wf = Workflow("workflow_example_fft/no_preprocess", "ACE++ FFT: super-resolution (no_preprocess)", COLUMNS)
    model = _fft_model(wf)
    pos, neg, vae = _text(wf, "{image} features a close-up of a tabby cat with green eyes, sharp fur texture and long "
                              "white whiskers, soft indoor light.")
    low = wf.add("LoadImage", 2, title="Low-resolution image", color="green", image="chelsea_lowres.png")
    big = wf.add("ImageScaleBy", 2, image=low[0], upscale_method="bicubic", scale_by=4.0)
    _canvas_to_result(wf, model, pos, neg, vae, layout="fft", task="no_preprocess", ref=None, edit=big, mask=None,
                      crop_to_mask=False, prefix="fft_no_preprocess")
    wf.note(note_text(
        wf, "no_preprocess keeps the pixels under the mask as guidance: here a blurry upscaled image is re-rendered "
            "with detail (super-resolution).",
        ["Low-resolution image: any small photo; Upscale Image By sets the output size (4x here).",
         "No mask connected: the whole image is re-rendered. To refine a part only, connect a mask (white = "
         "re-render, same size as the upscaled image) to edit_mask and to ACE++ Stitch's mask.",
         "Instead of the image itself, a guidance image of your own (a sketch, a recoloured version) can go to "
         "ACE++ Canvas control_image: it replaces the pixels under the mask.",
         "Prompt: describe the image in detail; {image} refers to the edit image."],
        [*FFT_TIPS, *COMMON_TIPS]))
    return wf


def fft_control_preprocess() -> Workflow:
    wf = Workflow("workflow_example_fft/control_preprocess", "ACE++ FFT: recolorizing (control preprocess)",
                  COLUMNS)
    model = _fft_model(wf)
    pos, neg, vae = _text(wf, "{image} a turquoise espresso cup with crema on a turquoise saucer with a silver "
                              "spoon, on a dark wooden table.")
    _, img, msk = _images(wf, None, "coffee.jpg", "coffee_cup_mask.png")
    _canvas_to_result(wf, model, pos, neg, vae, layout="fft", task="recolorizing", ref=None, edit=img, mask=msk,
                      crop_to_mask=True, prefix="fft_control_preprocess")
    wf.note(note_text(
        wf, "Recolours the masked region: ACE++ Canvas turns it to grayscale (offline, no download) and the model "
            "paints new colours from the prompt, keeping every shape.",
        ["Edit image: the photo. Edit mask: white over the region to recolour, same size as the photo.",
         "Other control tasks on the same graph: ACE++ Canvas task canny_repainting (edges, thresholds "
         "canny_low/high_threshold, official 100/200) or mosaic_repainting (pixelated, mosaic_ratio, official 64) "
         "are computed from the edit image too; contour_repainting / depth_repainting need a line drawing / depth "
         "map (a preprocessor node's output) connected to control_image.",
         "Prompt: describe the result, colours included; {image} refers to the edit image."],
        [*FFT_TIPS, *LOCAL_TIPS, *COMMON_TIPS]))
    return wf


EXAMPLES = (
    face_swap, portrait_reference_generation, subject_reference_generation, logo_paste, virtual_try_on,
    local_editing, local_control_editing, redux_reference_generation, redux_reference_editing,
    virtual_try_on_front_back, outpainting, guided_repainting, fft_reference_generation, fft_reference_editing, fft_no_preprocess, fft_control_preprocess,
)


def workflows() -> list[Workflow]:
    return [make() for make in EXAMPLES]


# ComfyUI's template browser lists a pack's example_workflows/*.json (the file name is the title) with the .jpg of
# the same name as thumbnail. The copies are numbered so that they sort in this order: the LoRA family, then FFT.
TEMPLATES_DIR = REPO / "example_workflows"
TEMPLATE_LABELS = {
    "workflow_example_lora/face_swap": "face swap",
    "workflow_example_lora/portrait_reference_generation": "portrait reference generation",
    "workflow_example_lora/subject_reference_generation": "subject reference generation",
    "workflow_example_lora/logo_paste": "logo paste",
    "workflow_example_lora/virtual_try_on": "virtual try-on",
    "workflow_example_lora/local_editing": "local editing",
    "workflow_example_lora/local_control_editing": "local control editing",
    "workflow_example_lora/redux_reference_generation": "Redux portrait generation",
    "workflow_example_lora/redux_reference_editing": "Redux logo paste",
    "workflow_example_lora/virtual_try_on_front_back": "try-on front and back",
    "workflow_example_lora/outpainting": "outpainting",
    "workflow_example_lora/guided_repainting": "repainting that keeps the shape",
    "workflow_example_fft/reference_generation": "portrait reference generation",
    "workflow_example_fft/reference_editing": "reference editing",
    "workflow_example_fft/no_preprocess": "super-resolution",
    "workflow_example_fft/control_preprocess": "recolorizing",
}
# Template names go into URLs unencoded (the frontend fetches /api/workflow_templates/<pack>/<name>.json and .jpg).
TEMPLATE_NAME = re.compile(r"^[A-Za-z0-9+ -]+$")


def templates() -> dict[str, Workflow]:
    """{template name: workflow}, e.g. "ACE++ 01 LoRA - face swap"."""
    out = {}
    for i, wf in enumerate(workflows(), 1):
        family = "FFT" if wf.path.startswith(FFT_DIR.name) else "LoRA"
        name = f"ACE++ {i:02d} {family} - {TEMPLATE_LABELS[wf.path]}"
        if not TEMPLATE_NAME.match(name):
            raise ValueError(f"template name {name!r} needs URL encoding")
        out[name] = wf
    return out


def render(info: dict[str, dict]) -> dict[str, str]:
    """{repository-relative path: file text} of every generated workflow file (the templates: copies)."""
    files = {}
    for wf in workflows():
        files[f"{wf.path}.json"] = dump_ui(to_ui(wf, info))
        if wf.api_export:
            files[f"{wf.path}_api.json"] = dump_api(to_api(wf, info))
    for name, wf in templates().items():
        files[f"{TEMPLATES_DIR.name}/{name}.json"] = files[f"{wf.path}.json"]
    for folder in (LORA_DIR, FFT_DIR):
        files[str((folder / "inputs" / "README.md").relative_to(REPO))] = inputs_readme(folder)
    return files


def needed_node_types() -> set[str]:
    return {n.type for wf in workflows() for n in wf.nodes if n.type not in VIRTUAL_NODES}


# --------------------------------------------------------------------------------------------------
# Inputs: drawn images (masks, logo, garment) and the photos
# --------------------------------------------------------------------------------------------------

SS = 4  # supersampling of the drawn colour images


def _mask(size, shapes):
    """A binary L-mode mask (255 = edit) from ("ellipse"|"polygon"|"rectangle", coords) shapes."""
    from PIL import Image, ImageDraw

    im = Image.new("L", size, 0)
    draw = ImageDraw.Draw(im)
    for kind, coords in shapes:
        getattr(draw, kind)(coords, fill=255)
    return im


def draw_logo():
    """A made-up round logo (green ring, orange sun over two blue peaks, a bar) on white, 256x256."""
    from PIL import Image, ImageDraw

    s = 256 * SS
    im = Image.new("RGB", (s, s), (255, 255, 255))
    d = ImageDraw.Draw(im)

    def box(cx, cy, r):
        return ((cx - r) * SS, (cy - r) * SS, (cx + r) * SS, (cy + r) * SS)

    d.ellipse(box(128, 128, 120), fill=(16, 110, 90))
    d.ellipse(box(128, 128, 102), fill=(255, 255, 255))
    d.ellipse(box(150, 100, 34), fill=(245, 150, 30))
    d.polygon([(p[0] * SS, p[1] * SS) for p in [(40, 178), (104, 84), (168, 178)]], fill=(30, 70, 150))
    d.polygon([(p[0] * SS, p[1] * SS) for p in [(112, 178), (164, 110), (216, 178)]], fill=(60, 120, 200))
    d.rectangle((52 * SS, 186 * SS, 204 * SS, 198 * SS), fill=(16, 110, 90))
    return im.resize((256, 256), Image.Resampling.LANCZOS)


def draw_shirt(back: bool = False):
    """A made-up navy/white striped long-sleeve shirt on white, 320x384 (``back``: seen from behind: a high
    collar band and a yoke seam across the shoulders)."""
    from PIL import Image, ImageDraw

    w, h = 320 * SS, 384 * SS
    outline = [(110, 20), (140, 34), (180, 34), (210, 20), (270, 48), (312, 200), (272, 212), (244, 120),
               (246, 372), (74, 372), (76, 120), (48, 212), (8, 200), (50, 48)]
    shape = Image.new("L", (w, h), 0)
    ImageDraw.Draw(shape).polygon([(x * SS, y * SS) for x, y in outline], fill=255)
    stripes = Image.new("RGB", (w, h), (250, 250, 245))
    ds = ImageDraw.Draw(stripes)
    for y in range(0, h, 28 * SS):
        ds.rectangle((0, y, w, y + 14 * SS), fill=(25, 40, 90))
    im = Image.new("RGB", (w, h), (255, 255, 255))
    im.paste(stripes, (0, 0), shape)
    collar = Image.new("L", (w, h), 0)
    if back:
        d = ImageDraw.Draw(im)
        d.rectangle((120 * SS, 20 * SS, 200 * SS, 38 * SS), fill=(25, 40, 90))  # collar band
        d.line([(60 * SS, 70 * SS), (260 * SS, 70 * SS)], fill=(250, 250, 245), width=4 * SS)  # yoke seam
    else:
        ImageDraw.Draw(collar).ellipse((136 * SS, 14 * SS, 184 * SS, 54 * SS), fill=255)
        im.paste((255, 255, 255), (0, 0), collar)
    return im.resize((320, 384), Image.Resampling.LANCZOS)


DRAWN = {
    # file -> builder; masks are the size of the photo they belong to
    "ace_logo.png": draw_logo,
    "striped_shirt.png": draw_shirt,
    "striped_shirt_back.png": lambda: draw_shirt(back=True),
    "astronaut_head_mask.png": lambda: _mask((512, 512), [("ellipse", (144, 6, 312, 200))]),
    "astronaut_suit_mask.png": lambda: _mask((512, 512), [("polygon", [
        (20, 512), (18, 340), (35, 280), (75, 240), (115, 215), (125, 265), (170, 292), (250, 292), (295, 265),
        (300, 225), (335, 255), (358, 300), (362, 345), (300, 350), (282, 400), (276, 512)])]),
    "coffee_cup_front_mask.png": lambda: _mask((600, 400), [("rectangle", (256, 200, 336, 258))]),
    "coffee_crema_mask.png": lambda: _mask((600, 400), [("ellipse", (206, 94, 370, 194))]),
    "coffee_cup_mask.png": lambda: _mask((600, 400), [("ellipse", (74, 80, 482, 392)),
                                                      ("ellipse", (170, 14, 412, 210)),
                                                      ("rectangle", (320, 60, 430, 330))]),
}
PHOTOS = {  # file -> (scikit-image sample, how it is made)
    "astronaut.png": ("astronaut.png", "as is"),
    "coffee.jpg": ("coffee.png", "JPEG quality 90"),
    "chelsea_lowres.png": ("chelsea.png", "downscaled 4x (112x75, bilinear)"),
}
_DRAWN_LICENSE = "made for this pack (drawn by `tools/make_examples.py`), public domain (CC0)"
_SKIMAGE = "scikit-image sample data `{}` (`skimage/data/{}`)"
INPUT_DOCS = {  # file -> (what it is, source and license)
    "astronaut.png": ("Eileen Collins, NASA portrait",
                      _SKIMAGE.format("astronaut", "astronaut.png") + ", from the NASA Great Images database "
                      "(https://flic.kr/p/r9qvLn): no known copyright restrictions, public domain"),
    "face_reference.png": ("the face of `astronaut.png`, cropped and mirrored: the reference face (swap in any "
                           "face photo)", "derived from `astronaut.png`, public domain"),
    "astronaut_face_mask.png": ("white = the face of `astronaut.png`", "made for this pack, public domain"),
    "astronaut_head_mask.png": ("white = head and hair of `astronaut.png`", _DRAWN_LICENSE),
    "astronaut_suit_mask.png": ("white = the flight suit of `astronaut.png` (try-on area)", _DRAWN_LICENSE),
    "coffee.jpg": ("espresso cup on a saucer, JPEG quality 90 of the 600x400 original",
                   _SKIMAGE.format("coffee", "coffee.png") + ", photograph by Rachel Michetti, courtesy of Pikolo "
                   "Espresso Bar: CC0"),
    "coffee_cup_front_mask.png": ("white = the front of the cup in `coffee.jpg` (where the logo goes)",
                                  _DRAWN_LICENSE),
    "coffee_crema_mask.png": ("white = the coffee inside the cup in `coffee.jpg`", _DRAWN_LICENSE),
    "coffee_cup_mask.png": ("white = cup, saucer and spoon in `coffee.jpg` (recolour area)", _DRAWN_LICENSE),
    "chelsea_lowres.png": ("Chelsea the cat, downscaled 4x (112x75): the low-resolution input of the "
                           "super-resolution example",
                           _SKIMAGE.format("chelsea", "chelsea.png") + ", photograph by Stefan van der Walt: CC0"),
    "ace_logo.png": ("a made-up logo (sun over two peaks in a ring)", _DRAWN_LICENSE),
    "striped_shirt.png": ("a made-up striped shirt: the garment of the try-on example", _DRAWN_LICENSE),
    "striped_shirt_back.png": ("the same made-up shirt from behind (collar band, yoke seam): the second reference "
                               "of the front-and-back try-on", _DRAWN_LICENSE),
}


def inputs_readme(folder: Path) -> str:
    """inputs/README.md of one example folder: every input file, what uses it, its source and license."""
    users: dict[str, list[str]] = {}
    for wf in workflows():
        if REPO / Path(wf.path).parent == folder:
            for name in wf.image_files():
                users.setdefault(name, []).append(f"`{Path(wf.path).name}`")
    lines = ["# Example inputs", "",
             "Written by `tools/make_examples.py` (photos: `--photos`, from scikit-image's sample data). White in a "
             "mask = the area that is edited; every mask has its photo's size.", "",
             "| file | what | used by | source, license |", "|---|---|---|---|"]
    for name in sorted(users):
        what, source = INPUT_DOCS[name]
        lines.append(f"| `{name}` | {what} | {', '.join(users[name])} | {source} |")
    return "\n".join(lines) + "\n"
def _photo(name: str, source_png: bytes):
    from PIL import Image

    im = Image.open(io.BytesIO(source_png)).convert("RGB")
    out = io.BytesIO()
    if name.endswith(".jpg"):
        im.save(out, "JPEG", quality=90, optimize=True)
    elif name == "chelsea_lowres.png":
        im.resize((im.width // 4, im.height // 4), Image.Resampling.BILINEAR, reducing_gap=None).save(
            out, "PNG", optimize=True)
    else:
        return source_png
    return out.getvalue()


def _read_skimage(source: Path) -> dict[str, bytes]:
    names = {src for src, _ in PHOTOS.values()}
    found = {}
    if source.is_file():
        with zipfile.ZipFile(source) as z:
            for n in names:
                found[n] = z.read(f"skimage/data/{n}")
    else:
        for n in names:
            cands = [source / n, source / "skimage" / "data" / n]
            path = next((c for c in cands if c.is_file()), None)
            if path is None:
                raise SystemExit(f"{n} not found in {source}")
            found[n] = path.read_bytes()
    return found


def _same_pixels(path: Path, im) -> bool:
    import numpy as np
    from PIL import Image

    if not path.is_file():
        return False
    with Image.open(path) as old:
        return old.mode == im.mode and old.size == im.size and np.array_equal(np.asarray(old), np.asarray(im))


def write_inputs(photos: Path | None) -> list[str]:
    """Draw the masks/logo/garment and (with ``photos``) the photos into each folder's inputs/ as needed."""
    written = []
    per_folder: dict[Path, set[str]] = {LORA_DIR: set(), FFT_DIR: set()}
    for wf in workflows():
        per_folder[REPO / Path(wf.path).parent].update(wf.image_files())
    sources = _read_skimage(photos) if photos else {}
    for folder, files in per_folder.items():
        inputs = folder / "inputs"
        inputs.mkdir(parents=True, exist_ok=True)
        for name in sorted(files):
            path = inputs / name
            if name in DRAWN:
                im = DRAWN[name]()
                if not _same_pixels(path, im):
                    im.save(path, optimize=True)
                    written.append(str(path.relative_to(REPO)))
            elif name in PHOTOS and sources:
                data = _photo(name, sources[PHOTOS[name][0]])
                if not path.is_file() or path.read_bytes() != data:
                    path.write_bytes(data)
                    written.append(str(path.relative_to(REPO)))
            elif not path.is_file():
                # Hand-made inputs (face_reference.png, astronaut_face_mask.png) live in the LoRA folder.
                shared = LORA_DIR / "inputs" / name
                if not shared.is_file():
                    raise SystemExit(f"{path.relative_to(REPO)} is missing (photos: pass --photos)")
                shutil.copyfile(shared, path)
                written.append(str(path.relative_to(REPO)))
    return written


# --------------------------------------------------------------------------------------------------
# Template thumbnails: the workflow's own input pictures
# --------------------------------------------------------------------------------------------------

THUMB = 384
THUMB_QUALITY = 85
MASK_TINT = (40, 150, 255)  # light blue: stands out on the warm photos


def _load_image_node(wf: Workflow, link: Out) -> Node:
    """The LoadImage/LoadImageMask node an image socket reads from (through ImageScaleBy)."""
    node = wf.node(link.node)
    while node.type == "ImageScaleBy":
        node = wf.node(node.inputs["image"].node)
    return node


def _cover(im, size: int):
    """``im`` scaled to cover a size x size square, centre-cropped."""
    from PIL import Image

    scale = size / min(im.size)
    w, h = max(size, round(im.width * scale)), max(size, round(im.height * scale))
    resample = Image.Resampling.NEAREST if scale > 3 else Image.Resampling.LANCZOS  # a low-res input stays blocky
    im = im.resize((w, h), resample)
    x, y = (w - size) // 2, (h - size) // 2
    return im.crop((x, y, x + size, y + size))


def thumbnail(wf: Workflow):
    """The template picture: the edit image (mask tinted) or, for reference-only generation, the reference,
    filling the square; with both, the reference inset in the lower left corner."""
    from PIL import Image, ImageOps

    folder = REPO / Path(wf.path).parent / "inputs"
    canvas = next(n for n in wf.nodes if n.type == "ACEPlusCanvas").inputs

    def picture(key: str, mode: str = "RGB"):
        if key not in canvas:
            return None
        with Image.open(folder / _load_image_node(wf, canvas[key]).inputs["image"]) as im:
            return im.convert(mode)

    ref, edit, mask = picture("reference_image"), picture("edit_image"), picture("edit_mask", "L")
    if edit is None:
        return _cover(ref, THUMB)
    if mask is not None:
        tint = Image.new("RGB", edit.size, MASK_TINT)
        edit = Image.composite(Image.blend(edit, tint, 0.5), edit, mask.point(lambda v: 255 if v > 127 else 0))
    out = _cover(edit, THUMB)
    if ref is not None:
        inset = ImageOps.contain(ref, (THUMB * 2 // 5, THUMB * 2 // 5), Image.Resampling.LANCZOS)
        inset = ImageOps.expand(inset, border=3, fill=(255, 255, 255))
        out.paste(inset, (8, THUMB - inset.height - 8))
    return out


def jpeg_pixels(im):
    """What ``im`` looks like once saved as a thumbnail (JPEG) and read back, as a numpy array."""
    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=THUMB_QUALITY, optimize=True)
    with Image.open(buf) as back:
        return np.asarray(back.convert("RGB"), dtype=np.int16)


def write_thumbnails() -> list[str]:
    """example_workflows/<template>.jpg for every template (rewritten only when its pixels change)."""
    import numpy as np
    from PIL import Image

    written = []
    TEMPLATES_DIR.mkdir(exist_ok=True)
    for name, wf in templates().items():
        path = TEMPLATES_DIR / f"{name}.jpg"
        im = thumbnail(wf)
        if path.is_file():
            with Image.open(path) as old:
                if old.size == im.size and np.abs(np.asarray(old.convert("RGB"), np.int16) -
                                                  jpeg_pixels(im)).mean() < 1:
                    continue
        im.save(path, "JPEG", quality=THUMB_QUALITY, optimize=True)
        written.append(str(path.relative_to(REPO)))
    return written


# --------------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------------


def comfyui_version() -> str:
    """Version of the ComfyUI that is booted in this process."""
    import comfyui_version as version

    return version.__version__


def boot_info() -> dict[str, dict]:
    """Boot ComfyUI in-process (a throw-away base directory) and read the node definitions."""
    sys.path.insert(0, str(REPO / "runner"))
    import comfy_host

    comfy_host.boot(Path(tempfile.mkdtemp(prefix="ace_plus_examples_")))
    if comfyui_version() != GENERATED_WITH_COMFYUI:
        raise SystemExit(f"the examples are generated with ComfyUI {GENERATED_WITH_COMFYUI} (the host of "
                         f"tools/setup_host.sh); this is {comfyui_version()}: unset COMFYUI_PATH")
    return object_info(needed_node_types())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=Path, help="scikit-image wheel (or folder with its sample PNGs)")
    args = ap.parse_args(argv)
    for path in write_inputs(args.photos) + write_thumbnails():
        print(f"wrote {path}")
    info = boot_info()
    files = render(info)
    for rel, text in files.items():
        path = REPO / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
            print(f"wrote {rel}")
    stale = set(TEMPLATES_DIR.glob("*.*")) - {REPO / rel for rel in files} - \
        {TEMPLATES_DIR / f"{name}.jpg" for name in templates()}
    for path in sorted(stale):  # a renamed template: its old copy and picture go
        path.unlink()
        print(f"removed {path.relative_to(REPO)}")
    print("example workflows up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
