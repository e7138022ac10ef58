"""The nine official ACE++ workflows (UI format, ali-vilab/ACE_plus ``workflow/ComfyUI-ACE_Plus``) load, convert
and run end to end through ComfyUI's real executor, with this pack's drop-in nodes and the tiny test models.

How they are run (the same rules as ``runner/run_workflow.py``'s synthetic mode, ``synthetic_graph``):

* converted with runner/workflow_convert.py against the live node definitions; ``MaskPreview+`` (a third-party
  preview node from ComfyUI_essentials) is dropped together with its links;
* model files map to the tiny ones: flux1-fill-dev -> tiny_flux_fill, ace_plus_fft -> tiny_ace_plus_fft, every
  LoRA -> tiny_fill_lora_peft (its strength kept), ae -> tiny_taef1, DualCLIPLoader (which always builds a 9.5 GB
  T5-XXL) -> CLIPLoader(clip_l_random, stable_diffusion);
* **Redux**: the FLUX.1 Redux style model and the SigCLIP vision encoder have fixed full sizes in ComfyUI (no small
  file loads), so the Redux branch is removed: ``StyleModelApply`` is bypassed (its conditioning input passes
  through, as the frontend bypasses a node) and StyleModelLoader / CLIPVisionLoader / CLIPVisionEncode are dropped.
  The rest of those two workflows runs unchanged;
* 1 sampler step, token budgets capped at 1024 (the processors' minimum), small images so the canvases stay
  small (VAE encode/decode dominate the CPU time): references and edit images of about 200 px, and a 256 x 256
  blank area (the processors' minimum height/width) for reference-only generation;
* their input files (not published) are generated in ComfyUI's input folder under the names the workflows use:
  solid red references (JPEG), solid blue edit images with an alpha hole (LoadImage's mask), one WebP.

The two control workflows use ``contour_repainting`` without a line drawing: the official pack ran a network
annotator for it; this pack asks for the drawing on ``control_image`` and refuses with an error naming that input.
The test checks the refusal, then connects a LoadImage to ``control_image`` (what a user does) and runs.

Every run checks the fixed ``SLICE_W``: the workflow's own ImageCrop inputs (x = SLICE_W, width = OUT_W,
height = OUT_H) applied to the processor's canvas must start exactly at the first column of the edit area: the
column before it is reference red, the first one is not (edit blue or the gray of the area to generate); without
a reference SLICE_W is 0 (the official FFT node cropped 30 px off such results).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from paths import OFFICIAL_WORKFLOWS
from comfy_host import GraphError
from PIL import Image

import run_workflow as rw
import workflow_convert as wc

OFFICIAL = OFFICIAL_WORKFLOWS
FILES = sorted(OFFICIAL.glob("ACE_Plus_*.json")) if OFFICIAL.is_dir() else []
pytestmark = pytest.mark.skipif(not FILES, reason=f"the official ACE++ workflows are not in {OFFICIAL} "
                                                  "(set ACE_OFFICIAL_WORKFLOWS)")

RED, BLUE = (255, 0, 0), (0, 0, 255)
CONTROL = {"ACE_Plus_FFT_workflow_controlpreprocess", "ACE_Plus_LoRA_workflow_localcontrol_generation"}
WITH_REFERENCE = {
    "ACE_Plus_FFT_workflow_reference_generation", "ACE_Plus_FFT_workflow_referenceediting_generation",
    "ACE_Plus_LoRA_workflow_redux_reference_editing", "ACE_Plus_LoRA_workflow_redux_reference_generation",
    "ACE_Plus_LoRA_workflow_reference_editing", "ACE_Plus_LoRA_workflow_reference_generation",
}
WITH_EDIT = {
    "ACE_Plus_FFT_workflow_controlpreprocess", "ACE_Plus_FFT_workflow_no_preprocess",
    "ACE_Plus_FFT_workflow_referenceediting_generation", "ACE_Plus_LoRA_workflow_localcontrol_generation",
    "ACE_Plus_LoRA_workflow_redux_reference_editing", "ACE_Plus_LoRA_workflow_reference_editing",
}
# Small (CPU time) but plausible shapes, none a multiple of 16, tall and wide.
REFERENCE_SIZES = {"human_1.jpg": (140, 186), "subject_1.jpg": (205, 150)}
EDIT_SIZE = (167, 259)
HOLE = (70, 45, 100, 75)  # top, left, height, width: clear of the left column


def _write_rgba(path: Path, size: tuple[int, int], rgb, hole=None, **save) -> None:
    w, h = size
    data = np.zeros((h, w, 4), np.uint8)
    data[..., :3] = rgb
    data[..., 3] = 255
    if hole is not None:
        top, left, hh, ww = hole
        data[top: top + hh, left: left + ww, 3] = 0  # LoadImage's MASK = 1 - alpha
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(data, "RGBA").save(path, **save)


def _write_inputs(input_dir: Path, api: dict) -> None:
    """Every LoadImage file of a converted workflow: references red, edit images blue with a hole. Always
    (re)written: other tests share ComfyUI's input folder."""
    for node in api.values():
        if node["class_type"] != "LoadImage":
            continue
        name = rw._clean_name(node["inputs"]["image"])
        path = input_dir / name
        if name in REFERENCE_SIZES:
            Image.new("RGB", REFERENCE_SIZES[name], RED).save(path, quality=95)
        elif name == "control_lines.png":
            img = np.full((EDIT_SIZE[1], EDIT_SIZE[0], 3), 255, np.uint8)
            img[::24] = 0
            img[:, ::24] = 0
            Image.fromarray(img).save(path)
        else:
            save = {"lossless": True} if name.endswith(".webp") else {}
            _write_rgba(path, EDIT_SIZE, BLUE, hole=HOLE, **save)


def _add_control_image(doc: dict, proc_id: int) -> dict:
    """What a user does in the UI: a LoadImage with a line drawing wired to the processor's control_image."""
    doc = copy.deepcopy(doc)
    node_id, link_id = 9000, 9000
    doc["nodes"].append({
        "id": node_id, "type": "LoadImage", "pos": [0, 0], "size": [315, 314], "flags": {}, "order": 0, "mode": 0,
        "inputs": [], "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [link_id]},
                                  {"name": "MASK", "type": "MASK", "links": None}],
        "properties": {}, "widgets_values": ["control_lines.png", "image"],
    })
    proc = next(n for n in doc["nodes"] if n["id"] == proc_id)
    proc["inputs"].append({"name": "control_image", "type": "IMAGE", "link": link_id, "shape": 7})
    doc["links"].append([link_id, node_id, 0, proc_id, 3, "IMAGE"])
    return doc


def _prepare(doc: dict, object_info: dict) -> tuple[dict, str, str, str]:
    api = wc.ui_to_api(doc, object_info, drop_types={"MaskPreview+"})
    api, notes = rw.synthetic_graph(api, model_set="tiny", seq_length=1024)
    rw.set_values(api, steps=1)
    (proc_id,) = [k for k, v in api.items() if v["class_type"] in ("ACEPlusLoraProcessor", "ACEPlusFFTProcessor")]
    api[proc_id]["inputs"].update(height=256, width=256)  # the blank area of reference-only generation
    assert not any(v["class_type"] in rw.REDUX_TYPES + ("DualCLIPLoader", "MaskPreview+") for v in api.values())
    (crop_id,) = [k for k, v in api.items() if v["class_type"] == "ImageCrop"]
    return api, proc_id, crop_id, "\n".join(notes)


def _red(column) -> np.ndarray:
    r, g, b = column[..., 0], column[..., 1], column[..., 2]
    return (r > 0.8) & (g < 0.2) & (b < 0.2)


@pytest.fixture(scope="module")
def object_info(comfy_host):
    return comfy_host.object_info()


@pytest.fixture
def recorded(comfy_host):
    return comfy_host.node_class_mappings["ACEPlusTestOnlyProbe"].RECORDED


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_official_workflow_runs_and_crops_at_the_true_boundary(comfy_host, tiny_models, object_info, recorded, path):
    name = path.stem
    doc = json.loads(path.read_text())
    api, proc_id, crop_id, notes = _prepare(doc, object_info)
    _write_inputs(comfy_host.input_dir, api)
    if "redux" in name:
        assert "StyleModelApply: bypassed" in notes
    if name in CONTROL:
        with pytest.raises(GraphError) as err:
            comfy_host.run(api)
        assert "control_image" in f"{err.value} {err.value.details}"
        api, proc_id, crop_id, _ = _prepare(_add_control_image(doc, int(proc_id)), object_info)
        _write_inputs(comfy_host.input_dir, api)
        assert api[proc_id]["inputs"]["control_image"] == ["9000", 0]

    # Probes: the canvas, the workflow's own crop of the decoded canvas, and the same crop applied to the canvas.
    crop_inputs = api[crop_id]["inputs"]
    api["9101"] = {"class_type": "ImageCrop", "inputs": {**crop_inputs, "image": [proc_id, 0]}}
    api["9102"] = {"class_type": "ACEPlusTestOnlyProbe", "inputs": {"label": f"{name}/canvas", "image": [proc_id, 0]}}
    api["9103"] = {"class_type": "ACEPlusTestOnlyProbe", "inputs": {"label": f"{name}/canvas_crop", "image": ["9101", 0]}}
    api["9104"] = {"class_type": "ACEPlusTestOnlyProbe", "inputs": {"label": f"{name}/result", "image": [crop_id, 0]}}
    result = comfy_host.run(api)

    canvas = recorded[f"{name}/canvas"][0].numpy()
    canvas_crop = recorded[f"{name}/canvas_crop"][0].numpy()
    final = recorded[f"{name}/result"][0].numpy()
    height, width = canvas.shape[:2]
    assert height % 16 == 0 and width % 16 == 0
    slice_w = width - canvas_crop.shape[1]
    assert canvas_crop.shape[0] == height
    np.testing.assert_array_equal(canvas_crop, canvas[:, slice_w:])
    if name in WITH_REFERENCE:
        assert slice_w > 0
        assert _red(canvas[:, slice_w - 1]).any(), "the column before SLICE_W must be the reference's"
        assert not _red(canvas[:, slice_w]).any(), "SLICE_W must be the first column of the edit area"
        assert not _red(canvas_crop).any()
    else:
        assert slice_w == 0  # no reference: nothing to cut (the official FFT node cut 30 px here)
    first = canvas_crop[:, 0]
    if name in WITH_EDIT:
        blue = (first[:, 2] > 0.8) & (first[:, 0] < 0.2)
        assert blue.mean() > 0.5  # the edit image's left column (the hole is elsewhere)
    else:
        assert np.allclose(first, 0.5, atol=0.02)  # reference-only generation: the blank gray edit area
    # The decoded result is cut with the same numbers: same size as the edit area of the canvas.
    assert final.shape == canvas_crop.shape and np.isfinite(final).all()
    previews = [img for ui in result.outputs.values() for img in ui.get("images", [])]
    assert previews and all(img["type"] == "temp" for img in previews)
