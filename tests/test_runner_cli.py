"""runner/run_workflow.py: graph edits, input planning, the websocket reader (no ComfyUI needed), and the README's
main-job command end to end in a subprocess (synthetic weights, the cached demo models)."""

from __future__ import annotations

import json
import re
import socket
import struct
import subprocess
import threading

import pytest
from conftest import REPO
from graphs import Graph

import run_workflow as rw


def _api_with_images() -> dict:
    g = Graph()
    ref = g.add("LoadImage", image="face.png")
    edit = g.add("LoadImage", image="clipspace/clipspace-mask-1.png [input]")
    mask = g.add("LoadImageMask", image="mask.png", channel="alpha")
    prev = g.add("MaskPreview+", mask=mask[0])
    g.add("PreviewImage", images=ref[0])
    g.add("PreviewImage", images=edit[0])
    prompt = g.prompt()
    prompt[edit.id]["_meta"] = {"title": "Edit Image"}
    assert prev.id == "4"
    return prompt


def test_load_workflow_detects_the_format(tmp_path):
    ui = {"nodes": [], "links": [], "version": 0.4}
    api = _api_with_images()
    for name, doc, fmt in (("ui.json", ui, "ui"), ("api.json", api, "api"),
                           ("body.json", {"prompt": api, "client_id": "x"}, "api")):
        (tmp_path / name).write_text(json.dumps(doc))
        loaded, got = rw.load_workflow(tmp_path / name)
        assert got == fmt and loaded == (api if fmt == "api" else ui)
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(rw.RunnerError, match="neither"):
        rw.load_workflow(tmp_path / "bad.json")


def test_drop_node_types_removes_nodes_and_their_links():
    prompt, notes = rw.drop_node_types(_api_with_images(), {"MaskPreview+"})
    assert "4" not in prompt and all(v["class_type"] != "MaskPreview+" for v in prompt.values())
    assert notes == ["4 MaskPreview+: dropped"]
    prompt, notes = rw.drop_node_types(_api_with_images(), {"LoadImageMask"})
    assert prompt["4"]["inputs"] == {}  # the link from the dropped node is gone
    assert any("link from a dropped node removed" in n for n in notes)


def test_bypass_redux_passes_the_conditioning_through():
    g = Graph()
    clip = g.add("CLIPLoader", clip_name="c", type="stable_diffusion")
    text = g.add("CLIPTextEncode", text="x", clip=clip[0])
    guidance = g.add("FluxGuidance", conditioning=text[0], guidance=50)
    vision = g.add("CLIPVisionLoader", clip_name="sigclip.safetensors")
    image = g.add("LoadImage", image="ref.png")
    encoded = g.add("CLIPVisionEncode", clip_vision=vision[0], image=image[0], crop="center")
    style = g.add("StyleModelLoader", style_model_name="redux.safetensors")
    applied = g.add("StyleModelApply", conditioning=guidance[0], style_model=style[0],
                    clip_vision_output=encoded[0], strength=1.0, strength_type="multiply")
    g.add("KSampler", positive=applied[0], negative=text[0], seed=1)
    prompt, notes = rw.bypass_redux(g.prompt())
    assert {v["class_type"] for v in prompt.values()} == {"CLIPLoader", "CLIPTextEncode", "FluxGuidance", "LoadImage",
                                                          "KSampler"}
    assert prompt["9"]["inputs"]["positive"] == [guidance.id, 0]
    assert len(notes) == 4


def test_synthetic_graph_model_sets():
    g = Graph()
    unet = g.add("UNETLoader", unet_name="flux1-fill-dev.safetensors", weight_dtype="fp8_e4m3fn")
    g.add("ACEPlusLoader", unet_name="ace_plus_fft.safetensors", weight_dtype="default")
    g.add("LoraLoaderModelOnly", model=unet[0], lora_name="comfyui_portrait_lora64.safetensors", strength_model=1)
    g.add("DualCLIPLoader", clip_name1="clip_l.safetensors", clip_name2="t5xxl_fp16.safetensors", type="flux")
    g.add("VAELoader", vae_name="ae.safetensors")
    g.add("ACEPlusLoraProcessor", max_seq_length=3072)
    g.add("ACEPlusCanvas", max_image_tokens=4096)
    demo, _ = rw.synthetic_graph(g.prompt())
    assert demo["1"]["inputs"]["unet_name"] == "demo_flux_fill.safetensors"
    assert demo["2"]["inputs"]["unet_name"] == "demo_ace_plus_fft.safetensors"
    assert demo["3"]["inputs"] == {"model": ["1", 0], "lora_name": "demo_fill_lora_peft.safetensors",
                                   "strength_model": 1}  # a LoRA made for the demo Fill model, the graph's strength
    assert demo["4"] == {"class_type": "CLIPLoader",
                         "inputs": {"clip_name": "clip_l_random.safetensors", "type": "stable_diffusion"}}
    assert demo["5"]["inputs"]["vae_name"] == "tiny_taef1.safetensors"
    assert demo["6"]["inputs"]["max_seq_length"] == rw.SYNTHETIC_SEQ_LENGTH == 1024  # the official minimum
    assert demo["7"]["inputs"]["max_image_tokens"] == rw.SYNTHETIC_TOKENS == 256
    tiny, _ = rw.synthetic_graph(g.prompt(), model_set="tiny", tokens=512, seq_length=2048)
    assert tiny["1"]["inputs"]["unet_name"] == "tiny_flux_fill.safetensors"
    assert tiny["3"]["inputs"] == {"model": ["1", 0], "lora_name": "tiny_fill_lora_peft.safetensors",
                                   "strength_model": 1}
    assert tiny["6"]["inputs"]["max_seq_length"] == 2048 and tiny["7"]["inputs"]["max_image_tokens"] == 512


def test_plan_runs_matches_images_by_name_id_and_title(tmp_path):
    wf = tmp_path / "wf.json"
    (tmp_path / "inputs" / "clipspace").mkdir(parents=True)
    for name in ("face.png", "mask.png", "clipspace/clipspace-mask-1.png"):
        (tmp_path / "inputs" / name).write_bytes(b"x")
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        (photos / f"p{i}.png").write_bytes(b"x")
        (photos / f"m{i}.png").write_bytes(b"x")
    prompt = _api_with_images()

    (run,) = rw.plan_runs(prompt, wf, [], [], need_local=True)
    assert run.images == {"1": tmp_path / "inputs/face.png", "2": tmp_path / "inputs/clipspace/clipspace-mask-1.png",
                          "3": tmp_path / "inputs/mask.png"}
    for key in ("face.png", "1"):
        (run,) = rw.plan_runs(prompt, wf, [f"{key}={photos / 'p0.png'}"], [], need_local=True)
        assert run.images["1"] == photos / "p0.png"
    (run,) = rw.plan_runs(prompt, wf, [f"Edit Image={photos / 'p1.png'}"], [], need_local=True)
    assert run.images["2"] == photos / "p1.png"

    runs = rw.plan_runs(prompt, wf, [], [f"Edit Image={photos}/p*.png", f"mask.png={photos}/m*.png"], need_local=True)
    assert [r.label for r in runs] == ["run_000_p0_m0", "run_001_p1_m1", "run_002_p2_m2"]
    assert [(r.images["2"].name, r.images["3"].name, r.images["1"].name) for r in runs] == [
        ("p0.png", "m0.png", "face.png"), ("p1.png", "m1.png", "face.png"), ("p2.png", "m2.png", "face.png")]

    with pytest.raises(rw.RunnerError, match="no LoadImage node"):
        rw.plan_runs(prompt, wf, [f"nope.png={photos / 'p0.png'}"], [], need_local=True)
    with pytest.raises(rw.RunnerError, match="no file matches"):
        rw.plan_runs(prompt, wf, [], [f"1={photos}/*.jpg"], need_local=True)
    with pytest.raises(rw.RunnerError, match="different numbers"):
        rw.plan_runs(prompt, wf, [], [f"1={photos}/p*.png", f"3={photos}/m0.png"], need_local=True)
    (tmp_path / "inputs" / "mask.png").unlink()
    with pytest.raises(rw.RunnerError, match=r"3 \(mask.png\)"):
        rw.plan_runs(prompt, wf, [], [], need_local=True)
    (run,) = rw.plan_runs(prompt, wf, [], [], need_local=False)  # a server may have it: sent as named
    assert "3" not in run.images


def _frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([n])
    elif n < 1 << 16:
        head += bytes([126]) + struct.pack(">H", n)
    else:
        head += bytes([127]) + struct.pack(">Q", n)
    return head + payload


def test_websocket_reader_against_a_raw_socket_server():
    """The stdlib websocket client: handshake, small/16-bit/64-bit lengths, fragments, binary skipped, ping
    answered, partial frames kept across timeouts, close."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    got = {}
    big = json.dumps({"type": "big", "data": "x" * 70000}).encode()
    step = threading.Event()

    def server():
        conn, _ = listener.accept()
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(4096)
            got["request"] = request.decode()
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
            conn.sendall(_frame(1, b'{"type": "status"}') + _frame(2, b"\x00\x01png") + _frame(9, b"hi"))
            conn.sendall(_frame(1, b'{"type": ', fin=False) + _frame(0, b'"frag"}'))
            conn.sendall(_frame(1, b"m" * 300))
            data = _frame(1, big)
            conn.sendall(data[:5])  # a partial frame, then a pause longer than the reader's timeout
            step.wait(5)
            conn.sendall(data[5:])
            pong = conn.recv(64)
            got["pong"] = pong
            conn.sendall(_frame(8, b""))

    thread = threading.Thread(target=server, daemon=True)
    thread.start()
    ws = rw._WebSocket(f"ws://127.0.0.1:{port}/ws?clientId=abc", timeout=5)
    assert json.loads(ws.recv(2)) == {"type": "status"}
    assert json.loads(ws.recv(2)) == {"type": "frag"}  # the binary preview was skipped, the ping answered
    assert ws.recv(2) == "m" * 300
    assert ws.recv(0.3) is None  # only part of the next frame so far
    step.set()
    assert json.loads(ws.recv(5))["type"] == "big"
    with pytest.raises(ConnectionError):
        ws.recv(5)
    ws.sock.close()
    thread.join(5)
    listener.close()
    assert got["request"].startswith("GET /ws?clientId=abc HTTP/1.1")
    assert "Sec-WebSocket-Key" in got["request"]
    assert got["pong"][0] == 0x8A and got["pong"][1] & 0x80  # a masked pong frame


def _readme_main_job() -> str:
    readme = (REPO / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", readme, re.S).group(1)
    (line,) = [ln for ln in block.splitlines() if "runner/run_workflow.py" in ln and not ln.startswith("#")]
    return line.strip()


def test_readme_main_job_writes_the_image(tmp_path):
    """The README's first command, verbatim but for ``--out`` (a temporary folder instead of the repo's output/):
    set-up (cached), then the example through the real executor on synthetic weights."""
    command = _readme_main_job()
    assert "--out" in command
    command = re.sub(r"--out\s+\S+", f"--out {tmp_path / 'out'}", command)
    proc = subprocess.run(["bash", "-c", command], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["mode"] == "synthetic weights" and report["runs"][0]["status"] == "ok"
    assert report["images"], report
    from PIL import Image

    for im in report["images"]:
        with Image.open(im["path"]) as img:
            assert img.size == (im["width"], im["height"]) and min(img.size) >= 64
    assert "step 1/" in proc.stdout and "[ace++] node " in proc.stdout  # per-node and per-step progress
    # The workflow's LoRA node runs a LoRA made for the synthetic Fill model at the workflow's strength (> 0), and
    # every one of its keys patched a weight (ComfyUI only logs keys that match nothing).
    lora = [n for n in report["notes"] if "LoRA applied at the workflow's strength" in n]
    assert len(lora) == 1 and float(lora[0].rsplit(" ", 1)[1]) > 0, report["notes"]
    graph = json.loads((tmp_path / "out" / "prompt_api.json").read_text())
    (node,) = [n["inputs"] for n in graph.values() if n["class_type"] == "LoraLoaderModelOnly"]
    assert node["lora_name"] == "demo_fill_lora_peft.safetensors" and node["strength_model"] > 0, node
    assert "lora key not loaded" not in proc.stdout + proc.stderr and "ERROR lora" not in proc.stdout + proc.stderr


class _FakeClient:
    def __init__(self, label: str) -> None:
        self.label = self.url = label

    def websocket(self):
        return None


def _fake_backend(labels, one):
    backend = object.__new__(rw.HttpBackend)
    backend.clients = [_FakeClient(label) for label in labels]
    backend._one = one
    return backend


def test_http_scheduler_spreads_runs_and_hands_back_those_of_a_dead_server(tmp_path):
    """Every server starts with one run, free servers take the next; a server that stops answering gives its run
    to another (at most twice per run) and takes no more."""
    import time

    done = []

    def one(client, ws, run, out, batch, timeout):
        if client.label == "dead":
            raise ConnectionRefusedError("refused")
        time.sleep(0.05)
        run.record.update(status="ok", server=client.label)
        done.append((client.label, run.index))

    runs = [rw.Run(i, f"run_{i}", {}) for i in range(5)]
    _fake_backend(["a", "dead", "b"], one).execute(runs, tmp_path, True, 10)
    assert sorted(i for _, i in done) == [0, 1, 2, 3, 4]
    assert {label for label, _ in done} == {"a", "b"}
    assert all(r.record["status"] == "ok" for r in runs) and runs[1].attempts == 1

    runs = [rw.Run(i, f"run_{i}", {}) for i in range(2)]
    _fake_backend(["dead"], one).execute(runs, tmp_path, True, 10)
    assert runs[0].record == {"status": "error", "error": "dead: refused"}
    assert runs[1].record == {"status": "error", "error": "no server left to run it"}
