"""The example workflows in ComfyUI's real frontend: a real server with the pack, headless Debian chromium.

For every UI-format example workflow (and the nine official ones): the frontend knows every node type (the
official ones miss only the third-party ``MaskPreview+``), its ``app.graphToPrompt()`` equals the runner's
conversion (tools/workflow_convert.py), and the prompt passes ComfyUI's own validation with the published model
file names present. A screenshot of each is saved (``ACE_UPDATE_SCREENSHOTS=1`` copies ours to docs/screenshots/).

Needs /usr/bin/chromium (Debian's package) and tests/browser/node_modules (``npm ci`` there); tools/test.sh
installs both. Without them the test is skipped locally and fails under CI.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from paths import OFFICIAL_WORKFLOWS

REPO = Path(__file__).resolve().parent.parent
BROWSER_DIR = Path(__file__).resolve().parent / "browser"
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
OFFICIAL = OFFICIAL_WORKFLOWS
SCREENSHOTS = REPO / "docs" / "screenshots"
PUBLISHED_MODELS = {
    "diffusion_models": ["flux1-fill-dev.safetensors", "ace_plus_fft.safetensors"],
    "loras": ["comfyui_portrait_lora64.safetensors", "comfyui_subject_lora16.safetensors",
              "comfyui_local_lora16.safetensors"],
    "vae": ["ae.safetensors"],
    "text_encoders": ["clip_l.safetensors", "t5xxl_fp16.safetensors"],
    "style_models": ["flux1-redux-dev.safetensors"],
    "clip_vision": ["sigclip_vision_patch14_384.safetensors"],
}
FRONTEND_SETTINGS = {
    "Comfy.TutorialCompleted": True,
    "Comfy.Workflow.ShowMissingNodesWarning": False,
    "Comfy.Workflow.ShowMissingModelsWarning": False,
    "Comfy.Minimap.Visible": False,
}


def _example_workflows() -> list[Path]:
    files = sorted(REPO.glob("workflow_example_*/*.json"))
    return [f for f in files if "nodes" in json.loads(f.read_text())]


def _require_browser():
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    if not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir():
        missing.append("tests/browser/node_modules (npm ci in tests/browser)")
    if shutil.which("node") is None:
        missing.append("node")
    if missing:
        message = "browser test needs " + ", ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, comfy_host, tiny_models):
    """A real ComfyUI server (its own process, CPU) with the pack in custom_nodes and the published model names."""
    _require_browser()
    base = tmp_path_factory.mktemp("browser_server")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / "ace_plus").symlink_to(REPO, target_is_directory=True)
    settings = base / "user" / "default"
    settings.mkdir(parents=True)
    (settings / "comfy.settings.json").write_text(json.dumps(FRONTEND_SETTINGS))
    # The published file names, as empty placeholders: the frontend and validation only list names.
    for folder, names in PUBLISHED_MODELS.items():
        (base / "models" / folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            (base / "models" / folder / name).write_bytes(b"")
    port = _free_port()
    log = open(base / "server.log", "w")  # noqa: SIM115 (closed in the finalizer)
    proc = subprocess.Popen(
        [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
         "--disable-auto-launch", "--base-directory", str(base)],
        cwd=comfy_host.comfy_dir, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(url + "object_info/ACEPlusCanvas", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("ComfyUI server did not start:\n" + (base / "server.log").read_text()[-3000:])
            time.sleep(0.5)
        yield url, base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _run_browser(url: str, out: Path, files: list[Path]) -> dict:
    result = subprocess.run(
        ["node", str(BROWSER_DIR / "check_workflows.mjs"), url, str(out), *map(str, files)],
        capture_output=True, text=True, timeout=600, cwd=BROWSER_DIR,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return {r["file"]: r for r in json.loads((out / "results.json").read_text())["results"]}


def _without_meta(prompt: dict) -> dict:
    return {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in prompt.items()}


@pytest.fixture(scope="module")
def browser_results(server, tmp_path_factory):
    url, _ = server
    files = _example_workflows() + (sorted(OFFICIAL.glob("*.json")) if OFFICIAL.is_dir() else [])
    if not files:
        pytest.skip("no UI-format workflows found (examples not generated, official ones not beside the repo)")
    out = tmp_path_factory.mktemp("browser_out")
    results = _run_browser(url, out, files)
    if os.environ.get("ACE_UPDATE_SCREENSHOTS"):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        from PIL import Image

        for f in _example_workflows():
            with Image.open(out / f"{f.stem}.png") as im:
                im.convert("RGB").save(SCREENSHOTS / f"{f.parent.name}__{f.stem}.jpg", quality=80)
    return results, out


def test_example_workflows_have_no_missing_nodes(browser_results):
    results, out = browser_results
    examples = _example_workflows()
    if not examples:
        pytest.skip("no UI-format example workflows yet")
    for f in examples:
        r = results[str(f)]
        assert r["missing"] == [], f"{f.name}: missing node types {r['missing']}"
        assert r["nodeCount"] > 0 and r["output"], f"{f.name}: the frontend produced no prompt"
        assert (out / f"{f.stem}.png").stat().st_size > 10_000


def test_official_workflows_miss_only_the_third_party_preview(browser_results):
    if not OFFICIAL.is_dir():
        pytest.skip("official workflows not available")
    results, _ = browser_results
    for f in sorted(OFFICIAL.glob("*.json")):
        assert set(results[str(f)]["missing"]) <= {"MaskPreview+"}, f.name


def test_frontend_prompt_equals_the_runner_conversion_and_validates(browser_results, comfy_host, server):
    workflow_convert = pytest.importorskip("workflow_convert")
    results, _ = browser_results
    _, base = server
    for folder in PUBLISHED_MODELS:
        comfy_host.add_model_dir(folder, base / "models" / folder)
    object_info = comfy_host.object_info()
    for f in _example_workflows():
        for img in (f.parent / "inputs").glob("*"):
            if img.is_file() and img.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"):
                shutil.copy(img, comfy_host.input_dir / img.name)
        frontend = _without_meta(results[str(f)]["output"])
        ours = _without_meta(workflow_convert.ui_to_api(json.loads(f.read_text()), object_info))
        assert ours == frontend, f"{f.name}: runner conversion differs from the frontend's graphToPrompt"
        comfy_host.validate(frontend)
