"""The example workflows (tools/make_examples.py is their single source).

* The committed files equal what the generator writes (workflows byte for byte, drawn inputs pixel for pixel).
* Every UI workflow is well formed (links agree with the nodes' sockets, widgets_values has one value per widget,
  no two nodes overlap, a Markdown note names every model file and its folder, every loader node carries the
  published download URL and folder of each file it names as ``properties.models``) and uses only node types
  registered in the running ComfyUI, each from ComfyUI itself or from this pack.
* example_workflows/ (ComfyUI's template browser) holds exactly a byte-equal copy of each of the 16 workflows and
  its .jpg thumbnail, named so that they sort LoRA family first, then FFT, and need no URL encoding.
* Every UI workflow converts to the builder's API graph with ``runner/workflow_convert.py``'s ``ui_to_api``
  (skipped while that module is absent), and that graph passes ComfyUI's own validation with the published model
  file names (empty placeholder files stand in for the weights).
* Every workflow runs end to end through the real executor on the tiny models and returns an image of the
  expected size: the input photo's size for stitched edits (with the pixels away from the mask unchanged),
  ACE++ Canvas width x height for reference-only generation.

Redux rule: the Redux branch (CLIPVisionLoader, CLIPVisionEncode, StyleModelLoader, StyleModelApply) runs on a
synthetic SigLIP and FLUX.1-Redux (runner/tiny_models.py). ComfyUI's two loaders choose the size themselves:
CLIPVisionLoader picks the full SigLIP config (27 layers x 1152, ~400M parameters) from key names, and
StyleModelLoader always builds the 1152 -> 12288 -> 4096 projector, whose T5-XXL-wide tokens the tiny FLUX (CLIP-L
width, 768) cannot take. The executed graph therefore swaps those two loaders for the TEST-ONLY stand-ins
(REDUX_STAND_INS, tests/comfy_test_nodes) that build ComfyUI's same classes at the file's size; CLIPVisionEncode and
StyleModelApply stay ComfyUI's own (tests/test_redux.py checks their output against a float64 recomputation).
"""

from __future__ import annotations

import json
import string
import sys
from pathlib import Path

import numpy as np
import pytest
from ace_plus_core import limits
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.append(str(REPO / "tools"))  # the generator is development tooling, not on conftest's path
import make_examples as mx  # noqa: E402
WORKFLOWS = {wf.path: wf for wf in mx.workflows()}
IDS = list(WORKFLOWS)
MAX_INPUT_BYTES = 3_000_000

# The Redux loaders -> the TEST-ONLY stand-ins that build ComfyUI's classes at the tiny files' size (same inputs).
REDUX_STAND_INS = {"CLIPVisionLoader": "ACEPlusTestOnlyCLIPVisionLoader",
                   "StyleModelLoader": "ACEPlusTestOnlyStyleModelLoader"}
TINY_FILES = {
    mx.FILL: "tiny_flux_fill.safetensors",
    mx.FFT: "tiny_ace_plus_fft.safetensors",
    mx.PORTRAIT_LORA: "tiny_fill_lora_peft.safetensors",
    mx.SUBJECT_LORA: "tiny_fill_lora_peft.safetensors",
    mx.LOCAL_LORA: "tiny_fill_lora_peft.safetensors",
    mx.VAE: "tiny_taef1.safetensors",
    mx.SIGCLIP: "tiny_siglip_vision.safetensors",
    mx.REDUX: "tiny_flux_redux.safetensors",
}
# The smallest canvas the Canvas widget takes: the checks (full-size output, unmasked pixels untouched, variations that
# differ) do not need more, and TAESD's convolutions grow with it (2/3 of a run at 256 tokens).
TINY_TOKENS = limits.CANVAS_TOKENS.lo
# The published files: name -> (ComfyUI models/ folder, direct download URL).
HF = "https://huggingface.co"
PUBLISHED = {
    "flux1-fill-dev.safetensors":
        ("diffusion_models", f"{HF}/black-forest-labs/FLUX.1-Fill-dev/resolve/main/flux1-fill-dev.safetensors"),
    "comfyui_portrait_lora64.safetensors":
        ("loras", f"{HF}/ali-vilab/ACE_Plus/resolve/main/portrait/comfyui_portrait_lora64.safetensors"),
    "comfyui_subject_lora16.safetensors":
        ("loras", f"{HF}/ali-vilab/ACE_Plus/resolve/main/subject/comfyui_subject_lora16.safetensors"),
    "comfyui_local_lora16.safetensors":
        ("loras", f"{HF}/ali-vilab/ACE_Plus/resolve/main/local_editing/comfyui_local_lora16.safetensors"),
    "ace_plus_fft.safetensors": ("diffusion_models", f"{HF}/ali-vilab/ACE_Plus/resolve/main/ace_plus_fft.safetensors"),
    "ae.safetensors": ("vae", f"{HF}/black-forest-labs/FLUX.1-dev/resolve/main/ae.safetensors"),
    "clip_l.safetensors": ("text_encoders", f"{HF}/comfyanonymous/flux_text_encoders/resolve/main/clip_l.safetensors"),
    "t5xxl_fp16.safetensors":
        ("text_encoders", f"{HF}/comfyanonymous/flux_text_encoders/resolve/main/t5xxl_fp16.safetensors"),
    "flux1-redux-dev.safetensors":
        ("style_models", f"{HF}/black-forest-labs/FLUX.1-Redux-dev/resolve/main/flux1-redux-dev.safetensors"),
    "sigclip_vision_patch14_384.safetensors":
        ("clip_vision", f"{HF}/Comfy-Org/sigclip_vision_384/resolve/main/sigclip_vision_patch14_384.safetensors"),
}
TEMPLATES = REPO / "example_workflows"


def _load_ui(path: str) -> dict:
    return json.loads((REPO / f"{path}.json").read_text())


def _ui_to_api():
    try:
        import workflow_convert
    except ImportError:
        return None
    return getattr(workflow_convert, "ui_to_api", None)


@pytest.fixture(scope="module")
def info(comfy_host) -> dict[str, dict]:
    return mx.object_info(mx.needed_node_types())


@pytest.fixture(scope="module")
def staged_inputs(comfy_host) -> None:
    """Every example input is in ComfyUI's input folder, under ace_plus/, as the workflows name it: the pack copied
    it there when ComfyUI loaded it (nodes/example_inputs.py); nothing is staged by the test."""
    for folder in (mx.LORA_DIR, mx.FFT_DIR):
        for src in sorted((folder / "inputs").glob("*.*")):
            if src.suffix in (".png", ".jpg"):
                staged = comfy_host.input_dir / mx.INPUT_SUBFOLDER / src.name
                assert staged.is_file() and staged.read_bytes() == src.read_bytes(), f"{staged} was not installed"


@pytest.fixture(scope="module")
def placeholder_models(comfy_host, tmp_path_factory):
    """Empty files with the published model names, registered for this module only: enough for validation."""
    import folder_paths

    root = tmp_path_factory.mktemp("published_names")
    added = []
    for wf in WORKFLOWS.values():
        for folder, name in wf.model_files():
            (root / folder).mkdir(exist_ok=True)
            (root / folder / name).touch()
            if (folder, str(root / folder)) not in added:
                comfy_host.add_model_dir(folder, root / folder)
                added.append((folder, str(root / folder)))
    yield root
    for folder, path in added:
        folder_paths.folder_names_and_paths[folder][0].remove(path)
        folder_paths.filename_list_cache.pop(folder, None)


# ------------------------------------------------------------------------------------------ the files


def test_committed_workflows_equal_the_generator_output(info):
    if mx.comfyui_version() != mx.GENERATED_WITH_COMFYUI:
        pytest.skip(f"the examples are generated with ComfyUI {mx.GENERATED_WITH_COMFYUI}, this is "
                    f"{mx.comfyui_version()} (COMFYUI_PATH): its node definitions may add widgets")
    rendered = mx.render(info)
    stale = [rel for rel, text in rendered.items()
             if not (REPO / rel).is_file() or (REPO / rel).read_text() != text]
    assert not stale, f"stale example files, run tools/make_examples.py: {stale}"
    on_disk = {str(p.relative_to(REPO)) for d in (mx.LORA_DIR, mx.FFT_DIR, TEMPLATES) for p in d.glob("*.json")}
    extra = on_disk - set(rendered)
    assert not extra, f"workflow files not made by tools/make_examples.py: {extra}"


def test_templates_are_copies_with_thumbnails():
    """example_workflows/: each workflow once, byte for byte, with its thumbnail; nothing else."""
    names = sorted(p.stem for p in TEMPLATES.glob("*.json"))
    assert {p.name for p in TEMPLATES.iterdir()} == {f"{n}{ext}" for n in names for ext in (".json", ".jpg")}
    originals = {(REPO / f"{path}.json").read_bytes(): path for path in IDS}
    source = {n: originals.get((TEMPLATES / f"{n}.json").read_bytes()) for n in names}
    assert None not in source.values(), f"not a copy of a workflow: {[n for n, p in source.items() if p is None]}"
    # In name order: the LoRA workflows, then the FFT ones (each in README order), each once.
    lora = [p for p in IDS if p.startswith("workflow_example_lora/")]
    assert [source[n] for n in names] == lora + [p for p in IDS if p not in lora]
    for n in names:
        family = "LoRA" if source[n] in lora else "FFT"
        assert n.startswith("ACE++ ") and f" {family} - " in n, n
        assert not set(n) - set(string.ascii_letters + string.digits + "+- "), f"{n!r} needs URL encoding"
    for n, wf in mx.templates().items():
        with Image.open(TEMPLATES / f"{n}.jpg") as im:
            assert im.format == "JPEG" and im.size == (384, 384)
            committed = np.asarray(im.convert("RGB"), np.int16)
        assert np.abs(committed - mx.jpeg_pixels(mx.thumbnail(wf))).mean() < 1, f"{n}.jpg: run tools/make_examples.py"


def test_drawn_inputs_are_current():
    for wf in WORKFLOWS.values():
        for name in wf.image_files():
            if name in mx.DRAWN:
                path = REPO / Path(wf.path).parent / "inputs" / name
                assert mx._same_pixels(path, mx.DRAWN[name]()), f"{path} differs: run tools/make_examples.py"


def test_inputs_exist_are_documented_and_small():
    total = 0
    seen: dict[str, bytes] = {}
    for folder in (mx.LORA_DIR, mx.FFT_DIR):
        readme = (folder / "inputs" / "README.md").read_text()
        for path in sorted((folder / "inputs").glob("*.*")):
            if path.suffix not in (".png", ".jpg"):
                continue
            data = path.read_bytes()
            total += len(data)
            assert f"`{path.name}`" in readme, f"{path} is not listed (source, license) in {folder}/inputs/README.md"
            assert seen.setdefault(path.name, data) == data, f"two different files named {path.name}"
    for wf in WORKFLOWS.values():
        for name in wf.image_files():
            assert (REPO / Path(wf.path).parent / "inputs" / name).is_file(), f"{wf.path}: {name} missing"
    assert total < MAX_INPUT_BYTES


@pytest.mark.parametrize("path", IDS)
def test_ui_workflow_uses_only_core_and_pack_nodes(comfy_host, path):
    mappings = comfy_host.node_class_mappings
    for node in _load_ui(path)["nodes"]:
        if node["type"] in mx.VIRTUAL_NODES:
            continue
        assert node["type"] in mappings, f"{path}: node type {node['type']} is not registered"
        module = getattr(mappings[node["type"]], "RELATIVE_PYTHON_MODULE", None)
        core = module is None or module.startswith(("comfy_extras", "nodes"))
        assert core or module == "custom_nodes.ace_plus", f"{path}: {node['type']} comes from {module}"


def _boxes_overlap(a, b) -> bool:
    (ax, ay, aw, ah), (bx, by, bw, bh) = a, b
    return ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah


@pytest.mark.parametrize("path", IDS)
def test_ui_workflow_is_well_formed(info, path):
    ui = _load_ui(path)
    assert ui["version"] == 0.4 and ui["extra"]["ds"] == {"scale": 0.9, "offset": [0, 0]}
    nodes = {n["id"]: n for n in ui["nodes"]}
    assert ui["last_node_id"] == max(nodes) and ui["last_link_id"] == len(ui["links"])
    for link_id, src, src_slot, dst, dst_slot, link_type in ui["links"]:
        out = nodes[src]["outputs"][src_slot]
        assert link_id in out["links"] and out["slot_index"] == src_slot and out["type"] == link_type
        assert nodes[dst]["inputs"][dst_slot]["link"] == link_id
    for node in ui["nodes"]:
        assert node["mode"] == 0 and node["flags"] == {}
        if node["type"] in mx.VIRTUAL_NODES:
            continue
        properties = {"Node name for S&R": node["type"]}
        files = [v for v in node["widgets_values"] if isinstance(v, str) and v.endswith(".safetensors")]
        if files:
            properties["models"] = [{"name": f, "url": PUBLISHED[f][1], "directory": PUBLISHED[f][0]} for f in files]
        assert node["properties"] == properties, f"{path}: {node['type']} properties"
        defs = mx.input_defs(info[node["type"]])
        widgets = [d for d in defs if d.is_widget]
        expected = len(widgets) + sum(d.has_control for d in widgets) + mx.has_upload_widget(info[node["type"]])
        assert len(node["widgets_values"]) == expected, f"{path}: {node['type']} widgets_values"
        for entry in node["inputs"]:
            assert ("widget" in entry) == (entry["name"] in {d.name for d in widgets})
            assert "widget" not in entry or entry["link"] is not None
    assert sorted(n["order"] for n in ui["nodes"]) == list(range(len(nodes)))
    for link_id, src, _, dst, _, _ in ui["links"]:
        assert nodes[src]["order"] < nodes[dst]["order"]
    boxes = {n["id"]: (n["pos"][0], n["pos"][1] - mx.TITLE_H, n["size"][0], n["size"][1] + mx.TITLE_H)
             for n in ui["nodes"]}
    ids = sorted(boxes)
    for i, a in enumerate(ids):
        for b in ids[i + 1:]:
            assert not _boxes_overlap(boxes[a], boxes[b]), f"{path}: nodes {a} and {b} overlap"
    for group in ui["groups"]:
        gx, gy, gw, gh = group["bounding"]
        inside = [i for i, (x, y, w, h) in boxes.items() if gx <= x and x + w <= gx + gw and gy <= y and y + h <= gy + gh]
        assert inside, f"{path}: group {group['title']} is empty"
    notes = [n for n in ui["nodes"] if n["type"] == "MarkdownNote"]
    assert len(notes) == 1
    text = notes[0]["widgets_values"][0]
    for folder, name in WORKFLOWS[path].model_files():
        assert f"`{folder}/{name}` from <{PUBLISHED[name][1]}>" in text, f"{path}: the note does not say where {name} goes"
    assert f"{Path(path).parent.name}/inputs/" in text, f"{path}: the note does not say where the example inputs are"
    assert "MaskPreview+" not in {n["type"] for n in ui["nodes"]}


def test_prompts_keep_image_placeholder_through_the_frontend(info):
    """``{image}`` must reach the model literally: the UI file escapes it for the frontend's dynamic prompts."""
    wf = WORKFLOWS["workflow_example_lora/local_control_editing"]
    ui = _load_ui(wf.path)
    texts = [n["widgets_values"][0] for n in ui["nodes"] if n["type"] == "CLIPTextEncode"]
    assert any(t.startswith("\\{image\\} ") for t in texts)
    api = mx.to_api(wf, info)
    assert any(n["inputs"].get("text", "").startswith("{image} ") for n in api.values())


# ------------------------------------------------------------------------------------------ convert + validate


@pytest.mark.parametrize("path", IDS)
def test_ui_workflow_converts_to_the_builder_graph(info, path):
    ui_to_api = _ui_to_api()
    if ui_to_api is None:
        pytest.skip("runner/workflow_convert.py (ui_to_api) is not there yet")
    converted = ui_to_api(_load_ui(path), info, meta=False)
    assert converted == mx.to_api(WORKFLOWS[path], info)


@pytest.mark.parametrize("path", IDS)
def test_api_graph_validates_with_the_published_model_names(comfy_host, info, staged_inputs, placeholder_models,
                                                            path):
    outputs = comfy_host.validate(mx.to_api(WORKFLOWS[path], info))
    assert outputs


# ------------------------------------------------------------------------------------------ run on tiny models


def tiny_graph(prompt: dict) -> dict:
    """The example on the tiny models: tiny files, CLIP-L alone, 1 step, TINY_TOKENS, the Redux loaders' stand-ins."""
    prompt = json.loads(json.dumps(prompt))
    for node in prompt.values():
        node["class_type"] = REDUX_STAND_INS.get(node["class_type"], node["class_type"])
        inputs = node["inputs"]
        for key, value in inputs.items():
            if isinstance(value, str) and value in TINY_FILES:
                inputs[key] = TINY_FILES[value]
        if node["class_type"] == "DualCLIPLoader":
            node["class_type"] = "CLIPLoader"
            node["inputs"] = {"clip_name": "clip_l_random.safetensors", "type": "stable_diffusion"}
        if node["class_type"] == "KSampler":
            inputs["steps"] = 1
        if node["class_type"] == "ACEPlusCanvas":
            inputs["max_image_tokens"] = TINY_TOKENS
    return prompt


def _image_size(prompt: dict, link, input_dir: Path) -> tuple[int, int]:
    node = prompt[link[0]]
    if node["class_type"] == "LoadImage":
        with Image.open(input_dir / node["inputs"]["image"]) as im:
            return im.size
    if node["class_type"] == "ImageScaleBy":
        w, h = _image_size(prompt, node["inputs"]["image"], input_dir)
        s = node["inputs"]["scale_by"]
        return round(w * s), round(h * s)
    raise AssertionError(f"cannot size {node['class_type']}")


def _load(path: Path, mode: str) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert(mode))


def _as_loaded(comfy_host, name: str) -> np.ndarray:
    """An input photo in 8 bits as ComfyUI's own LoadImage hands it to the graph: PIL's decoding up to 0.3.75;
    0.33 decodes JPEG through PyAV, whose pixels differ from PIL's by a level here and there."""
    image, _ = comfy_host.node_class_mappings["LoadImage"]().load_image(name)
    return np.round(image[0].double().cpu().numpy() * 255).astype(np.uint8)


@pytest.mark.parametrize("path", IDS)
def test_example_runs_end_to_end_on_tiny_models(comfy_host, tiny_models, info, staged_inputs, path):
    ui_to_api = _ui_to_api()
    api = ui_to_api(_load_ui(path), info) if ui_to_api else mx.to_api(WORKFLOWS[path], info)
    prompt = tiny_graph(api)
    result = comfy_host.run(prompt)
    saved = result.image_paths(comfy_host.output_dir)
    repeat = [n["inputs"]["amount"] for n in prompt.values() if n["class_type"] == "RepeatLatentBatch"]
    assert len(saved) == (repeat[0] if repeat else 1), f"{path}: saved {saved}"
    outs = [_load(p, "RGB") for p in saved]
    for i, out in enumerate(outs):
        _check_output(comfy_host, prompt, path, out)
        for other in outs[:i]:  # variations: each its own (the sampler's noise differs per batch item)
            assert not np.array_equal(out, other), f"{path}: two variations are the same image"


def _check_output(comfy_host, prompt: dict, path: str, out: np.ndarray) -> None:
    stitch = next(n for n in prompt.values() if n["class_type"] == "ACEPlusStitch")["inputs"]
    canvas = next(n for n in prompt.values() if n["class_type"] == "ACEPlusCanvas")["inputs"]
    pads = [canvas.get(f"outpaint_{side}", 0) for side in ("top", "bottom", "left", "right")]
    if "original_image" in stitch:
        w, h = _image_size(prompt, stitch["original_image"], comfy_host.input_dir)
    else:
        w, h = canvas["width"], canvas["height"]
    if any(pads):  # outpainting: the enlarged photo, the original pixels in place
        photo = _as_loaded(comfy_host, prompt[stitch["original_image"][0]]["inputs"]["image"])
        assert np.array_equal(out[pads[0] : pads[0] + h, pads[2] : pads[2] + w], photo), path
        w, h = w + pads[2] + pads[3], h + pads[0] + pads[1]
    assert out.shape == (h, w, 3), f"{path}: output {out.shape[1]}x{out.shape[0]}, expected {w}x{h}"
    if "mask" in stitch:  # a local edit: the photo is unchanged away from the (grown, feathered) mask
        photo_link = stitch["original_image"]
        photo = _as_loaded(comfy_host, prompt[photo_link[0]]["inputs"]["image"])
        mask = _load(comfy_host.input_dir / prompt[stitch["mask"][0]]["inputs"]["image"], "L") > 127
        reach = stitch["grow_mask_px"] + stitch["feather_px"] + 1
        ys, xs = np.nonzero(mask)
        far = np.ones(mask.shape, bool)
        far[max(ys.min() - reach, 0) : ys.max() + reach + 1, max(xs.min() - reach, 0) : xs.max() + reach + 1] = False
        assert np.array_equal(out[far], photo[far])
        assert not np.array_equal(out[mask], photo[mask])
