"""Issue 8: bad input never breaks a user's ComfyUI, and nothing unsafe is loaded.

* The pack's source holds no eval/exec, pickle, torch.load, network module or file write (a token-level grep that
  ignores strings and comments, and an AST check of open() modes and load calls); the one write allowed is the
  example pictures' copy into input/ace_plus/ at start-up (nodes/example_inputs.py).
* Every model loading path reads the safetensors header before any tensor, and only through safe loaders.
* Bad model files of every kind give a message naming the input and the fix (gaps left by test_model_files.py and
  test_host_models.py).
* A graph with canvas + conditioning + sampler + stitch runs with sockets blocked.
* Widget values out of range are refused by ComfyUI's own validation, before the run (the pack defines
  validate_inputs only for the canny low <= high rule, and checks those two ranges there); values that arrive
  through links (and NaN, which ComfyUI's min/max check lets through) are refused by name at the run.
* The documented rules for images and masks (NaN refused, out-of-range clamped, alpha dropped, gray as RGB, soft and
  NaN masks binarized) and extreme sizes (1x1, 1x4000 strips, 8192x8192).
"""

from __future__ import annotations

import ast
import io
import json
import logging
import math
import re
import socket
import struct
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest
import torch
from graphs import Graph, clip_l_text, sampler

from ace_plus_core import model_files as mf
from ace_plus_core import validate
from ace_plus_core.canvas import build_canvas, official_processor
from canvas_helpers import build_canvas_around_mask
from ace_plus_core.stitch import stitch

REPO = Path(__file__).resolve().parent.parent


# ==================================================================== the source: nothing unsafe


def pack_sources() -> list[Path]:
    return [REPO / "__init__.py", *sorted((REPO / "nodes").rglob("*.py")), *sorted((REPO / "ace_plus_core").rglob("*.py"))]


#: Forbidden in code (strings and comments are not code): dynamic code, pickle, torch.load, network, processes.
FORBIDDEN = {
    "eval": r"\beval\s*\(",
    "exec": r"\bexec\s*\(",
    "compile": r"(?<![\w.])compile\s*\(",
    "__import__": r"\b__import__\b",
    "pickle": r"\b(c?pickle|marshal|shelve|dill|joblib)\b",
    "torch.load": r"\btorch\s*\.\s*load\s*\(",
    "network": r"\b(urllib\d?|requests|socket|http|httpx|aiohttp|ftplib|smtplib|websocket|websockets)\b",
    "processes": r"\b(subprocess|os\s*\.\s*(system|popen|exec\w*|spawn\w*))\b",
    "writes": r"\.\s*(write_text|write_bytes|save|mkdir|unlink|rmdir|rename|touch)\s*\(|"
              r"\b(os\s*\.\s*(remove|unlink|rename|replace|makedirs|mkdir)|shutil|save_file|save_torch_file)\b",
}
#: Hits that are allowed, with the reason: (file relative to the repo, rule) -> why.
ALLOWLIST: dict[tuple[str, str], str] = {
    ("nodes/example_inputs.py", "writes"): "the example pictures into ComfyUI's input/ace_plus/ only, created "
                                           "exclusively, never over a file (tests/test_example_inputs.py)",
}


def code_lines(source: str) -> dict[int, str]:
    """The code of every line with strings and comments blanked (a grep that cannot be fooled by a docstring)."""
    lines: dict[int, list[str]] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in (tokenize.STRING, tokenize.COMMENT) or tok.type >= tokenize.N_TOKENS:
            continue
        if tok.type in (getattr(tokenize, "FSTRING_START", -1), getattr(tokenize, "FSTRING_MIDDLE", -1),
                        getattr(tokenize, "FSTRING_END", -1)):
            continue
        lines.setdefault(tok.start[0], []).append(tok.string)
    return {n: " ".join(parts) for n, parts in lines.items()}


def _write_mode(call: ast.Call) -> str | None:
    mode = call.args[1] if len(call.args) > 1 else next((k.value for k in call.keywords if k.arg == "mode"), None)
    if mode is None:
        return None
    if not isinstance(mode, ast.Constant) or not isinstance(mode.value, str):
        return "<computed mode>"
    return mode.value if set(mode.value) & set("wax+") else None


def scan(source: str, name: str = "<source>") -> list[str]:
    """Every forbidden use in ``source``: ``file:line rule: code``."""
    hits = []
    for n, code in code_lines(source).items():
        for rule, pattern in FORBIDDEN.items():
            if re.search(pattern, code):
                hits.append(f"{name}:{n} {rule}: {code.strip()}")
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        if called == "open" and _write_mode(node):
            hits.append(f"{name}:{node.lineno} writes: open(..., {_write_mode(node)!r})")
        if called == "load_torch_file" and not any(
            k.arg == "safe_load" and isinstance(k.value, ast.Constant) and k.value.value is True for k in node.keywords
        ):
            hits.append(f"{name}:{node.lineno} unsafe load: load_torch_file without safe_load=True")
    return hits


def test_the_scan_finds_what_it_looks_for():
    """The scan is not vacuous: each forbidden use is found in code, none in strings or comments."""
    bad = """
import pickle, urllib.request, socket, subprocess
x = eval("1") ; exec("y=1") ; torch.load(p) ; requests.get(u) ; os.system("ls")
open(p, "w") ; open(p, mode="ab") ; Path(p).write_text("x") ; comfy.utils.load_torch_file(p)
save_file(sd, p) ; compile("1", "f", "eval") ; __import__("os")
"""
    rules = {h.split(" ", 2)[1].rstrip(":") for h in scan(bad)}
    assert rules >= {"eval", "exec", "compile", "__import__", "pickle", "torch.load", "network", "processes",
                     "writes", "unsafe"}, rules
    harmless = '''
"""Never eval() or pickle or torch.load(); no socket, no requests."""  # open(p, "w") in a comment
msg = "a pickle file (.ckpt); convert to .safetensors" ; check_not_pickle(p) ; open(p, "rb")
comfy.utils.load_torch_file(p, safe_load=True)
'''
    assert scan(harmless) == []


def test_pack_source_has_no_eval_pickle_network_or_writes():
    hits = []
    for path in pack_sources():
        rel = path.relative_to(REPO).as_posix()
        for hit in scan(path.read_text(), rel):
            rule = hit.split(" ", 2)[1].rstrip(":")
            if (rel, rule) not in ALLOWLIST:
                hits.append(hit)
    assert not hits, "unsafe code in the pack:\n" + "\n".join(hits)
    assert len(pack_sources()) >= 10  # the scan saw the pack


# ==================================================================== model files: every path header-checked


@pytest.fixture
def flux_models(comfy_host):
    """The pack's nodes/flux_models.py as ComfyUI's loader imported it (its own copy of ace_plus_core)."""
    return sys.modules[comfy_host.node_class_mappings["ACEPlusLoader"].__module__.rsplit(".", 1)[0] + ".flux_models"]


@pytest.fixture
def load_log(comfy_host, flux_models, monkeypatch):
    """Records header reads and tensor loads in order; torch.load and unsafe loads fail the test."""
    import comfy.utils

    log: list[tuple[str, str]] = []
    read_header = flux_models.mf.read_header
    load = comfy.utils.load_torch_file

    def recording_read_header(path, *a, **k):
        log.append(("header", Path(path).name))
        return read_header(path, *a, **k)

    def recording_load(path, safe_load=False, *a, **k):
        # ComfyUI's own load_diffusion_model (the FFT loader's last step) passes no safe_load: it reads .safetensors
        # through safetensors whatever the flag, and the header check before it admits nothing else.
        assert safe_load or str(path).lower().endswith(".safetensors"), f"{path} loaded without safe_load=True"
        assert ("header", Path(path).name) in log, f"{path} loaded before its header was checked"
        log.append(("tensors", Path(path).name))
        return load(path, safe_load, *a, **k)

    def no_torch_load(*a, **k):
        raise AssertionError("torch.load called: pickle loading")

    monkeypatch.setattr(flux_models.mf, "read_header", recording_read_header)
    monkeypatch.setattr(comfy.utils, "load_torch_file", recording_load)
    monkeypatch.setattr(torch, "load", no_torch_load)
    return log


def test_every_loading_path_reads_the_header_first(comfy_host, tiny_models, load_log):
    nodes = comfy_host.node_class_mappings
    model = nodes["ACEPlusLoader"].execute("tiny_ace_plus_fft.safetensors", "default").result[0]
    assert load_log[:2] == [("header", "tiny_ace_plus_fft.safetensors"), ("tensors", "tiny_ace_plus_fft.safetensors")]
    load_log.clear()
    nodes["ACEPlusLoraLoader"].execute(model, "tiny_fft_lora_peft.safetensors", 1.0)
    assert load_log == [("header", "tiny_fft_lora_peft.safetensors"), ("tensors", "tiny_fft_lora_peft.safetensors")]
    load_log.clear()
    nodes["ACEPlusLoraLoader"].execute(model, "tiny_fft_lora_peft.safetensors", 0.0)  # strength 0: header only
    assert load_log == [("header", "tiny_fft_lora_peft.safetensors")]


# ==================================================================== bad model files (gaps only)


def _raw(path: Path, header: object, data: bytes = b"") -> Path:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


@pytest.mark.parametrize(
    ("header", "data", "message"),
    [
        ([1, 2], b"", r"unet_name: m.safetensors has a header that is not a JSON object; the file is truncated"),
        (b"\xff\xfe{}", b"", r"header that is not JSON \(UnicodeDecodeError\)"),
        ({"w": {"shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4, r"malformed header entry for tensor 'w'"),
        ({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4,
         r"invalid offsets or shape for tensor 'w'"),
        ({"w": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}}, b"\0" * 8,
         r"invalid offsets or shape for tensor 'w'"),
        ({"__metadata__": [1], "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4,
         r"malformed __metadata__ entry"),
    ],
)
def test_malformed_headers_are_named(tmp_path, header, data, message):
    with pytest.raises(ValueError, match=message):
        mf.read_header(_raw(tmp_path / "m.safetensors", header, data), "unet_name")


def test_empty_and_unreadable_files(tmp_path):
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match=r"lora_name: empty.safetensors is 0 bytes, shorter than the 8-byte length"):
        mf.read_header(tmp_path / "empty.safetensors", "lora_name")
    (tmp_path / "dir.safetensors").mkdir()
    with pytest.raises(ValueError, match=r"lora_name: cannot read dir.safetensors"):
        mf.read_header(tmp_path / "dir.safetensors", "lora_name")


@pytest.mark.parametrize(("name", "message"), [
    ("model.onnx", r"unet_name: model.onnx is not a .safetensors file; this pack reads only safetensors files"),
    ("model", r"unet_name: model is not a .safetensors file"),
    ("model.safetensors.part", r"not a .safetensors file"),
    ("model.pth", r"unet_name: model.pth is a pickle file"),
])
def test_only_safetensors_names_are_read(name, message):
    with pytest.raises(ValueError, match=message):
        mf.check_safetensors_name(name, "unet_name")
    mf.check_safetensors_name("x.SAFETENSORS", "unet_name")
    mf.check_safetensors_name("x.sft", "unet_name")


@pytest.fixture(scope="module")
def bad_model_dir(comfy_host, tiny_models, tmp_path_factory):
    """Bad files beside the tiny models, registered for diffusion_models and loras (unregistered afterwards)."""
    import folder_paths
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("robust_models")
    fft = tiny_models["tiny_ace_plus_fft"].read_bytes()
    (d / "fft_renamed.onnx").write_bytes(fft)  # a real safetensors file under another extension
    (d / "model.gguf").write_bytes(b"GGUF" + b"\0" * 60)
    (d / "fft_as_lora.safetensors").write_bytes(fft)
    lora = tiny_models["tiny_fill_lora_peft"].read_bytes()
    (d / "lora_truncated.safetensors").write_bytes(lora[: len(lora) - 100])
    save_file({"diffusion_model.img_in.lora_A.weight": torch.full((4, 384), math.nan),
               "diffusion_model.img_in.lora_B.weight": torch.zeros(32, 4)}, str(d / "lora_nan.safetensors"))
    (d / "lora_pickle.pt").write_bytes(b"\x80\x04")
    for folder in ("diffusion_models", "loras"):
        comfy_host.add_model_dir(folder, d)
    yield d
    for folder in ("diffusion_models", "loras"):
        paths = folder_paths.folder_names_and_paths[folder][0]
        if str(d) in paths:
            paths.remove(str(d))
        folder_paths.filename_list_cache.pop(folder, None)


@pytest.mark.parametrize(("unet", "message"), [
    ("fft_renamed.onnx", r"unet_name: fft_renamed.onnx is not a .safetensors file; .*convert the file to "
                         r"\.safetensors"),
    ("model.gguf", r"unet_name: model.gguf is a GGUF file; load it with a GGUF loader"),
])
def test_fft_loader_refuses_other_formats(comfy_host, bad_model_dir, unet, message, load_log):
    with pytest.raises(ValueError, match=message):
        comfy_host.node_class_mappings["ACEPlusLoader"].execute(unet, "default")
    assert not [e for e in load_log if e[0] == "tensors"]


@pytest.mark.parametrize(("lora", "strength", "message"), [
    ("lora_truncated.safetensors", 1.0, r"lora_name: lora_truncated.safetensors is truncated: tensor"),
    ("lora_truncated.safetensors", 0.0, r"lora_name: lora_truncated.safetensors is truncated"),
    ("lora_nan.safetensors", 1.0, r"lora_name: lora_nan.safetensors is corrupt: 1 tensor\(s\) hold NaN or infinite "
                                  r"values .*download or copy the LoRA again"),
    ("fft_as_lora.safetensors", 1.0, r"lora_name: fft_as_lora.safetensors holds no LoRA weights \(none of its \d+ "
                                     r"tensors has a LoRA, LoHa, LoKr or diff key name; it looks like "
                                     r"fft_as_lora.safetensors: ACE\+\+ FFT \(img_in 448"),
    ("lora_pickle.pt", 0.0, r"lora_name: lora_pickle.pt is a pickle file"),
    ("tiny_fill_lora_peft.safetensors", math.nan, r"strength_model .* must be a finite number|strength_model must be"),
])
def test_lora_loader_names_bad_files_and_values(comfy_host, tiny_models, bad_model_dir, lora, strength, message):
    import comfy.sd

    model = comfy.sd.load_diffusion_model(str(tiny_models["tiny_flux_fill"]))
    with pytest.raises(ValueError, match=message):
        comfy_host.node_class_mappings["ACEPlusLoraLoader"].execute(model, lora, strength)
    assert not model.patches


def test_other_adapter_formats_are_not_refused_early(tiny_models, tmp_path, flux_models):
    """A full-weight diff (one of ComfyUI's non-LoRA adapter formats) passes the early "no LoRA weights" check."""
    import comfy.sd
    from safetensors.torch import save_file

    model = comfy.sd.load_diffusion_model(str(tiny_models["tiny_flux_fill"]))
    weight = model.model.state_dict()["diffusion_model.img_in.weight"]
    path = tmp_path / "diff_adapter.safetensors"
    save_file({"diffusion_model.img_in.diff": torch.full_like(weight, 0.01)}, str(path))
    patched = flux_models.apply_lora(model, str(path), 1.0, "lora_name")
    assert "diffusion_model.img_in.weight" in patched.patches and not model.patches


# ==================================================================== offline graph


def test_canvas_conditioning_sampler_stitch_run_with_sockets_blocked(comfy_host, tiny_models, no_network):
    """Every kind of node of the pack in one graph (loaders, canvas, conditioning, stitch, cut back, drop-ins),
    through the real executor, with every socket connection refused."""
    import numpy as np
    from PIL import Image
    from tools_images import noise_png, solid_png

    with pytest.raises(OSError, match="offline"):
        socket.create_connection(("example.com", 80))
    no_network.clear()
    hole = (40, 52, 30, 24)
    edit = noise_png(comfy_host.input_dir / "robust_photo.png", 160, 120, hole=hole, seed=5)
    ref = solid_png(comfy_host.input_dir / "robust_ref.png", 48, 64, (200, 40, 40))
    g = Graph()
    fill = g.add("UNETLoader", unet_name="tiny_flux_fill.safetensors", weight_dtype="default")
    lora = g.add("ACEPlusLoraLoader", model=fill[0], lora_name="tiny_fill_lora_peft.safetensors", strength_model=1.0)
    text = clip_l_text(g, "a red patch")
    vae = g.add("VAELoader", vae_name="tiny_taef1.safetensors")
    ref_img = g.add("LoadImage", image=ref)
    edit_img = g.add("LoadImage", image=edit)
    cv = g.add("ACEPlusCanvas", layout="lora", task="repainting", reference_mode="auto", max_image_tokens=256,
               keep_pixels_rate=0.8, width=512, height=512, crop_to_mask=True, min_crop_size=64,
               reference_image=ref_img[0], edit_image=edit_img[0], edit_mask=edit_img[1])
    cond = g.add("ACEPlusCanvasConditioning", model=lora[0], positive=text[0], negative=text[0], vae=vae[0],
                 uc_image=cv[1], c_image=cv[2], mask=cv[3], geometry=cv[4], noise_mask=True)
    samples = sampler(g, cond[0], cond[1], cond[2], cond[3], steps=1)
    decoded = g.add("VAEDecode", samples=samples[0], vae=vae[0])
    out = g.add("ACEPlusStitch", image=decoded[0], geometry=cv[4], original_image=edit_img[0], mask=edit_img[1],
                grow_mask_px=2, feather_px=4, color_match=True)
    g.add("ACEPlusTestOnlyProbe", label="robust_cut_back", image=g.add("ACEPlusCutBack", image=decoded[0],
                                                                       geometry=cv[4])[0])
    g.add("SaveImage", images=out[0], filename_prefix="robust_offline")
    # The FFT side: the pack's loader, the drop-in processor and conditioning.
    fft = g.add("ACEPlusLoader", unet_name="tiny_ace_plus_fft.safetensors", weight_dtype="default")
    proc = g.add("ACEPlusFFTProcessor", use_reference=True, height=512, width=512, task_type="repainting",
                 keep_pixels_rate=0.8, max_seq_length=1024, reference_image=ref_img[0], edit_image=edit_img[0],
                 edit_mask=edit_img[1])
    text_fft = g.add("ACEPlusTestOnlyT5StandIn", text="a red patch", context_dim=768, pooled_dim=768, tokens=8)
    cond_fft = g.add("ACEPlusConditioning", positive=text_fft[0], negative=text_fft[0], vae=vae[0], ucpixels=proc[0],
                     cpixels=proc[1], mask=proc[2], noise_mask=True)
    patched = g.add("ACEPlusModelPatch", model=fft[0])
    samples_fft = sampler(g, patched[0], cond_fft[0], cond_fft[1], cond_fft[2], steps=1)
    g.add("SaveImage", images=g.add("VAEDecode", samples=samples_fft[0], vae=vae[0])[0], filename_prefix="robust_fft")
    result = comfy_host.run(g.prompt())
    assert no_network == []
    paths = result.image_paths(comfy_host.output_dir)
    assert len(paths) == 2 and all(p.is_file() for p in paths)
    stitched = np.asarray(Image.open(next(p for p in paths if "robust_offline" in p.name)))
    src = np.asarray(Image.open(comfy_host.input_dir / edit))[..., :3]
    assert stitched.shape == src.shape
    t, lf, h, w = hole
    outside = np.ones(src.shape[:2], bool)
    outside[max(0, t - 6) : t + h + 6, max(0, lf - 6) : lf + w + 6] = False  # grow 2 + feather 4
    assert np.array_equal(stitched[outside], src[outside])


# ==================================================================== widgets refused before the run


def _canvas_graph(**widgets):
    g = Graph()
    base = dict(layout="lora", task="repainting", reference_mode="auto", max_image_tokens=1024, keep_pixels_rate=0.8,
                width=512, height=512)
    n = g.add("ACEPlusCanvas", **{**base, **widgets})
    g.add("ACEPlusTestOnlyProbe", label="unused", image=n[0])
    return g.prompt()


def _processor_graph(node_id, **widgets):
    g = Graph()
    base = dict(use_reference=True, height=512, width=512, task_type="repainting", max_seq_length=1024)
    if node_id == "ACEPlusFFTProcessor":
        base["keep_pixels_rate"] = 0.8
    n = g.add(node_id, **{**base, **widgets})
    g.add("ACEPlusTestOnlyProbe", label="unused", image=n[0])
    return g.prompt()


def _stitch_graph(**widgets):
    g = Graph()
    cv = g.add("ACEPlusCanvas", layout="lora", task="repainting", reference_mode="auto", max_image_tokens=1024,
               keep_pixels_rate=0.8, width=512, height=512)
    n = g.add("ACEPlusStitch", image=cv[0], geometry=cv[4], **{"grow_mask_px": 8, "feather_px": 16,
                                                             "color_match": False, **widgets})
    g.add("ACEPlusTestOnlyProbe", label="unused", image=n[0])
    return g.prompt()


def _lora_graph(strength):
    g = Graph()
    model = g.add("UNETLoader", unet_name="tiny_flux_fill.safetensors", weight_dtype="default")
    lora = g.add("ACEPlusLoraLoader", model=model[0], lora_name="tiny_fill_lora_peft.safetensors",
                 strength_model=strength)
    g.add("ModelSave", model=lora[0], filename_prefix="never_written")  # an output node (validated, not run)
    return g.prompt()


@pytest.mark.parametrize(("prompt", "needle"), [
    (lambda: _canvas_graph(max_image_tokens=10**9), "max_image_tokens"),
    (lambda: _canvas_graph(keep_pixels_rate=math.inf), "keep_pixels_rate"),
    (lambda: _canvas_graph(canny_low_threshold=300, canny_high_threshold=200), "canny_low_threshold .* must not"),
    (lambda: _canvas_graph(canny_high_threshold=5000), r"canny_high_threshold must be an integer in \[0, 2040\]"),
    (lambda: _canvas_graph(width=100000), "width"),
    (lambda: _canvas_graph(context_margin=math.inf), "context_margin"),
    (lambda: _canvas_graph(min_crop_size=0), "min_crop_size"),
    (lambda: _canvas_graph(mosaic_ratio=0), "mosaic_ratio"),
    (lambda: _processor_graph("ACEPlusLoraProcessor", max_seq_length=100000), "max_seq_length"),
    (lambda: _processor_graph("ACEPlusFFTProcessor", keep_pixels_rate=0.0), "keep_pixels_rate"),
    (lambda: _processor_graph("ACEPlusFFTProcessor", height=4), "height"),
    (lambda: _processor_graph("ACEPlusLoraProcessor", width=2000), "width"),
    (lambda: _stitch_graph(grow_mask_px=5000), "grow_mask_px"),
    (lambda: _stitch_graph(feather_px=-1), "feather_px"),
    (lambda: _lora_graph(-math.inf), "strength_model"),
    (lambda: _lora_graph(1e6), "strength_model"),
])
def test_bad_widgets_fail_validation_before_the_run(comfy_host, tiny_models, prompt, needle):
    from comfy_host import GraphError

    with pytest.raises(GraphError, match=needle) as e:
        comfy_host.validate(prompt())
    # ComfyUI's own range check, except for the two canny inputs that validate_inputs takes.
    kind = "custom_validation_failed" if "canny" in needle else "value_"
    assert kind in str(e.value.details), e.value.details


@pytest.mark.parametrize(("target", "name", "value", "needle"), [
    ("ACEPlusCanvas", "keep_pixels_rate", math.nan, r"keep_pixels_rate must be a finite number in \[0.01, 1\]"),
    ("ACEPlusCanvas", "max_image_tokens", 10**9, r"max_image_tokens must be an integer in \[64, 65536\]"),
    ("ACEPlusCanvas", "width", 16385, r"width must be an integer in \[16, 16384\]"),
    ("ACEPlusCanvas", "context_margin", 5.0, r"context_margin must be a number in \[0, 4\]"),
    ("ACEPlusCanvas", "canny_high_threshold", 5000, r"canny_high_threshold must be an integer in \[0, 2040\]"),
    ("ACEPlusStitch", "grow_mask_px", 5000, r"grow_mask_px must be an integer in \[0, 1024\]"),
    ("ACEPlusLoraProcessor", "width", 2000, r"width must be an integer in \[256, 1440\]"),
])
def test_bad_values_through_links_are_refused_by_name(comfy_host, tiny_models, target, name, value, needle):
    """ComfyUI does not range-check a value that arrives through a link: the node refuses it by name at the run."""
    from comfy_host import GraphError

    g = Graph()
    link = g.add("PrimitiveFloat" if isinstance(value, float) else "PrimitiveInt", value=value)[0]
    canvas = dict(layout="lora", task="repainting", reference_mode="auto", max_image_tokens=256, keep_pixels_rate=0.8,
                  width=256, height=256)
    if target == "ACEPlusCanvas":
        n = g.add(target, **{**canvas, name: link})
    elif target == "ACEPlusStitch":
        cv = g.add("ACEPlusCanvas", **canvas)
        n = g.add(target, image=cv[0], geometry=cv[4], **{"grow_mask_px": 8, "feather_px": 16, "color_match": False,
                                                          name: link})
    else:
        n = g.add(target, **{"use_reference": True, "height": 512, "width": 512, "task_type": "repainting",
                             "max_seq_length": 1024, name: link})
    g.add("ACEPlusTestOnlyProbe", label="unused", image=n[0])
    comfy_host.validate(g.prompt())  # a linked value passes validation ...
    with pytest.raises(GraphError, match=needle):  # ... and is refused when the node runs
        comfy_host.run(g.prompt())


def test_good_widgets_pass_validation(comfy_host, tiny_models):
    comfy_host.validate(_canvas_graph(max_image_tokens=65536, keep_pixels_rate=1.0, width=8192, height=16,
                                      context_margin=4.0, min_crop_size=8192, mosaic_ratio=1024))
    comfy_host.validate(_processor_graph("ACEPlusLoraProcessor", max_seq_length=5120, height=1440, width=256))
    comfy_host.validate(_stitch_graph(grow_mask_px=1024, feather_px=0))
    comfy_host.validate(_lora_graph(-100.0))


# ==================================================================== image and mask rules


def test_nan_and_inf_pixels_are_refused_by_name():
    edit = torch.rand(1, 32, 32, 3)
    edit[0, 3, 4, 1] = math.nan
    edit[0, 5, 6, 2] = math.inf
    with pytest.raises(ValueError, match=r"edit_image contains 1 NaN and 1 infinite pixel value\(s\)"):
        build_canvas("lora", "repainting", "resize_to_height", None, edit, None, 1024)
    with pytest.raises(ValueError, match=r"reference_image contains 1 NaN"):
        build_canvas("lora", "repainting", "resize_to_height", edit, torch.rand(1, 32, 32, 3), None, 1024)
    with pytest.raises(ValueError, match=r"original_image contains"):
        good = torch.rand(1, 32, 32, 3)
        r = build_canvas("lora", "repainting", "resize_to_height", None, good, None, 1024)
        stitch(r.image, r.geometry, edit, None)


def test_out_of_range_pixels_are_clamped_with_a_warning(caplog):
    edit = torch.rand(1, 32, 48, 3) * 3 - 1
    with caplog.at_level(logging.WARNING):
        r = build_canvas("fft", "no_preprocess", "keep_pixels_pad", None, edit, None, 1024)
    assert "edit_image has values outside [0, 1]" in caplog.text
    expected = build_canvas("fft", "no_preprocess", "keep_pixels_pad", None, edit.clamp(0, 1), None, 1024)
    for a, b in ((r.image, expected.image), (r.uc_image, expected.uc_image), (r.c_image, expected.c_image)):
        assert torch.equal(a, b)
    assert float(r.image.min()) >= 0 and float(r.image.max()) <= 1


def test_alpha_is_dropped_and_gray_is_rgb():
    rgb = torch.rand(2, 40, 24, 3)
    rgba = torch.cat([rgb, torch.rand(2, 40, 24, 1)], -1)
    mask = torch.zeros(2, 40, 24)
    mask[:, 10:20, 5:15] = 1
    base = build_canvas_around_mask("lora", "repainting", "resize_to_height", None, rgb, mask, 1024)
    alpha = build_canvas_around_mask("lora", "repainting", "resize_to_height", None, rgba, mask, 1024)
    assert torch.equal(base.image, alpha.image)
    gray = torch.rand(1, 40, 24, 1)
    a = build_canvas("lora", "no_preprocess", "resize_to_height", gray, gray, None, 1024)
    b = build_canvas("lora", "no_preprocess", "resize_to_height", gray.expand(-1, -1, -1, 3),
                     gray.expand(-1, -1, -1, 3), None, 1024)
    assert torch.equal(a.image, b.image) and a.image.shape[-1] == 3
    out = stitch(alpha.image, alpha.geometry, rgba, mask, 2, 2)  # 4 channels in, RGB out
    assert out.shape == (2, 40, 24, 3)
    out = stitch(alpha.image[:1, ..., :1], alpha.geometry[:1], gray, mask[:1], 2, 2)  # 1 channel in and out
    assert out.shape == (1, 40, 24, 3)


def test_soft_empty_full_and_nan_masks(caplog):
    edit = torch.rand(1, 32, 32, 3)
    soft = torch.zeros(1, 32, 32)
    soft[:, 8:16, 8:16] = 0.7
    soft[:, 8:16, 16:24] = 0.3  # below 0.5: not edited
    r = build_canvas("lora", "repainting", "resize_to_height", None, edit, soft, 1e9)
    assert int(r.mask.sum()) == 64 and set(r.mask.unique().tolist()) == {0.0, 1.0}
    for everything in (torch.zeros(1, 32, 32), torch.ones(1, 32, 32), torch.zeros(1, 64, 64), None):
        assert bool((build_canvas("lora", "repainting", "resize_to_height", None, edit, everything, 1e9).mask
                     == 1).all())
    nan = soft.clone()
    nan[:, 0, 0] = math.nan
    with caplog.at_level(logging.WARNING):
        r2 = build_canvas("lora", "repainting", "resize_to_height", None, edit, nan, 1e9)
    assert "edit_mask contains NaN values; they count as 0" in caplog.text
    assert torch.equal(r2.mask, r.mask) and bool(torch.isfinite(r2.image).all())


def test_conditioning_masks_stay_soft_without_nan(comfy_host, tiny_models):
    import comfy.sd
    import tiny_models as factory

    vae = comfy.sd.VAE(sd=factory.taesd_vae_state_dict(16, seed=0))
    cond = [[torch.zeros(1, 4, 768), {"pooled_output": torch.zeros(1, 768)}]]
    mask = torch.rand(1, 32, 32)
    mask[0, 0, 0] = math.nan
    mask[0, 0, 1] = 7.0
    node = comfy_host.node_class_mappings["ACEPlusLoraConditioning"]
    pos, _, latent = node.execute(cond, cond, vae, torch.rand(1, 32, 32, 3), mask, True).result
    m = pos[0][1]["concat_mask"]
    assert bool(torch.isfinite(m).all()) and float(m.min()) >= 0 and float(m.max()) <= 1
    assert float(m[0, 0, 0, 0]) == 0.0 and float(m[0, 0, 0, 1]) == 1.0 and 0 < float(m[0, 0, 5, 5]) < 1
    with pytest.raises(ValueError, match=r"mask is 64x32 but pixels is 32x32; their aspect ratios differ"):
        node.execute(cond, cond, vae, torch.rand(1, 32, 32, 3), torch.ones(1, 32, 64), True)


def test_every_node_validates_images_before_expensive_work(comfy_host, tiny_models, monkeypatch):
    """A NaN canvas is refused by name before the VAE encodes anything or the model is cloned."""
    import comfy.model_patcher
    import comfy.sd
    import tiny_models as factory

    vae = comfy.sd.VAE(sd=factory.taesd_vae_state_dict(16, seed=0))
    model = comfy.sd.load_diffusion_model(str(tiny_models["tiny_flux_fill"]))

    def forbidden(*a, **k):
        raise AssertionError("expensive work before the inputs were checked")

    monkeypatch.setattr(comfy.sd.VAE, "encode", forbidden)
    monkeypatch.setattr(comfy.model_patcher.ModelPatcher, "clone", forbidden)
    cond = [[torch.zeros(1, 4, 768), {"pooled_output": torch.zeros(1, 768)}]]
    bad = torch.rand(1, 32, 32, 3)
    bad[0, 1, 1, 1] = math.nan
    good = torch.rand(1, 32, 32, 3)
    mask = torch.ones(1, 32, 32)
    canvas = comfy_host.node_class_mappings["ACEPlusCanvas"].execute(
        "lora", "repainting", "auto", 1024, 0.8, 32, 32, edit_image=good, crop_to_mask=False).result
    geometry = canvas[4]
    nodes = comfy_host.node_class_mappings
    cases = [
        ("pixels", lambda: nodes["ACEPlusLoraConditioning"].execute(cond, cond, vae, bad, mask, True)),
        ("cpixels", lambda: nodes["ACEPlusConditioning"].execute(cond, cond, vae, good, bad, mask, True)),
        ("uc_image", lambda: nodes["ACEPlusCanvasConditioning"].execute(model, cond, cond, vae, bad, good, mask,
                                                                        geometry, True)),
        ("image", lambda: nodes["ACEPlusCutBack"].execute(bad, geometry)),
        ("image", lambda: nodes["ACEPlusStitch"].execute(bad, geometry, 0, 0, False, good, mask)),
    ]
    for name, call in cases:
        with pytest.raises(ValueError, match=rf"^{name} contains 1 NaN pixel value"):
            call()


# ==================================================================== extreme sizes


@pytest.mark.parametrize("hw", [(1, 1), (1, 4000), (4000, 1), (3, 700), (16384, 2)])
def test_tiny_and_strip_images(hw):
    edit = torch.rand(1, *hw, 3)
    mask = torch.zeros(1, *hw)
    mask[0, hw[0] // 2, hw[1] // 2] = 1
    r = build_canvas("lora", "repainting", "resize_to_height", torch.rand(1, 5, 3, 3), edit, mask, 1024)
    assert r.image.shape[1] % 16 == 0 and bool(torch.isfinite(r.image).all())
    out = stitch(r.image, r.geometry, edit, mask, 0, 0)
    assert out.shape == edit.shape and torch.equal(out[mask == 0], edit[mask == 0])
    c = build_canvas_around_mask("fft", "repainting", "keep_pixels_pad", None, edit, mask, 1024)
    out = stitch(c.image, c.geometry, edit, mask, 0, 0)
    assert out.shape == edit.shape and torch.equal(out[mask == 0], edit[mask == 0])
    # The official canvas floors sizes to 16 px: below that it says so, naming the input (it used to crash or
    # blame the budget).
    with pytest.raises(ValueError, match=r"edit_image \(\d+x\d+\) is too small for the official canvas"):
        official_processor("lora", None, edit, mask, max_seq_length=3072)


def test_generated_area_sizes_are_bounded():
    ref = torch.rand(1, 32, 32, 3)
    r = build_canvas("lora", "repainting", "resize_to_height", ref, None, None, 4096, None, 16384, 16384)
    assert r.geometry[0].tokens <= 4096  # a 16384 px blank area costs no memory: never materialised
    with pytest.raises(ValueError, match=r"height \(pixels\) must be an integer in \[1, 16384\]"):
        build_canvas("lora", "repainting", "resize_to_height", ref, None, None, 4096, None, 10**9, 16)


def test_the_largest_side_is_one_rule(comfy_host):
    """ACE++ Canvas's width/height widgets end where the core's check of a generated area's side ends."""
    spec = comfy_host.object_info()["ACEPlusCanvas"]["input"]["required"]
    top = spec["width"][1]["max"]
    assert spec["height"][1]["max"] == top
    ref = torch.rand(1, 32, 32, 3)
    assert build_canvas("lora", "repainting", "resize_to_height", ref, None, None, 4096, None, top, top).geometry
    for name, (h, w) in (("height", (top + 1, 16)), ("width", (16, top + 1))):
        with pytest.raises(ValueError, match=rf"{name} \(pixels\) must be an integer in \[1, {top}\]"):
            build_canvas("lora", "repainting", "resize_to_height", ref, None, None, 4096, None, h, w)


def test_huge_budget_does_not_blow_up_the_crop():
    """An absurd budget (possible through the API or a direct call) must not enlarge crops without bound."""
    edit = torch.rand(1, 2048, 2048, 3)
    mask = torch.zeros(1, 2048, 2048)
    mask[0, 100:1900, 100:1900] = 1
    r = build_canvas_around_mask("lora", "repainting", "resize_to_height", None, edit, mask, 1e12)
    assert r.geometry[0].tokens <= 65536 and r.image.numel() * 4 < 1 << 30


def test_8192_photo_with_4096_reference_round_trip():
    """The memory benchmark's case at full size: canvas around the mask and stitch back to 8192x8192."""
    edit = torch.rand(1, 8192, 8192, 3)
    mask = torch.zeros(1, 8192, 8192)
    mask[0, 2048:5120, 3072:5632] = 1
    ref = torch.rand(1, 4096, 4096, 3)
    r = build_canvas_around_mask("lora", "repainting", "resize_to_height", ref, edit, mask, 4096)
    assert r.geometry[0].tokens <= 4096
    out = stitch(r.image, r.geometry, edit, mask, 8, 16)
    assert out.shape == edit.shape
    assert torch.equal(out[0, :1024], edit[0, :1024])  # far from the mask: the photo itself
    del out
    assert validate.check_image(edit, "edit_image") is edit  # valid input: no copy


def test_memory_benchmark_runs(tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "bench" / "bench_memory.py"), "--size", "512", "--ref", "256",
                          "--tokens", "1024", "--fits", "around_mask", "--no-write"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "canvas around_mask" in out.stdout and "stitch around_mask" in out.stdout and "x the edit image" in out.stdout
