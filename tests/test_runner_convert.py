"""UI-format -> API-format conversion (runner/workflow_convert.py) against hand-written expectations.

Every case below is a UI workflow written by hand the way ComfyUI's frontend saves one (``nodes`` with
``widgets_values``, ``inputs`` with ``link``/``widget``, ``links`` rows) next to the API graph the frontend's
``graphToPrompt()`` queues for it, built independently with tests/graphs.py. The node definitions are the live
ones of the booted ComfyUI (``ComfyHost.object_info()``, what ``GET /object_info`` serves).

The expectations were cross-checked once against the real frontend (ComfyUI_frontend 1.32.9 in headless
chromium: ``app.loadGraphData(ui)`` then ``app.graphToPrompt()``); that check needs a browser and is not part
of this suite. The official ACE++ workflows are then converted and their key inputs checked.
"""

from __future__ import annotations

import copy
import json
import random

import pytest
from paths import OFFICIAL_WORKFLOWS
from graphs import Graph

import workflow_convert as wc

OFFICIAL = OFFICIAL_WORKFLOWS
OFFICIAL_FILES = sorted(OFFICIAL.glob("*.json")) if OFFICIAL.is_dir() else []


@pytest.fixture(scope="module")
def object_info(comfy_host):
    return comfy_host.object_info()


# --- hand-written UI documents ----------------------------------------------------------------------------


def ui(nodes: list[dict], links: list[list]) -> dict:
    return {
        "last_node_id": max(n["id"] for n in nodes),
        "last_link_id": max((link[0] for link in links), default=0),
        "nodes": nodes,
        "links": links,
        "groups": [],
        "config": {},
        "extra": {"ds": {"scale": 1, "offset": [0, 0]}},
        "version": 0.4,
    }


def node(id_: int, type_: str, widgets_values=None, inputs=(), outputs=(), mode: int = 0, **extra) -> dict:
    d = {"id": id_, "type": type_, "pos": [id_ * 50, 0], "size": [300, 100], "flags": {}, "order": id_,
         "mode": mode, "inputs": list(inputs), "outputs": list(outputs), "properties": {}}
    if widgets_values is not None:
        d["widgets_values"] = widgets_values
    d.update(extra)
    return d


def inp(name: str, type_: str, link: int | None, widget: bool = False) -> dict:
    d = {"name": name, "type": type_, "link": link}
    if widget:
        d["widget"] = {"name": name}
    return d


def out(name: str, type_: str, links: list[int]) -> dict:
    return {"name": name, "type": type_, "links": links}


def case_widgets():
    """Widget order (required then optional, defaults for unsaved ones), the seed's control widget, LoadImage's
    upload button, and widgets converted to inputs with a link (the official ImageCrop wiring)."""
    doc = ui(
        [
            node(1, "UNETLoader", ["flux1-fill-dev.safetensors", "fp8_e4m3fn"], outputs=[out("MODEL", "MODEL", [4])]),
            # Saved before DualCLIPLoader had its optional 'device' widget: it keeps its default.
            node(2, "DualCLIPLoader", ["clip_l.safetensors", "t5xxl_fp16.safetensors", "flux"],
                 outputs=[out("CLIP", "CLIP", [1])]),
            node(3, "CLIPTextEncode", ["a portrait"], inputs=[inp("clip", "CLIP", 1)],
                 outputs=[out("CONDITIONING", "CONDITIONING", [5, 6])]),
            node(4, "LoadImage", ["edit.png", "image"],
                 outputs=[out("IMAGE", "IMAGE", [2, 8]), out("MASK", "MASK", [3])]),
            node(5, "ACEPlusLoraProcessor", [True, 768, 512, "no_preprocess", 2048],
                 inputs=[inp("reference_image", "IMAGE", None), inp("edit_image", "IMAGE", 2),
                         inp("edit_mask", "MASK", 3)],
                 outputs=[out("IMAGE", "IMAGE", []), out("MASK", "MASK", []), out("OUT_H", "INT", [10]),
                          out("OUT_W", "INT", [9]), out("SLICE_W", "INT", [11])]),
            node(6, "KSampler", [1234, "randomize", 20, 1, "euler", "normal", 1],
                 inputs=[inp("model", "MODEL", 4), inp("positive", "CONDITIONING", 5),
                         inp("negative", "CONDITIONING", 6), inp("latent_image", "LATENT", 7)],
                 outputs=[out("LATENT", "LATENT", [])]),
            node(7, "EmptySD3LatentImage", [512, 768, 1], outputs=[out("LATENT", "LATENT", [7])]),
            # width/height/x converted to inputs: their widgets_values slots stay, the links win.
            node(8, "ImageCrop", [512, 512, 0, 16],
                 inputs=[inp("image", "IMAGE", 8), inp("width", "INT", 9, widget=True),
                         inp("height", "INT", 10, widget=True), inp("x", "INT", 11, widget=True)],
                 outputs=[out("IMAGE", "IMAGE", [12])]),
            node(9, "SaveImage", ["ace"], inputs=[inp("images", "IMAGE", 12)]),
        ],
        [[1, 2, 0, 3, 0, "CLIP"], [2, 4, 0, 5, 1, "IMAGE"], [3, 4, 1, 5, 2, "MASK"], [4, 1, 0, 6, 0, "MODEL"],
         [5, 3, 0, 6, 1, "CONDITIONING"], [6, 3, 0, 6, 2, "CONDITIONING"], [7, 7, 0, 6, 3, "LATENT"],
         [8, 4, 0, 8, 0, "IMAGE"], [9, 5, 3, 8, 1, "INT"], [10, 5, 2, 8, 2, "INT"], [11, 5, 4, 8, 3, "INT"],
         [12, 8, 0, 9, 0, "IMAGE"]],
    )
    g = Graph()
    unet = g.add("UNETLoader", unet_name="flux1-fill-dev.safetensors", weight_dtype="fp8_e4m3fn")
    clip = g.add("DualCLIPLoader", clip_name1="clip_l.safetensors", clip_name2="t5xxl_fp16.safetensors",
                 type="flux", device="default")
    text = g.add("CLIPTextEncode", text="a portrait", clip=clip[0])
    image = g.add("LoadImage", image="edit.png")
    proc = g.add("ACEPlusLoraProcessor", use_reference=True, height=768, width=512, task_type="no_preprocess",
                 max_seq_length=2048, edit_image=image[0], edit_mask=image[1])
    g.add("KSampler", seed=1234, steps=20, cfg=1, sampler_name="euler", scheduler="normal", denoise=1,
          model=unet[0], positive=text[0], negative=text[0], latent_image=["7", 0])
    g.add("EmptySD3LatentImage", width=512, height=768, batch_size=1)
    crop = g.add("ImageCrop", image=image[0], width=proc[3], height=proc[2], x=proc[4], y=16)
    g.add("SaveImage", images=crop[0], filename_prefix="ace")
    return doc, g.prompt()


def case_primitive_reroute():
    """A PrimitiveNode feeding two converted widgets (its value, not a link, is sent; its own control widget
    takes a slot), another feeding the seed; reroutes (one chained) in front of the model and the VAE."""
    doc = ui(
        [
            node(1, "UNETLoader", ["tiny_flux_fill.safetensors", "default"], outputs=[out("MODEL", "MODEL", [1])]),
            node(2, "Reroute", None, inputs=[inp("", "*", 1)], outputs=[out("", "MODEL", [2])]),
            node(3, "Reroute", None, inputs=[inp("", "*", 2)], outputs=[out("", "MODEL", [3])]),
            node(4, "CLIPLoader", ["clip_l_random.safetensors", "stable_diffusion", "default"],
                 outputs=[out("CLIP", "CLIP", [4])]),
            node(5, "CLIPTextEncode", ["a cat"], inputs=[inp("clip", "CLIP", 4)],
                 outputs=[out("CONDITIONING", "CONDITIONING", [5, 6])]),
            node(6, "EmptySD3LatentImage", [1024, 1024, 1],
                 inputs=[inp("width", "INT", 7, widget=True), inp("height", "INT", 8, widget=True)],
                 outputs=[out("LATENT", "LATENT", [9])]),
            node(7, "KSampler", [0, "randomize", 3, 1, "euler", "simple", 1],
                 inputs=[inp("model", "MODEL", 3), inp("positive", "CONDITIONING", 5),
                         inp("negative", "CONDITIONING", 6), inp("latent_image", "LATENT", 9),
                         inp("seed", "INT", 10, widget=True)],
                 outputs=[out("LATENT", "LATENT", [11])]),
            node(8, "PrimitiveNode", [320, "fixed"],
                 outputs=[{"name": "INT", "type": "INT", "links": [7, 8], "widget": {"name": "width"}}],
                 title="size"),
            node(9, "PrimitiveNode", [987654321, "increment"],
                 outputs=[{"name": "INT", "type": "INT", "links": [10], "widget": {"name": "seed"}}]),
            node(10, "VAELoader", ["tiny_taef1.safetensors"], outputs=[out("VAE", "VAE", [12])]),
            node(11, "Reroute", None, inputs=[inp("", "*", 12)], outputs=[out("", "VAE", [13])]),
            node(12, "VAEDecode", None, inputs=[inp("samples", "LATENT", 11), inp("vae", "VAE", 13)],
                 outputs=[out("IMAGE", "IMAGE", [14])]),
            node(13, "PreviewImage", [], inputs=[inp("images", "IMAGE", 14)]),
            node(14, "Note", ["the seed comes from the primitive"]),
            node(15, "MarkdownNote", ["# notes are not sent"]),
        ],
        [[1, 1, 0, 2, 0, "*"], [2, 2, 0, 3, 0, "*"], [3, 3, 0, 7, 0, "MODEL"], [4, 4, 0, 5, 0, "CLIP"],
         [5, 5, 0, 7, 1, "CONDITIONING"], [6, 5, 0, 7, 2, "CONDITIONING"], [7, 8, 0, 6, 0, "INT"],
         [8, 8, 0, 6, 1, "INT"], [9, 6, 0, 7, 3, "LATENT"], [10, 9, 0, 7, 4, "INT"], [11, 7, 0, 12, 0, "LATENT"],
         [12, 10, 0, 11, 0, "*"], [13, 11, 0, 12, 1, "VAE"], [14, 12, 0, 13, 0, "IMAGE"]],
    )
    expected = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "tiny_flux_fill.safetensors",
                                                       "weight_dtype": "default"}},
        "4": {"class_type": "CLIPLoader", "inputs": {"clip_name": "clip_l_random.safetensors",
                                                       "type": "stable_diffusion", "device": "default"}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["4", 0]}},
        "6": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 320, "height": 320, "batch_size": 1}},
        "7": {"class_type": "KSampler", "inputs": {
            "seed": 987654321, "steps": 3, "cfg": 1, "sampler_name": "euler", "scheduler": "simple", "denoise": 1,
            "model": ["1", 0], "positive": ["5", 0], "negative": ["5", 0], "latent_image": ["6", 0]}},
        "10": {"class_type": "VAELoader", "inputs": {"vae_name": "tiny_taef1.safetensors"}},
        "12": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["10", 0]}},
        "13": {"class_type": "PreviewImage", "inputs": {"images": ["12", 0]}},
    }
    return doc, expected


def case_bypass_mute():
    """Bypassed nodes (mode 4) pass an input through: the input in the output's slot when its type fits, else the
    first input of the exact type; no match (or the chosen input unlinked) leaves the target's input out. Muted
    nodes (mode 2) are not sent and inputs linked to them are left out."""
    doc = ui(
        [
            node(1, "UNETLoader", ["tiny_flux_fill.safetensors", "default"], outputs=[out("MODEL", "MODEL", [1])]),
            node(2, "LoraLoaderModelOnly", ["lora.safetensors", 1], mode=4, inputs=[inp("model", "MODEL", 1)],
                 outputs=[out("MODEL", "MODEL", [2])]),
            node(3, "DifferentialDiffusion", [1], inputs=[inp("model", "MODEL", 2)],
                 outputs=[out("MODEL", "MODEL", [3])]),
            node(4, "CLIPLoader", ["clip_l_random.safetensors", "stable_diffusion"],
                 outputs=[out("CLIP", "CLIP", [4, 5])]),
            node(5, "CLIPTextEncode", ["positive"], inputs=[inp("clip", "CLIP", 4)],
                 outputs=[out("CONDITIONING", "CONDITIONING", [6])]),
            node(6, "CLIPTextEncode", [""], inputs=[inp("clip", "CLIP", 5)],
                 outputs=[out("CONDITIONING", "CONDITIONING", [7])]),
            node(7, "FluxGuidance", [50], mode=4, inputs=[inp("conditioning", "CONDITIONING", 6)],
                 outputs=[out("CONDITIONING", "CONDITIONING", [8])]),
            node(8, "VAELoader", ["tiny_taef1.safetensors"], mode=2, outputs=[out("VAE", "VAE", [9, 16])]),
            node(9, "LoadImage", ["ref.png", "image"], outputs=[out("IMAGE", "IMAGE", [10]),
                                                                out("MASK", "MASK", [11])]),
            node(10, "ACEPlusLoraProcessor", [True, 1024, 1024, "repainting", 3072], mode=4,
                 inputs=[inp("reference_image", "IMAGE", None), inp("edit_image", "IMAGE", 10),
                         inp("edit_mask", "MASK", 11)],
                 outputs=[out("IMAGE", "IMAGE", [12]), out("MASK", "MASK", [13]), out("OUT_H", "INT", []),
                          out("OUT_W", "INT", []), out("SLICE_W", "INT", [])]),
            node(11, "ACEPlusLoraConditioning", [True], mode=4,
                 inputs=[inp("positive", "CONDITIONING", 8), inp("negative", "CONDITIONING", 7),
                         inp("vae", "VAE", 9), inp("pixels", "IMAGE", 12), inp("mask", "MASK", 13)],
                 outputs=[out("positive", "CONDITIONING", [14]), out("negative", "CONDITIONING", [15]),
                          out("latent", "LATENT", [17])]),
            node(12, "KSampler", [5, "fixed", 2, 1, "euler", "normal", 1],
                 inputs=[inp("model", "MODEL", 3), inp("positive", "CONDITIONING", 14),
                         inp("negative", "CONDITIONING", 15), inp("latent_image", "LATENT", 17)],
                 outputs=[out("LATENT", "LATENT", [18])]),
            node(13, "VAEDecode", None, inputs=[inp("samples", "LATENT", 18), inp("vae", "VAE", 16)],
                 outputs=[out("IMAGE", "IMAGE", [19])]),
            node(14, "PreviewImage", [], mode=2, inputs=[inp("images", "IMAGE", 19)]),
            node(15, "ImageInvert", None, mode=4, inputs=[inp("image", "IMAGE", 20)],
                 outputs=[out("IMAGE", "IMAGE", [21])]),
            node(16, "SaveImage", ["out"], inputs=[inp("images", "IMAGE", 21)]),
            node(17, "VAEDecode", None, inputs=[inp("samples", "LATENT", 18), inp("vae", "VAE", None)],
                 outputs=[out("IMAGE", "IMAGE", [20])]),
        ],
        [[1, 1, 0, 2, 0, "MODEL"], [2, 2, 0, 3, 0, "MODEL"], [3, 3, 0, 12, 0, "MODEL"], [4, 4, 0, 5, 0, "CLIP"],
         [5, 4, 0, 6, 0, "CLIP"], [6, 5, 0, 7, 0, "CONDITIONING"], [7, 6, 0, 11, 1, "CONDITIONING"],
         [8, 7, 0, 11, 0, "CONDITIONING"], [9, 8, 0, 11, 2, "VAE"], [10, 9, 0, 10, 1, "IMAGE"],
         [11, 9, 1, 10, 2, "MASK"], [12, 10, 0, 11, 3, "IMAGE"], [13, 10, 1, 11, 4, "MASK"],
         [14, 11, 0, 12, 1, "CONDITIONING"], [15, 11, 1, 12, 2, "CONDITIONING"], [16, 8, 0, 13, 1, "VAE"],
         [17, 11, 2, 12, 3, "LATENT"], [18, 12, 0, 13, 0, "LATENT"], [19, 13, 0, 14, 0, "IMAGE"],
         [20, 17, 0, 15, 0, "IMAGE"], [21, 15, 0, 16, 0, "IMAGE"]],
    )
    expected = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "tiny_flux_fill.safetensors",
                                                       "weight_dtype": "default"}},
        # through the bypassed LoRA loader (slot 0 model -> model)
        "3": {"class_type": "DifferentialDiffusion", "inputs": {"strength": 1, "model": ["1", 0]}},
        "4": {"class_type": "CLIPLoader", "inputs": {"clip_name": "clip_l_random.safetensors",
                                                       "type": "stable_diffusion", "device": "default"}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"text": "positive", "clip": ["4", 0]}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 0]}},
        "9": {"class_type": "LoadImage", "inputs": {"image": "ref.png"}},
        # positive: conditioning bypass -> bypassed FluxGuidance -> text 5; negative: slot 1 -> text 6;
        # latent (slot 2, LATENT): the conditioning node has no LATENT input, so latent_image is left out.
        "12": {"class_type": "KSampler", "inputs": {
            "seed": 5, "steps": 2, "cfg": 1, "sampler_name": "euler", "scheduler": "normal", "denoise": 1,
            "model": ["3", 0], "positive": ["5", 0], "negative": ["6", 0]}},
        # vae came from the muted VAELoader: left out
        "13": {"class_type": "VAEDecode", "inputs": {"samples": ["12", 0]}},
        # through the bypassed ImageInvert to the second decoder
        "16": {"class_type": "SaveImage", "inputs": {"filename_prefix": "out", "images": ["17", 0]}},
        "17": {"class_type": "VAEDecode", "inputs": {"samples": ["12", 0]}},
    }
    return doc, expected


def case_bypass_slot_rules():
    """The bypassed processor's outputs: MASK (slot 1) takes the first exact MASK input (edit_mask, slot 2);
    IMAGE (slot 0) takes slot 0 (reference_image) even though it is unlinked, so the target input is left out;
    SLICE_W (INT, slot 4) takes the first INT input, the widget socket 'height', unlinked: left out."""
    doc = ui(
        [
            node(1, "LoadImage", ["edit.png", "image"], outputs=[out("IMAGE", "IMAGE", [1]), out("MASK", "MASK", [2])]),
            node(2, "ACEPlusLoraProcessor", [True, 1024, 1024, "repainting", 3072], mode=4,
                 inputs=[inp("reference_image", "IMAGE", None), inp("edit_image", "IMAGE", 1),
                         inp("edit_mask", "MASK", 2)],
                 outputs=[out("IMAGE", "IMAGE", [3]), out("MASK", "MASK", [4]), out("OUT_H", "INT", []),
                          out("OUT_W", "INT", []), out("SLICE_W", "INT", [5])]),
            node(3, "PreviewImage", [], inputs=[inp("images", "IMAGE", 3)]),
            node(4, "MaskToImage", None, inputs=[inp("mask", "MASK", 4)], outputs=[out("IMAGE", "IMAGE", [6])]),
            node(5, "ImageCrop", [64, 64, 0, 0], inputs=[inp("image", "IMAGE", 6), inp("x", "INT", 5, widget=True)],
                 outputs=[out("IMAGE", "IMAGE", [7])]),
            node(6, "PreviewImage", [], inputs=[inp("images", "IMAGE", 7)]),
        ],
        [[1, 1, 0, 2, 1, "IMAGE"], [2, 1, 1, 2, 2, "MASK"], [3, 2, 0, 3, 0, "IMAGE"], [4, 2, 1, 4, 0, "MASK"],
         [5, 2, 4, 5, 3, "INT"], [6, 4, 0, 5, 0, "IMAGE"], [7, 5, 0, 6, 0, "IMAGE"]],
    )
    expected = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "edit.png"}},
        "3": {"class_type": "PreviewImage", "inputs": {}},
        "4": {"class_type": "MaskToImage", "inputs": {"mask": ["1", 1]}},
        # x keeps its widget value: the link resolved to nothing
        "5": {"class_type": "ImageCrop", "inputs": {"width": 64, "height": 64, "x": 0, "y": 0, "image": ["4", 0]}},
        "6": {"class_type": "PreviewImage", "inputs": {"images": ["5", 0]}},
    }
    return doc, expected


def case_subgraph():
    """A subgraph (frontend >= 1.24): inner nodes get ids '<instance>:<inner>', links cross its input/output."""
    sg_id = "0b7a2bd2-3c4e-4d4e-9d1c-6a8f4f0e5a11"
    doc = ui(
        [
            node(1, "CLIPLoader", ["clip_l_random.safetensors", "stable_diffusion", "default"],
                 outputs=[out("CLIP", "CLIP", [1])]),
            node(2, sg_id, [], inputs=[inp("clip", "CLIP", 1)], outputs=[out("CONDITIONING", "CONDITIONING", [2])],
                 properties={"proxyWidgets": [["4", "text"]]}),
            node(3, "ConditioningZeroOut", None, inputs=[inp("conditioning", "CONDITIONING", 2)],
                 outputs=[out("CONDITIONING", "CONDITIONING", [])]),
        ],
        [[1, 1, 0, 2, 0, "CLIP"], [2, 2, 0, 3, 0, "CONDITIONING"]],
    )
    doc["version"] = 0.4
    doc["definitions"] = {"subgraphs": [{
        "id": sg_id, "version": 1, "name": "Prompt", "revision": 0, "config": {},
        "state": {"lastGroupId": 0, "lastNodeId": 5, "lastLinkId": 6, "lastRerouteId": 0},
        "inputNode": {"id": -10, "bounding": [0, 0, 120, 60]},
        "outputNode": {"id": -20, "bounding": [600, 0, 120, 60]},
        "inputs": [{"id": "in-0", "name": "clip", "type": "CLIP", "linkIds": [3]}],
        "outputs": [{"id": "out-0", "name": "CONDITIONING", "type": "CONDITIONING", "linkIds": [5]}],
        "widgets": [],
        "nodes": [
            node(4, "CLIPTextEncode", ["a {dog} photo"], inputs=[inp("clip", "CLIP", 3)],
                 outputs=[out("CONDITIONING", "CONDITIONING", [4])]),
            node(5, "FluxGuidance", [42.5], inputs=[inp("conditioning", "CONDITIONING", 4)],
                 outputs=[out("CONDITIONING", "CONDITIONING", [5])]),
        ],
        "links": [
            {"id": 3, "origin_id": -10, "origin_slot": 0, "target_id": 4, "target_slot": 0, "type": "CLIP"},
            {"id": 4, "origin_id": 4, "origin_slot": 0, "target_id": 5, "target_slot": 0, "type": "CONDITIONING"},
            {"id": 5, "origin_id": 5, "origin_slot": 0, "target_id": -20, "target_slot": 0, "type": "CONDITIONING"},
        ],
        "groups": [], "extra": {},
    }]}
    expected = {
        "1": {"class_type": "CLIPLoader", "inputs": {"clip_name": "clip_l_random.safetensors",
                                                       "type": "stable_diffusion", "device": "default"}},
        "2:4": {"class_type": "CLIPTextEncode", "inputs": {"text": "a dog photo", "clip": ["1", 0]}},
        "2:5": {"class_type": "FluxGuidance", "inputs": {"guidance": 42.5, "conditioning": ["2:4", 0]}},
        "3": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["2:5", 0]}},
    }
    return doc, expected


def case_subgraph_promoted_widget():
    """Two instances of one subgraph whose input 'guidance' feeds FluxGuidance's widget inside: one instance gets
    it from a PrimitiveFloat node (a link), the other leaves it unconnected and sends its promoted widget value."""
    sg_id = "5d0c6f57-2b59-4f0e-8a39-3f0d8f6f2c22"

    def instance(id_, clip_link, guidance_link, out_link, value):
        return node(id_, sg_id, [value],
                    inputs=[inp("clip", "CLIP", clip_link), inp("guidance", "FLOAT", guidance_link, widget=True)],
                    outputs=[out("CONDITIONING", "CONDITIONING", [out_link])],
                    properties={"proxyWidgets": [["-1", "guidance"], ["2", "text"]]})

    doc = ui(
        [
            node(1, "CLIPLoader", ["clip_l_random.safetensors", "stable_diffusion", "default"],
                 outputs=[out("CLIP", "CLIP", [1, 2])]),
            node(3, "PrimitiveFloat", [7.5], outputs=[out("FLOAT", "FLOAT", [3])]),
            instance(6, 1, 3, 4, 0),
            instance(7, 2, None, 5, 12.25),
            node(8, "ConditioningZeroOut", None, inputs=[inp("conditioning", "CONDITIONING", 4)],
                 outputs=[out("CONDITIONING", "CONDITIONING", [])]),
            node(9, "ConditioningZeroOut", None, inputs=[inp("conditioning", "CONDITIONING", 5)],
                 outputs=[out("CONDITIONING", "CONDITIONING", [])]),
        ],
        [[1, 1, 0, 6, 0, "CLIP"], [2, 1, 0, 7, 0, "CLIP"], [3, 3, 0, 6, 1, "FLOAT"],
         [4, 6, 0, 8, 0, "CONDITIONING"], [5, 7, 0, 9, 0, "CONDITIONING"]],
    )
    doc["definitions"] = {"subgraphs": [{
        "id": sg_id, "version": 1, "name": "Guided prompt", "revision": 0, "config": {},
        "state": {"lastGroupId": 0, "lastNodeId": 4, "lastLinkId": 4, "lastRerouteId": 0},
        "inputNode": {"id": -10, "bounding": [0, 0, 120, 60]},
        "outputNode": {"id": -20, "bounding": [600, 0, 120, 60]},
        "inputs": [{"id": "in-0", "name": "clip", "type": "CLIP", "linkIds": [1]},
                   {"id": "in-1", "name": "guidance", "type": "FLOAT", "linkIds": [3]}],
        "outputs": [{"id": "out-0", "name": "CONDITIONING", "type": "CONDITIONING", "linkIds": [4]}],
        "widgets": [],
        "nodes": [
            node(2, "CLIPTextEncode", ["hello"], inputs=[inp("clip", "CLIP", 1), inp("text", "STRING", None, True)],
                 outputs=[out("CONDITIONING", "CONDITIONING", [2])]),
            node(4, "FluxGuidance", [3.5], inputs=[inp("conditioning", "CONDITIONING", 2),
                                                   inp("guidance", "FLOAT", 3, widget=True)],
                 outputs=[out("CONDITIONING", "CONDITIONING", [4])]),
        ],
        "links": [
            {"id": 1, "origin_id": -10, "origin_slot": 0, "target_id": 2, "target_slot": 0, "type": "CLIP"},
            {"id": 2, "origin_id": 2, "origin_slot": 0, "target_id": 4, "target_slot": 0, "type": "CONDITIONING"},
            {"id": 3, "origin_id": -10, "origin_slot": 1, "target_id": 4, "target_slot": 1, "type": "FLOAT"},
            {"id": 4, "origin_id": 4, "origin_slot": 0, "target_id": -20, "target_slot": 0, "type": "CONDITIONING"},
        ],
        "groups": [], "extra": {},
    }]}
    expected = {
        "1": {"class_type": "CLIPLoader", "inputs": {"clip_name": "clip_l_random.safetensors",
                                                       "type": "stable_diffusion", "device": "default"}},
        "3": {"class_type": "PrimitiveFloat", "inputs": {"value": 7.5}},
        "6:2": {"class_type": "CLIPTextEncode", "inputs": {"text": "hello", "clip": ["1", 0]}},
        "6:4": {"class_type": "FluxGuidance", "inputs": {"guidance": ["3", 0], "conditioning": ["6:2", 0]}},
        "7:2": {"class_type": "CLIPTextEncode", "inputs": {"text": "hello", "clip": ["1", 0]}},
        "7:4": {"class_type": "FluxGuidance", "inputs": {"guidance": 12.25, "conditioning": ["7:2", 0]}},
        "8": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["6:4", 0]}},
        "9": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["7:4", 0]}},
    }
    return doc, expected


def case_core_extension_widgets():
    """Widgets the frontend's core extensions add (uploadAudio.ts, load3d.ts, saveMesh.ts, previewAny.ts): the
    audio nodes' ``audioUI``, Preview3D/SaveGLB's ``image`` and PreviewAny's ``preview`` are sent as "" whatever
    was saved; LoadAudio's upload button is not sent. Seen so in ComfyUI's templates with frontend 1.32.9."""
    doc = ui(
        [
            node(1, "LoadAudio", ["voice.wav", "stale", None], outputs=[out("AUDIO", "AUDIO", [1])]),
            node(2, "SaveAudioMP3", ["audio/ComfyUI", "128k"], inputs=[inp("audio", "AUDIO", 1)]),
            node(3, "Preview3D", ["mesh/ComfyUI_00001_.glb", "stale"], outputs=[]),
            node(4, "SaveGLB", ["mesh/ace", "stale"], inputs=[inp("mesh", "MESH", None)]),
            node(5, "PrimitiveString", ["shown"], outputs=[out("STRING", "STRING", [2])]),
            node(6, "PreviewAny", [None], inputs=[inp("source", "*", 2)]),
        ],
        [[1, 1, 0, 2, 0, "AUDIO"], [2, 5, 0, 6, 0, "STRING"]],
    )
    expected = {
        "1": {"class_type": "LoadAudio", "inputs": {"audio": "voice.wav", "audioUI": ""}},
        "2": {"class_type": "SaveAudioMP3", "inputs": {"filename_prefix": "audio/ComfyUI", "quality": "128k",
                                                       "audioUI": "", "audio": ["1", 0]}},
        "3": {"class_type": "Preview3D", "inputs": {"model_file": "mesh/ComfyUI_00001_.glb", "image": ""}},
        "4": {"class_type": "SaveGLB", "inputs": {"filename_prefix": "mesh/ace", "image": ""}},
        "5": {"class_type": "PrimitiveString", "inputs": {"value": "shown"}},
        "6": {"class_type": "PreviewAny", "inputs": {"preview": "", "source": ["5", 0]}},
    }
    return doc, expected


def case_subgraph_sockets_by_name():
    """A subgraph instance saved with fewer sockets than its definition has inputs, in another order (newer
    frontends save only the non-widget ones, as ComfyUI's own 'subgraphed' templates do): its sockets are
    matched to the definition's inputs by name, and its widgets_values fill the promoted widgets, one per input
    that feeds a widget inside, in the definition's input order."""
    sg_id = "7e3d9c1a-44b2-4c55-9a0e-2f6b8d1c3e77"
    doc = ui(
        [
            node(1, "CLIPLoader", ["clip_l_random.safetensors", "stable_diffusion", "default"],
                 outputs=[out("CLIP", "CLIP", [1])]),
            node(2, sg_id, [9.5, "a cat"], inputs=[inp("clip", "CLIP", 1)],
                 outputs=[out("CONDITIONING", "CONDITIONING", [2])],
                 properties={"proxyWidgets": [["-1", "guidance"], ["-1", "text"]]}),
            node(3, "ConditioningZeroOut", None, inputs=[inp("conditioning", "CONDITIONING", 2)],
                 outputs=[out("CONDITIONING", "CONDITIONING", [])]),
        ],
        [[1, 1, 0, 2, 0, "CLIP"], [2, 2, 0, 3, 0, "CONDITIONING"]],
    )
    doc["definitions"] = {"subgraphs": [{
        "id": sg_id, "version": 1, "name": "Guided prompt", "revision": 0, "config": {},
        "state": {"lastGroupId": 0, "lastNodeId": 5, "lastLinkId": 5, "lastRerouteId": 0},
        "inputNode": {"id": -10, "bounding": [0, 0, 120, 60]},
        "outputNode": {"id": -20, "bounding": [600, 0, 120, 60]},
        "inputs": [{"id": "in-0", "name": "guidance", "type": "FLOAT", "linkIds": [3]},
                   {"id": "in-1", "name": "clip", "type": "CLIP", "linkIds": [1]},
                   {"id": "in-2", "name": "text", "type": "STRING", "linkIds": [5]}],
        "outputs": [{"id": "out-0", "name": "CONDITIONING", "type": "CONDITIONING", "linkIds": [4]}],
        "widgets": [],
        "nodes": [
            node(4, "CLIPTextEncode", ["hello"], inputs=[inp("clip", "CLIP", 1), inp("text", "STRING", 5, True)],
                 outputs=[out("CONDITIONING", "CONDITIONING", [2])]),
            node(5, "FluxGuidance", [3.5], inputs=[inp("conditioning", "CONDITIONING", 2),
                                                   inp("guidance", "FLOAT", 3, widget=True)],
                 outputs=[out("CONDITIONING", "CONDITIONING", [4])]),
        ],
        "links": [
            {"id": 1, "origin_id": -10, "origin_slot": 1, "target_id": 4, "target_slot": 0, "type": "CLIP"},
            {"id": 2, "origin_id": 4, "origin_slot": 0, "target_id": 5, "target_slot": 0, "type": "CONDITIONING"},
            {"id": 3, "origin_id": -10, "origin_slot": 0, "target_id": 5, "target_slot": 1, "type": "FLOAT"},
            {"id": 4, "origin_id": 5, "origin_slot": 0, "target_id": -20, "target_slot": 0, "type": "CONDITIONING"},
            {"id": 5, "origin_id": -10, "origin_slot": 2, "target_id": 4, "target_slot": 1, "type": "STRING"},
        ],
        "groups": [], "extra": {},
    }]}
    expected = {
        "1": {"class_type": "CLIPLoader", "inputs": {"clip_name": "clip_l_random.safetensors",
                                                       "type": "stable_diffusion", "device": "default"}},
        "2:4": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["1", 0]}},
        "2:5": {"class_type": "FluxGuidance", "inputs": {"guidance": 9.5, "conditioning": ["2:4", 0]}},
        "3": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["2:5", 0]}},
    }
    return doc, expected


CASES = {
    "widgets": case_widgets,
    "core_extension_widgets": case_core_extension_widgets,
    "subgraph_sockets_by_name": case_subgraph_sockets_by_name,
    "primitive_reroute": case_primitive_reroute,
    "bypass_mute": case_bypass_mute,
    "bypass_slot_rules": case_bypass_slot_rules,
    "subgraph": case_subgraph,
    "subgraph_promoted_widget": case_subgraph_promoted_widget,
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_hand_written_ui_converts_like_the_frontend(object_info, name):
    doc, expected = CASES[name]()
    before = copy.deepcopy(doc)
    assert wc.is_ui_workflow(doc) and not wc.is_api_workflow(doc)
    api = wc.ui_to_api(doc, object_info, meta=False)
    assert api == expected
    assert doc == before  # the input document is not modified
    assert wc.is_api_workflow(api)


def test_meta_titles_follow_the_frontend(object_info):
    doc, _ = case_primitive_reroute()
    doc["nodes"][0]["title"] = "My model"
    api = wc.ui_to_api(doc, object_info)
    assert api["1"]["_meta"] == {"title": "My model"}
    assert api["7"]["_meta"] == {"title": "KSampler"}
    assert api["5"]["_meta"] == {"title": object_info["CLIPTextEncode"]["display_name"]}


def test_widget_layout_names_the_frontend_only_slots(object_info):
    assert wc.widget_names(object_info["KSampler"]) == [
        "seed", "control_after_generate", "steps", "cfg", "sampler_name", "scheduler", "denoise"]
    assert wc.widget_names(object_info["LoadImage"]) == ["image", "upload"]
    assert wc.widget_names(object_info["ACEPlusLoraProcessor"]) == [
        "use_reference", "height", "width", "task_type", "max_seq_length"]
    assert wc.widget_names(object_info["ACEPlusFFTProcessor"]) == [
        "use_reference", "height", "width", "task_type", "keep_pixels_rate", "max_seq_length"]
    # an INT flagged control_after_generate (not named seed) gets the control widget too
    assert wc.widget_names(object_info["PrimitiveInt"]) == ["value", "control_after_generate"]


def test_dynamic_prompts_as_the_frontend_queues_them(object_info):
    doc = ui([node(1, "CLIPLoader", ["clip_l_random.safetensors", "stable_diffusion"],
                   outputs=[out("CLIP", "CLIP", [1])]),
              node(2, "CLIPTextEncode", ["{image} a {red|blue} car /* c */ // tail"], inputs=[inp("clip", "CLIP", 1)],
                   outputs=[out("CONDITIONING", "CONDITIONING", [])]),
              node(3, "ACEPlusTestOnlyProbe", ["{kept}"])],
             [[1, 1, 0, 2, 0, "CLIP"]])
    texts = {wc.ui_to_api(doc, object_info, dynamic_prompts=random.Random(s))["2"]["inputs"]["text"]
             for s in range(20)}
    assert texts == {"image a red car  ", "image a blue car  "}
    raw = wc.ui_to_api(doc, object_info, dynamic_prompts=False)
    assert raw["2"]["inputs"]["text"] == "{image} a {red|blue} car /* c */ // tail"
    # only STRING widgets flagged dynamicPrompts are processed
    assert wc.ui_to_api(doc, object_info)["3"]["inputs"]["label"] == "{kept}"
    assert wc.process_dynamic_prompt(r"a \{b\} {c|c}") == "a {b} c"


def test_list_values_are_wrapped(object_info):
    doc = ui([node(1, "ACEPlusTestOnlyProbe", [["a", "b"]])], [])
    assert wc.ui_to_api(doc, object_info, meta=False)["1"]["inputs"] == {"label": {"__value__": ["a", "b"]}}


def test_unknown_types_are_listed_and_can_be_dropped(object_info):
    doc = ui(
        [
            node(1, "LoadImage", ["edit.png", "image"], outputs=[out("IMAGE", "IMAGE", [1]), out("MASK", "MASK", [2])]),
            node(2, "MaskPreview+", [], inputs=[inp("mask", "MASK", 2)]),
            node(3, "SomeUpscaler", [2], inputs=[inp("image", "IMAGE", 1)], outputs=[out("IMAGE", "IMAGE", [3])]),
            node(4, "PreviewImage", [], inputs=[inp("images", "IMAGE", 3)]),
            node(5, "MaskPreview+", [], inputs=[inp("mask", "MASK", None)]),
            node(6, "AlsoMissing", [], mode=2),  # muted: does not need to exist
        ],
        [[1, 1, 0, 3, 0, "IMAGE"], [2, 1, 1, 2, 0, "MASK"], [3, 3, 0, 4, 0, "IMAGE"]],
    )
    with pytest.raises(wc.MissingNodeTypes) as err:
        wc.ui_to_api(doc, object_info)
    assert err.value.types == {"MaskPreview+": ["2", "5"], "SomeUpscaler": ["3"]}
    assert "MaskPreview+ (node 2, 5)" in str(err.value) and "--drop-node-type" in str(err.value)
    api = wc.ui_to_api(doc, object_info, drop_types={"MaskPreview+", "SomeUpscaler"}, meta=False)
    assert api == {"1": {"class_type": "LoadImage", "inputs": {"image": "edit.png"}},
                   "4": {"class_type": "PreviewImage", "inputs": {}}}
    # a bypassed unknown node is resolved from its saved sockets
    doc["nodes"][2]["mode"] = 4
    api = wc.ui_to_api(doc, object_info, drop_types={"MaskPreview+"}, meta=False)
    assert api["4"]["inputs"] == {"images": ["1", 0]}


def test_legacy_group_nodes_are_a_clear_error(object_info):
    doc = ui([node(1, "workflow>My group", [1, 2])], [])
    doc["extra"]["groupNodes"] = {"My group": {"nodes": [], "links": []}}
    with pytest.raises(wc.UnsupportedWorkflow, match="group node.*subgraph"):
        wc.ui_to_api(doc, object_info)


def test_api_documents_are_not_ui(object_info):
    _, api = case_widgets()
    assert wc.is_api_workflow(api) and not wc.is_ui_workflow(api)
    with pytest.raises(wc.ConversionError):
        wc.ui_to_api(api, object_info)


# --- the official ACE++ workflows ------------------------------------------------------------------------

needs_official = pytest.mark.skipif(not OFFICIAL_FILES, reason=f"official workflows not present in {OFFICIAL}")


@needs_official
@pytest.mark.parametrize("path", OFFICIAL_FILES, ids=lambda p: p.stem)
def test_official_workflow_converts(object_info, path):
    doc = json.loads(path.read_text())
    with pytest.raises(wc.MissingNodeTypes) as err:
        wc.ui_to_api(doc, object_info)
    assert set(err.value.types) == {"MaskPreview+"}
    api = wc.ui_to_api(doc, object_info, drop_types={"MaskPreview+"}, dynamic_prompts=False)
    raw_nodes = {str(n["id"]): n for n in doc["nodes"]}
    types = {v["class_type"] for v in api.values()}
    assert "MaskPreview+" not in types and "Note" not in types
    assert {"VAELoader", "DualCLIPLoader", "CLIPTextEncode", "FluxGuidance", "DifferentialDiffusion", "KSampler",
            "VAEDecode", "ImageCrop", "PreviewImage"} <= types
    lora = "LoRA" in path.stem
    proc_type = "ACEPlusLoraProcessor" if lora else "ACEPlusFFTProcessor"
    (proc_id,) = [k for k, v in api.items() if v["class_type"] == proc_type]
    proc = api[proc_id]["inputs"]
    saved = raw_nodes[proc_id]["widgets_values"]
    names = ["use_reference", "height", "width", "task_type"] + ([] if lora else ["keep_pixels_rate"]) + [
        "max_seq_length"]
    assert [proc[n] for n in names] == saved
    assert isinstance(proc["use_reference"], bool) and proc["task_type"] in (
        "repainting", "no_preprocess", "contour_repainting")
    assert proc["max_seq_length"] in (3072, 4096)
    # ImageCrop cuts the decoded canvas at the processor's outputs: width=OUT_W, height=OUT_H, x=SLICE_W, y widget
    (crop_id,) = [k for k, v in api.items() if v["class_type"] == "ImageCrop"]
    crop = api[crop_id]["inputs"]
    first = 2 if lora else 3  # the FFT processor has one more image output (UC, C) before OUT_H, OUT_W, SLICE_W
    assert crop["height"] == [proc_id, first] and crop["width"] == [proc_id, first + 1]
    assert crop["x"] == [proc_id, first + 2]
    assert crop["y"] == 0
    (ks,) = [v["inputs"] for v in api.values() if v["class_type"] == "KSampler"]
    assert ks["steps"] == 28 and ks["cfg"] == 1 and ks["sampler_name"] == "euler" and ks["scheduler"] == "normal"
    assert "control_after_generate" not in ks and isinstance(ks["seed"], int)
    loader = [v for v in api.values() if v["class_type"] in ("UNETLoader", "ACEPlusLoader")]
    assert len(loader) == 1
    assert loader[0]["inputs"]["unet_name"] == ("flux1-fill-dev.safetensors" if lora else "ace_plus_fft.safetensors")
    if lora:
        (lora_node,) = [v["inputs"] for v in api.values() if v["class_type"] == "LoraLoaderModelOnly"]
        assert lora_node["lora_name"].startswith("comfyui_") and lora_node["strength_model"] == 1
    (dual,) = [v["inputs"] for v in api.values() if v["class_type"] == "DualCLIPLoader"]
    assert dual == {"clip_name1": "clip_l.safetensors", "clip_name2": "t5xxl_fp16.safetensors", "type": "flux",
                    "device": "default"}
    for v in api.values():  # every link points at a node that is sent
        for value in v["inputs"].values():
            if isinstance(value, list):
                assert value[0] in api
    if "redux" in path.stem:
        assert {"StyleModelLoader", "CLIPVisionLoader", "CLIPVisionEncode", "StyleModelApply"} <= types


@needs_official
def test_official_prompts_lose_their_braces_as_in_the_frontend(object_info):
    doc = json.loads((OFFICIAL / "ACE_Plus_FFT_workflow_no_preprocess.json").read_text())
    api = wc.ui_to_api(doc, object_info, drop_types={"MaskPreview+"})
    texts = [v["inputs"]["text"] for v in api.values() if v["class_type"] == "CLIPTextEncode"]
    assert any(t.startswith("image features a close-up") for t in texts)
