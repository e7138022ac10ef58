"""The browser test, part 2: every template opened from the template browser and queued, and the first frontend
release that shows the pack's Chinese node names. Apart from tests/test_browser.py so that pytest-xdist gives it a
worker of its own; the helpers are that file's."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import TEST_NODES, model_cache_dir
from test_browser import (
    BROWSER_DIR,
    FIRST_TRANSLATED_DIR,
    FIRST_TRANSLATED_FRONTEND,
    LOCALE,
    PACK,
    PUBLISHED_MODELS,
    REPO,
    TEMPLATES,
    _get_json,
    _missing_translations,
    _pack_part,
    _require_browser,
    _running_server,
    _server_base,
    _template_names,
    log,
)
from test_examples import REDUX_STAND_INS, TINY_FILES, TINY_TOKENS


@pytest.fixture(scope="module")
def first_translated(tmp_path_factory, comfy_host):
    """The node library in Chinese on the first frontend that shows custom-node translations (pack_ui.mjs, its
    locale part only, on a server of its own)."""
    static = FIRST_TRANSLATED_DIR / "comfyui_frontend_package" / "static"
    if not static.is_dir():
        message = f"browser test needs comfyui-frontend-package {FIRST_TRANSLATED_FRONTEND} in {FIRST_TRANSLATED_DIR}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message + " (bash tools/test.sh installs it)")
    _require_browser(False)
    base = _server_base(tmp_path_factory, "first_translated_server")
    # A Chinese user's saved setting: the page starts in Chinese (the frontend fetches the custom nodes'
    # translations as it starts; switched at run time alone, a fresh page keeps their English names).
    settings = base / "user" / "default" / "comfy.settings.json"
    settings.write_text(json.dumps({**json.loads(settings.read_text()), "Comfy.Locale": LOCALE}))
    out = tmp_path_factory.mktemp("first_translated_out")
    (out / "jobs.json").write_text("[]")
    (out / "pack.json").write_text(json.dumps({"locale": {"locale": LOCALE, "search": "ACE++"}}))
    with _running_server(comfy_host.comfy_dir, base, static) as url:
        object_info = _get_json(url + "object_info")
        result = subprocess.run(["node", str(BROWSER_DIR / "check_workflows.mjs"), url, str(out), str(out / "jobs.json"),
                                 str(out / "pack.json")], capture_output=True, text=True, timeout=600, cwd=BROWSER_DIR)
    assert result.returncode == 0, result.stderr[-3000:]
    raw = json.loads((out / "results.json").read_text())
    return {"version": raw["frontendVersion"], "pack": raw["pack"], "object_info": object_info}


def test_the_first_translated_frontend_shows_the_chinese_names_and_the_readme_names_it(first_translated):
    assert first_translated["version"] == FIRST_TRANSLATED_FRONTEND
    expected, missing = _missing_translations(_pack_part(first_translated, "localeNames"), first_translated["object_info"])
    assert expected and not missing, f"frontend {FIRST_TRANSLATED_FRONTEND}: the node library lacks {sorted(missing)}"
    readme = (REPO / "README.md").read_text()
    assert f"frontend {FIRST_TRANSLATED_FRONTEND} or newer" in readme


# --- every template opened from the template browser and run (tests/browser/run_templates.mjs) ----------------------

# The queued prompt made small for the CPU on its way to the server (as test_examples.tiny_graph does): the published
# model names are the synthetic files (TEMPLATE_RUN_FILES), CLIP-L alone stands in for DualCLIPLoader (T5-XXL is
# 9.5 GB whatever a file holds), the Redux loaders are the TEST-ONLY stand-ins that build ComfyUI's SigLIP and
# FLUX.1-Redux classes at the tiny files' size (ComfyUI's own build them at full size whatever the file holds;
# test_examples.py explains), 1 sampler step, a 256-token canvas.
TEMPLATE_RUN_REWRITE = {
    "nodes": {
        "DualCLIPLoader": {"class_type": "CLIPLoader",
                           "inputs": {"clip_name": "clip_l.safetensors", "type": "stable_diffusion"}},
        **{core: {"class_type": stand_in, "keep_inputs": True} for core, stand_in in REDUX_STAND_INS.items()},
        "KSampler": {"inputs": {"steps": 1}},
        "ACEPlusCanvas": {"inputs": {"max_image_tokens": TINY_TOKENS}},
    },
}
# The Redux nodes as they run (the loaders by their stand-ins): each must have run (or come from the cache).
REDUX_RUN = ("ACEPlusTestOnlyCLIPVisionLoader", "CLIPVisionEncode", "ACEPlusTestOnlyStyleModelLoader",
             "StyleModelApply")
TEMPLATE_RUN_FILES = {**TINY_FILES, "clip_l.safetensors": "clip_l_random.safetensors"}
# A test-only custom node file for the server: the detection patch the tiny FLUX needs (tests/conftest.py).
TINY_DETECTION_NODE = f"""import sys
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
import tiny_flux_detection
tiny_flux_detection.install()
NODE_CLASS_MAPPINGS = {{}}
"""


@pytest.fixture(scope="module")
def template_runs(tmp_path_factory, comfy_host, tiny_models):
    """Every template of example_workflows/ opened from the template browser of the pinned frontend and queued, on a
    server whose input folder starts empty (the pack copies the pictures at start-up) and whose published model
    names are synthetic files. {template name: result} (tests/browser/run_templates.mjs)."""
    _require_browser(False)
    base = _server_base(tmp_path_factory, "template_server")
    (base / "custom_nodes" / "ace_plus_test_tiny_detection.py").write_text(TINY_DETECTION_NODE)
    (base / "custom_nodes" / TEST_NODES.name).symlink_to(TEST_NODES, target_is_directory=True)  # the stand-ins
    cache = model_cache_dir()
    for folder, names in PUBLISHED_MODELS.items():
        (base / "models" / folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            tiny = TEMPLATE_RUN_FILES.get(name)
            if tiny is None:  # t5xxl: named by the templates, never loaded (see the rewrite)
                (base / "models" / folder / name).write_bytes(b"")
            else:
                (base / "models" / folder / name).symlink_to(next(cache.glob(f"*/{tiny}")))
    out = tmp_path_factory.mktemp("template_runs")
    names = _template_names()
    node_types = {name: sorted(n["type"] for n in json.loads((TEMPLATES / f"{name}.json").read_text())["nodes"])
                  for name in names}
    config = {"module": PACK, "names": names, "nodeTypes": node_types, "rewrite": TEMPLATE_RUN_REWRITE}
    (out / "config.json").write_text(json.dumps(config))
    with _running_server(comfy_host.comfy_dir, base, None) as url:
        result = subprocess.run(["node", str(BROWSER_DIR / "run_templates.mjs"), url, str(out), str(out / "config.json")],
                                capture_output=True, text=True, timeout=1800, cwd=BROWSER_DIR)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = {r["name"]: r for r in json.loads((out / "template_runs.json").read_text())}
    for name, r in runs.items():  # a card that took more than one try (shown when the test fails)
        if r.get("retries"):
            log.warning("template %r opened after %d failed tries: %s", name, len(r["retries"]), r["retries"])
    return {"runs": runs, "base": base, "server_log": (base / "server.log").read_text()}


def test_every_template_opens_from_the_browser_and_runs(template_runs):
    """No 404 (the pictures are there, under input/ace_plus/), every image node shows its picture, and the queued
    template gives its output image(s): four for the variations template (RepeatLatentBatch)."""
    from PIL import Image

    names = _template_names()
    assert sorted(template_runs["runs"]) == names
    base = template_runs["base"]
    for name in names:
        r = template_runs["runs"][name]
        assert "error" not in r, f"{name}: {r['error'][:1500]}"
        assert r["failedRequests"] == [], f"{name}: {r['failedRequests']}"
        doc = json.loads((TEMPLATES / f"{name}.json").read_text())
        assert r["nodeCount"] == len(doc["nodes"]), name
        assert r["imageNodes"] and all(n["value"].startswith("ace_plus/") and n["width"] > 0 for n in r["imageNodes"]), \
            f"{name}: {r['imageNodes']}"
        assert r["status"]["status_str"] == "success", f"{name}: {r['status']}\n{template_runs['server_log'][-3000:]}"
        saved = [img for o in r["outputs"].values() for img in o.get("images", []) if img.get("type") == "output"]
        repeat = [n["widgets_values"][0] for n in doc["nodes"] if n["type"] == "RepeatLatentBatch"]
        assert len(saved) == (repeat[0] if repeat else 1), f"{name}: {saved}"
        for img in saved:
            with Image.open(base / "output" / img["subfolder"] / img["filename"]) as im:
                assert im.width > 0 and im.height > 0
        # The Redux templates ran their Redux branch: its nodes were queued, and each ran (or came from the cache).
        uses_redux = "StyleModelApply" in {n["type"] for n in doc["nodes"]}
        queued = set(r["queued"].values())
        assert (set(REDUX_RUN) <= queued) == uses_redux, f"{name}: queued {sorted(queued)}"
        ran = {r["queued"][i] for i in r["executed"] + r["cached"]}
        assert ran == queued, f"{name}: {sorted(queued - ran)} did not run"
        if uses_redux:
            assert "StyleModelApply" in {r["queued"][i] for i in r["executed"]}, f"{name}: {r['executed']}"
