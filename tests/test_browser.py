"""Workflows in ComfyUI's real frontend: a real server with the pack, headless Debian chromium, two frontends.

Every test runs once per frontend: the one ComfyUI 0.3.75 pins (``comfyui-frontend-package`` in the host venv)
and the newest on PyPI (tools/test.sh installs it into ``$ACE_HOST_DIR/frontend-latest``; the server gets
``--front-end-root``); the test ids name the version. One server per frontend, one page for all workflows:

* our 16 UI-format examples: no missing node types (with ``ACE_UPDATE_SCREENSHOTS=1``, a screenshot each on the
  pinned frontend, copied to docs/screenshots/), ``app.graphToPrompt()`` equals the runner's
  conversion (runner/workflow_convert.py) and the prompt passes ComfyUI's own validation with the published model names;
* the nine official ACE++ workflows: they miss only the third-party ``MaskPreview+``; the frontend gets a copy
  without those nodes (and their links), the runner the original with ``drop_types={"MaskPreview+"}``; the
  prompts must be equal;
* ComfyUI's own workflow templates (the ``comfyui-workflow-templates`` packages ComfyUI pins) whose node types
  the server's ``/object_info`` all has (187 of 188 on 0.3.75), the 62 of them that together exercise every node
  type, mode, linked widget and subgraph count of those: the prompts must be equal. The model files they name exist
  as empty placeholders.

Before those, in the same page (tests/browser/pack_ui.mjs, read from the DOM), with the model files our examples
name still absent (their placeholders are written afterwards, then the frontend reloads its model lists):

* the template browser lists the pack's 16 example_workflows/ under the pack's own category, each card with its
  .jpg thumbnail; a card opens its workflow;
* an example opens the frontend's missing-models list (the pinned frontend: a dialog; the newest: the issues
  panel), which lists every model file of the workflow with its folder and download URL, as published (the
  examples that together name every published file);
* the node library's help page of ACE++ Canvas is web/docs/ACEPlusCanvas.md (the newest frontend's redesigned
  library has no help button: there the node's Info tab shows it), and web/docs/ACEPlusCanvas/zh.md with
  ``Comfy.Locale`` = "zh", where the node library lists the names of locales/zh/nodeDefs.json.

The converter follows the pinned frontend exactly. The newest one differs from it in two known ways, allowed
only for it (any other difference fails): it no longer sends the frontend-only ``audioUI`` / ``PreviewAny``
``preview`` widgets (``options.serialize = false``), and it renumbers subgraph nodes whose ids another subgraph
definition also uses (subgraphDeduplication.ts), so those prompts are compared up to node ids. Its missing-models
list copies a Hugging Face file's page URL (``/blob/``) where the workflow gives the download (``/resolve/``).
The pinned frontend (1.32.9) shows no custom-node translations: loading a locale's own messages replaces the ones
it merged from ``/i18n`` (its loadLocale calls setLocaleMessage), so there the translated names are an xfail (strict:
an older frontend that shows them fails). The first release that shows them, FIRST_TRANSLATED_FRONTEND (1.33.13,
which the README names), gets a server of its own for that check only (tests/test_browser_first_translated.py).

After those, on the pinned frontend's server (its input folder started empty; our published model names are links
to the synthetic files by then), the three templates that together hold every node type of the 16 are opened from
the template browser in a fresh page, each with its pictures and no failed request, then queued (the prompt made
small on its way, see TEMPLATE_RUN_REWRITE), and save their output image(s) (tests/browser/run_templates.mjs). One
server for both: a boot and a browser start fewer than a server of its own. (All 16 show their pictures in the
passes above, with no failed request: no 404 for a picture, the pack copies them to input/ace_plus/ at start-up.)

Needs /usr/bin/chromium-headless-shell or /usr/bin/chromium (Debian's packages) and tests/browser/node_modules
(``npm ci`` there); tools/test.sh installs them. Without them (or without the newest frontend) the test is skipped locally and fails under CI.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import TEST_NODES, model_cache_dir
from paths import OFFICIAL_WORKFLOWS
from test_examples import PUBLISHED, REDUX_STAND_INS, TINY_FILES, TINY_TOKENS

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
BROWSER_DIR = Path(__file__).resolve().parent / "browser"
# Debian's chromium-headless-shell where installed (tools/test.sh installs it beside chromium): the same Blink and
# V8 as Debian's chromium of that version, without the full browser's own compositing and UI processes (about 10 % less
# CPU for a pass on 2 cores); else Debian's chromium. CHROMIUM overrides both. The browser scripts get it in their
# environment (_run_script).
HEADLESS_SHELL = Path("/usr/bin/chromium-headless-shell")
CHROMIUM = Path(os.environ.get("CHROMIUM") or (HEADLESS_SHELL if HEADLESS_SHELL.exists() else "/usr/bin/chromium"))
OFFICIAL = OFFICIAL_WORKFLOWS
SCREENSHOTS = REPO / "docs" / "screenshots"
# The examples are drawn and shot (2000 x 1150, the canvas fitted to the graph) only to refresh docs/screenshots/: the
# frontend draws them, not the pack (it ships no JavaScript), and a test run without them is about 30 CPU-seconds
# shorter on 2 cores.
SHOOT = bool(os.environ.get("ACE_UPDATE_SCREENSHOTS"))
HOST_DIR = Path(os.environ.get("ACE_HOST_DIR") or Path.home() / ".cache" / "ace-plus-host")
LATEST_FRONTEND = HOST_DIR / "frontend-latest"
# The first comfyui-frontend-package that shows custom-node translations: ComfyUI_frontend PR #7214 ("preserve
# custom nodes i18n data when locales are lazily loaded": loadLocale merges them back after setLocaleMessage), in
# 1.33.13 and, on the next line, 1.34.7 (1.34.0-1.34.6 lack it), then every later release (read from the packages'
# loadLocale; 1.32.9, which ComfyUI 0.3.75 pins, drops them). The README names it; tools/test.sh installs it.
FIRST_TRANSLATED_FRONTEND = "1.33.13"
FIRST_TRANSLATED_DIR = HOST_DIR / f"frontend-{FIRST_TRANSLATED_FRONTEND}"
PUBLISHED_MODELS = {
    "diffusion_models": ["flux1-fill-dev.safetensors", "ace_plus_fft.safetensors"],
    "loras": ["comfyui_portrait_lora64.safetensors", "comfyui_subject_lora16.safetensors",
              "comfyui_local_lora16.safetensors"],
    "vae": ["ae.safetensors"],
    "text_encoders": ["clip_l.safetensors", "t5xxl_fp16.safetensors"],
    "style_models": ["flux1-redux-dev.safetensors"],
    "clip_vision": ["sigclip_vision_patch14_384.safetensors"],
}
# The workflow tabs in the sidebar, not in the top bar: every workflow loaded opens a tab, and the top bar's tab
# strip measures its layout again each time (about 8 of the renderer's 52 CPU-seconds over the pinned pass's 212
# loads).
FRONTEND_SETTINGS = {
    "Comfy.TutorialCompleted": True,
    "Comfy.Workflow.ShowMissingNodesWarning": False,
    "Comfy.Workflow.ShowMissingModelsWarning": False,
    "Comfy.Minimap.Visible": False,
    "Comfy.Workflow.WorkflowTabsPosition": "Sidebar",
}
THIRD_PARTY = "MaskPreview+"
# Widgets the pinned frontend sends (as "") and the newer ones no longer do: (node type, input).
UNSENT_BY_NEWER_FRONTENDS = {
    *((t, "audioUI") for t in ("LoadAudio", "SaveAudio", "PreviewAudio", "SaveAudioMP3", "SaveAudioOpus")),
    ("PreviewAny", "preview"),
}
# Node types only the frontend defines (never in /object_info): notes, reroutes, primitives.
FRONTEND_ONLY_TYPES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
SAFE_NAME = re.compile(r"^[\w.\- ]+$")
TEMPLATES = REPO / "example_workflows"
PACK = "ace_plus"  # the pack's folder name in the server's custom_nodes/ (its template category)
HELP_NODE = "ACEPlusCanvas"
LOCALE = "zh"


def _frontends() -> list:
    """(static root or None for the pinned one, version) per frontend, the version in the test id."""
    try:
        pinned = importlib.metadata.version("comfyui-frontend-package")
    except importlib.metadata.PackageNotFoundError:
        pinned = "pinned"
    params = [pytest.param((None, pinned), id=f"frontend-{pinned}")]
    dists = list(importlib.metadata.distributions(path=[str(LATEST_FRONTEND)]))
    latest = next((d.version for d in dists if d.metadata["Name"] == "comfyui_frontend_package"), None)
    if latest is None:
        params.append(pytest.param((LATEST_FRONTEND, None), id="frontend-latest-not-installed"))
    elif latest != pinned:
        params.append(pytest.param((LATEST_FRONTEND / "comfyui_frontend_package" / "static", latest),
                                   id=f"frontend-{latest}"))
    return params


def _example_workflows() -> list[Path]:
    files = sorted(REPO.glob("workflow_example_*/*.json"))
    return [f for f in files if "nodes" in json.loads(f.read_text())]


def _official_workflows() -> list[Path]:
    return sorted(OFFICIAL.glob("*.json")) if OFFICIAL.is_dir() else []


def _templates() -> dict[str, tuple[Path, dict]]:
    """ComfyUI's workflow templates (id -> file, workflow), found through the package's own manifest API."""
    try:
        from comfyui_workflow_templates import get_asset_path, iter_templates
    except ImportError:
        return {}
    out = {}
    for entry in iter_templates():
        try:
            path = get_asset_path(entry.template_id, f"{entry.template_id}.json")
        except FileNotFoundError:
            continue
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        if isinstance(doc, dict) and isinstance(doc.get("nodes"), list):
            out[entry.template_id] = (Path(path), doc)
    return out


def _all_nodes(doc: dict) -> list[dict]:
    nodes = list(doc.get("nodes") or [])
    for sg in (doc.get("definitions") or {}).get("subgraphs") or []:
        nodes += sg.get("nodes") or []
    return nodes


def _node_types_supported(doc: dict, object_info: dict) -> bool:
    subgraph_ids = {sg.get("id") for sg in (doc.get("definitions") or {}).get("subgraphs") or []}
    types = {n.get("type") for n in _all_nodes(doc)} - subgraph_ids - FRONTEND_ONLY_TYPES
    return types <= object_info.keys()


def _template_models(templates: dict[str, tuple[Path, dict]]) -> set[tuple[str, str]]:
    """The model files the templates name (``properties.models``): (folder, file name)."""
    out = set()
    for _, doc in templates.values():
        for node in _all_nodes(doc):
            for model in (node.get("properties") or {}).get("models") or []:
                folder, name = model.get("directory"), model.get("name")
                if isinstance(folder, str) and isinstance(name, str) and SAFE_NAME.match(folder) and \
                        SAFE_NAME.match(name):
                    out.add((folder, name))
    return out


def _greedy_cover(features: dict) -> list:
    """Keys whose feature sets together hold every feature any key has: greedily the one adding most, ties to the
    first in the dict's order (deterministic)."""
    order = list(features)
    wanted, covered, chosen = set().union(*features.values()) if features else set(), set(), []
    while covered != wanted:
        best = max(order, key=lambda k: (len(features[k] - covered), -order.index(k)))
        chosen.append(best)
        covered |= features[best]
    return chosen


# The flags of an input's options that change how the frontend makes or sends its widget.
WIDGET_FLAGS = ("control_after_generate", "multiline", "forceInput", "dynamicPrompts", "image_upload", "remote",
                "multiselect")


def _input_kind(spec) -> tuple:
    """An input of /object_info as the frontend treats it: its type (COMBO for a list of options) and WIDGET_FLAGS."""
    kind = spec[0] if isinstance(spec, (list, tuple)) and spec else spec
    options = spec[1] if isinstance(spec, (list, tuple)) and len(spec) > 1 and isinstance(spec[1], dict) else {}
    return ("COMBO" if isinstance(kind, list) else str(kind), *(f for f in WIDGET_FLAGS if options.get(f)))


def _template_features(doc: dict, object_info: dict) -> set:
    """What a template exercises in a conversion: its node types (each has its own widget list), node modes, widgets
    fed by links, subgraphs. An API node (``api_node`` in /object_info: 105 cloud-service nodes, most in one template
    each, built alike from their definitions) counts by the kinds of its inputs (_input_kind) instead of its type."""
    out = set()
    for node in _all_nodes(doc):
        node_type, linked = node.get("type"), [i.get("name") for i in node.get("inputs") or []
                                               if i.get("widget") and i.get("link") is not None]
        out.add(("mode", node.get("mode", 0)))
        info = object_info.get(node_type) or {}
        if info.get("api_node"):
            inputs = {**(info.get("input") or {}).get("required", {}), **(info.get("input") or {}).get("optional", {})}
            out |= {("api_input", *_input_kind(spec)) for spec in inputs.values()}
            out |= {("api_widget_link", *_input_kind(inputs[name])) for name in linked if name in inputs}
        else:
            out.add(("type", node_type))
            out |= {("widget_link", node_type, name) for name in linked}
    subgraphs = (doc.get("definitions") or {}).get("subgraphs") or []
    out |= {("subgraphs", min(len(subgraphs), 2))}
    return out


def _without_type(doc: dict, node_type: str) -> dict:
    """The workflow as if the nodes of ``node_type`` had been deleted in the editor (schema 0.4, root graph)."""
    gone = {n["id"] for n in doc["nodes"] if n["type"] == node_type}
    dead = {link[0] for link in doc.get("links") or [] if link[1] in gone or link[3] in gone}
    out = json.loads(json.dumps(doc))
    out["nodes"] = [n for n in out["nodes"] if n["id"] not in gone]
    out["links"] = [link for link in out.get("links") or [] if link[0] not in dead]
    for node in out["nodes"]:
        for socket_ in node.get("inputs") or []:
            if socket_.get("link") in dead:
                socket_["link"] = None
        for socket_ in node.get("outputs") or []:
            if socket_.get("links"):
                socket_["links"] = [x for x in socket_["links"] if x not in dead]
    return out


def _require_browser(latest_missing: bool):
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    if not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir():
        missing.append("tests/browser/node_modules (npm ci in tests/browser)")
    if shutil.which("node") is None:
        missing.append("node")
    if latest_missing:
        missing.append(f"the newest comfyui-frontend-package in {LATEST_FRONTEND} (bash tools/setup_host.sh)")
    if missing:
        message = "browser test needs " + ", ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_script(script: str, *args, timeout: int = 600) -> subprocess.CompletedProcess:
    """One of tests/browser/'s scripts under node, driving CHROMIUM."""
    return subprocess.run(["node", str(BROWSER_DIR / script), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=BROWSER_DIR, env={**os.environ, "CHROMIUM": str(CHROMIUM)})


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def templates() -> dict[str, tuple[Path, dict]]:
    return _templates()


def _server_base(tmp_path_factory, name: str) -> Path:
    """A fresh ComfyUI base directory with the pack in custom_nodes and the browser test's frontend settings."""
    base = tmp_path_factory.mktemp(name)
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / "ace_plus").symlink_to(REPO, target_is_directory=True)
    settings = base / "user" / "default"
    settings.mkdir(parents=True)
    (settings / "comfy.settings.json").write_text(json.dumps(FRONTEND_SETTINGS))
    return base


@contextlib.contextmanager
def _running_server(comfy_dir: Path, base: Path, root: Path | None, *extra: str):
    """ComfyUI's main.py serving ``base`` (its own process, CPU; ``root``: another frontend; ``extra`` arguments);
    yields its URL."""
    port = _free_port()
    cmd = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
           "--disable-auto-launch", "--base-directory", str(base), *extra]
    if root is not None:
        cmd += ["--front-end-root", str(root)]
    server_log = open(base / "server.log", "w")  # noqa: SIM115 (closed in the finalizer)
    proc = subprocess.Popen(cmd, cwd=comfy_dir, stdout=server_log, stderr=subprocess.STDOUT)
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
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        server_log.close()


def _server_fixture(latest: bool):
    """The module's ``server`` fixture, on the pinned frontend or on the newest one: two files (this one and
    test_browser_latest.py) so that pytest-xdist runs the two frontends' passes on two workers."""
    return pytest.fixture(scope="module", params=_frontends()[1:] if latest else _frontends()[:1])(_server)


def _server(request, tmp_path_factory, comfy_host, tiny_models, templates):
    """A real ComfyUI server (its own process, CPU) with the pack in custom_nodes, the published model names and
    the templates' model names, serving one frontend. Yields url, base (dir), version, pinned, object_info."""
    root, version = request.param
    _require_browser(version is None)
    base = _server_base(tmp_path_factory, "browser_server")
    # The model file names, as empty placeholders: the frontend and validation only list names. Those our
    # examples name are written by the browser script once it has seen them missing ("placeholders").
    ours = {(folder, name) for folder, names in PUBLISHED_MODELS.items() for name in names}
    for folder, name in _template_models(templates) - ours:
        (base / "models" / folder).mkdir(parents=True, exist_ok=True)
        (base / "models" / folder / name).write_bytes(b"")
    links = {}
    if root is None:
        # The pinned frontend's server runs the pack's templates afterwards (template_runs): the tiny FLUX's
        # detection patch and the Redux stand-ins as custom nodes, and our published names written as links to the
        # synthetic files (t5xxl, never loaded, stays empty: see TEMPLATE_RUN_REWRITE).
        (base / "custom_nodes" / "ace_plus_test_tiny_detection.py").write_text(TINY_DETECTION_NODE)
        (base / "custom_nodes" / TEST_NODES.name).symlink_to(TEST_NODES, target_is_directory=True)
        cache = model_cache_dir()
        links = {name: str(next(cache.glob(f"*/{tiny}"))) for name, tiny in TEMPLATE_RUN_FILES.items()}
    with _running_server(comfy_host.comfy_dir, base, root) as url:
        yield {"url": url, "base": base, "version": version, "pinned": root is None,
               "object_info": _get_json(url + "object_info"),
               "placeholders": sorted([str(base / "models" / folder / name), links.get(name)] for folder, name in ours)}


server = _server_fixture(latest=False)


def _without_meta(prompt: dict) -> dict:
    return {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in prompt.items()}


@pytest.fixture(scope="module")
def browser_results(server, templates, tmp_path_factory):
    """Every workflow through the frontend in one page: {"examples"|"official"|"templates": {name: result}}."""
    url, object_info = server["url"], server["object_info"]
    out = tmp_path_factory.mktemp("browser_out")
    jobs_dir = out / "jobs"
    jobs_dir.mkdir()
    jobs, groups = [], {}
    for f in _example_workflows():
        # Screenshots (SHOOT) on the pinned frontend only: docs/screenshots/ come from it.
        jobs.append({"file": str(f), "name": f"{f.parent.name}__{f.stem}", "screenshot": server["pinned"] and SHOOT,
                     "pictures": True})
        groups[jobs[-1]["name"]] = ("examples", f.stem)
    for f in _official_workflows():
        copy_ = jobs_dir / f"official__{f.name}"
        copy_.write_text(json.dumps(_without_type(json.loads(f.read_text()), THIRD_PARTY)))
        jobs.append({"file": str(copy_), "name": copy_.stem, "screenshot": False})
        groups[copy_.stem] = ("official", f.name)
    for template_id in _templates_to_compare(templates, object_info):
        jobs.append({"file": str(templates[template_id][0]), "name": f"template__{template_id}", "screenshot": False})
        groups[jobs[-1]["name"]] = ("templates", template_id)
    (out / "jobs.json").write_text(json.dumps(jobs))
    (out / "pack.json").write_text(json.dumps(_pack_config(server, object_info)))
    result = _run_script("check_workflows.mjs", url, out, out / "jobs.json", out / "pack.json")
    assert result.returncode == 0, result.stderr[-3000:]
    raw = json.loads((out / "results.json").read_text())
    log.info("frontend %s: pack checks took %s ms", raw["frontendVersion"], raw["pack"]["ms"])
    object_info = _get_json(url + "object_info")  # now with the placeholders the script wrote
    by_group: dict[str, dict] = {"examples": {}, "official": {}, "templates": {}}
    for r in raw["results"]:
        group, key = groups[r["name"]]
        by_group[group][key] = r
    log.info("frontend %s: %d examples, %d official workflows, %d of %d templates loaded", raw["frontendVersion"],
             len(by_group["examples"]), len(by_group["official"]), len(by_group["templates"]), len(templates))
    if os.environ.get("ACE_UPDATE_SCREENSHOTS") and server["pinned"]:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        from PIL import Image

        for f in _example_workflows():
            with Image.open(out / f"{f.parent.name}__{f.stem}.png") as im:
                im.convert("RGB").save(SCREENSHOTS / f"{f.parent.name}__{f.stem}.jpg", quality=80)
    return {"version": raw["frontendVersion"], "out": out, "object_info": object_info, "pack": raw["pack"],
            **by_group}


def _templates_to_compare(templates: dict, object_info: dict) -> list[str]:
    """Of the core templates whose node types the server has, a subset that still exercises every node type (API
    nodes: every kind of input), node mode, linked widget and subgraph count of them all (_template_features): 62 of
    the 187 that ComfyUI 0.3.75's templates give, on either frontend. The converter works per node type and widget,
    so the other 125 repeat what these exercise; comparing them took about 20 more CPU-seconds of a 2-core run."""
    supported = {k: doc for k, (_, doc) in templates.items() if _node_types_supported(doc, object_info)}
    return _greedy_cover({k: _template_features(doc, object_info) for k, doc in supported.items()})


def _missing_models_examples() -> list[Path]:
    """The examples whose missing-models lists the browser reads: together they name every (folder, file, URL) of
    all 16 (test_examples.py checks each example's ``properties.models`` against the published table; the frontend
    lists them the same way for every workflow), 4 instead of 16."""
    return _greedy_cover({f: _published_models(json.loads(f.read_text())) for f in _example_workflows()})


def _template_names() -> list[str]:
    return sorted(p.stem for p in TEMPLATES.glob("*.json"))


def _zh_names() -> dict[str, str]:
    """node id -> display name in locales/zh/nodeDefs.json (empty while the file is not there)."""
    path = REPO / "locales" / LOCALE / "nodeDefs.json"
    if not path.is_file():
        return {}
    return {k: v["display_name"] for k, v in json.loads(path.read_text(encoding="utf-8")).items()
            if isinstance(v, dict) and "display_name" in v}


def _pack_config(server: dict, object_info: dict) -> dict:
    """What pack_ui.mjs checks: templates, missing models of every example, help page, locale."""
    names = _template_names()
    display = object_info[HELP_NODE]["display_name"]
    return {
        "templates": {"module": PACK, "names": names, "open": names[0] if names else None} if names else None,
        "missingModels": [{"file": str(f), "name": f"{f.parent.name}/{f.stem}"} for f in _missing_models_examples()],
        "help": {"nodeId": HELP_NODE, "names": [display, _zh_names().get(HELP_NODE, display)], "search": "ACE++"},
        "locale": {"locale": LOCALE, "search": "ACE++"},
        "placeholders": server["placeholders"],
    }


def test_the_frontend_is_the_one_asked_for(browser_results, server):
    assert browser_results["version"] == server["version"]


def test_example_workflows_have_no_missing_nodes(browser_results, server):
    examples = _example_workflows()
    if not examples:
        pytest.skip("no UI-format example workflows yet")
    for f in examples:
        r = browser_results["examples"][f.stem]
        assert r["missing"] == [] and "error" not in r, f"{f.name}: missing node types {r['missing']} {r.get('error')}"
        assert r["nodeCount"] > 0 and r["output"], f"{f.name}: the frontend produced no prompt"
        if server["pinned"] and SHOOT:
            assert (browser_results["out"] / f"{f.parent.name}__{f.stem}.png").stat().st_size > 10_000


def test_examples_show_every_picture(browser_results):
    """Each of the 16 (the template browser's copies are byte-equal, test_examples.py) shows its pictures once
    loaded: every image node's picture is under input/ace_plus/ (the pack copies them there at start-up; the server's
    input folder started empty) and loads, and no request fails (a missing picture is a 404 on /api/view)."""
    for f in _example_workflows():
        r = browser_results["examples"][f.stem]
        assert r["failedRequests"] == [], f"{f.parent.name}/{f.name}: {r['failedRequests']}"
        assert r["imageNodes"] and all(n["value"].startswith("ace_plus/") and n["width"] > 0 for n in r["imageNodes"]), \
            f"{f.parent.name}/{f.name}: {r['imageNodes']}"


def test_official_workflows_miss_only_the_third_party_preview(browser_results):
    if not OFFICIAL.is_dir():
        pytest.skip("official workflows not available")
    known = browser_results["object_info"].keys() | FRONTEND_ONLY_TYPES
    for f in _official_workflows():
        types = {n["type"] for n in json.loads(f.read_text())["nodes"]}
        assert types - known == {THIRD_PARTY}, f.name  # and the comparison below really drops something
        r = browser_results["official"][f.name]
        assert r["missing"] == [] and "error" not in r, f"{f.name}: {r['missing']} {r.get('error')}"


def test_frontend_prompt_equals_the_runner_conversion_and_validates(browser_results, comfy_host, server):
    workflow_convert = pytest.importorskip("workflow_convert")
    base = server["base"]
    for folder in PUBLISHED_MODELS:
        comfy_host.add_model_dir(folder, base / "models" / folder)
    object_info = comfy_host.object_info()
    for f in _example_workflows():
        for img in (f.parent / "inputs").glob("*"):
            if img.is_file() and img.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"):
                shutil.copy(img, comfy_host.input_dir / img.name)
        frontend = browser_results["examples"][f.stem]["output"]
        ours = workflow_convert.ui_to_api(json.loads(f.read_text()), object_info)
        assert _without_meta(ours) == _without_meta(frontend), f"{f.name}: {_difference(ours, frontend, True)}"
        comfy_host.validate(_without_meta(frontend))


def test_official_workflows_convert_like_the_frontend(browser_results, server):
    workflow_convert = pytest.importorskip("workflow_convert")
    if not OFFICIAL.is_dir():
        pytest.skip("official workflows not available")
    object_info = browser_results["object_info"]
    for f in _official_workflows():
        frontend = browser_results["official"][f.name]["output"]
        ours = workflow_convert.ui_to_api(json.loads(f.read_text()), object_info, drop_types={THIRD_PARTY})
        assert _without_meta(ours) == _without_meta(frontend), f"{f.name}: {_difference(ours, frontend, True)}"


def _signatures(prompt: dict) -> dict[str, str]:
    """A signature per node that ignores node ids: its class, its values and, per link, the origin's signature
    and output slot. The same sorted signatures = the same graph up to renumbering."""
    memo: dict[str, str] = {}

    def sig(key: str) -> str:
        if key not in memo:
            items = []
            for name, value in sorted(prompt[key]["inputs"].items()):
                if isinstance(value, list) and len(value) == 2 and value[0] in prompt:
                    items.append([name, "link", sig(value[0]), value[1]])
                else:
                    items.append([name, json.dumps(value, sort_keys=True)])
            memo[key] = hashlib.sha256(json.dumps([prompt[key]["class_type"], items]).encode()).hexdigest()
        return memo[key]

    return {k: sig(k) for k in prompt}


def _difference(ours: dict, frontend: dict, pinned: bool) -> str | None:
    """None when the runner's prompt is the frontend's (for a newer frontend: up to its known changes)."""
    ours, frontend = _without_meta(ours), _without_meta(frontend)
    if not pinned:
        for entry in ours.values():
            for name in [n for n in entry["inputs"] if (entry["class_type"], n) in UNSENT_BY_NEWER_FRONTENDS]:
                del entry["inputs"][name]
        a, b = _signatures(ours), _signatures(frontend)
        root = {k for k in ours if ":" not in k}
        if root == {k for k in frontend if ":" not in k} and all(a[k] == b[k] for k in root) and \
                sorted(a.values()) == sorted(b.values()):
            return None  # equal, or only nodes inside subgraphs renumbered
    for key in sorted(ours.keys() | frontend.keys()):
        a, b = ours.get(key), frontend.get(key)
        if a != b:
            return f"node {key}: ours {json.dumps(a)[:400]} / frontend {json.dumps(b)[:400]}"
    return None


def test_core_templates_convert_like_the_frontend(browser_results, templates, server):
    """The templates of _templates_to_compare (together every node type, mode, linked widget and subgraph count of
    the core templates the server can run) convert exactly as graphToPrompt does."""
    workflow_convert = pytest.importorskip("workflow_convert")
    if not templates:
        pytest.skip("comfyui-workflow-templates is not installed (ComfyUI's requirements.txt pins it)")
    object_info = browser_results["object_info"]
    compared = browser_results["templates"]
    supported = [k for k, (_, doc) in templates.items() if _node_types_supported(doc, object_info)]
    assert len(supported) >= 100, f"only {len(supported)} of {len(templates)} templates use core nodes only"
    assert sorted(compared) == sorted(_templates_to_compare(templates, object_info))
    failures = []
    for template_id, r in sorted(compared.items()):
        if "error" in r or r["missing"]:
            failures.append(f"{template_id}: the frontend failed: {r['missing']} {r.get('error', '')[:300]}")
            continue
        ours = workflow_convert.ui_to_api(templates[template_id][1], object_info)
        difference = _difference(ours, r["output"], server["pinned"])
        if difference:
            failures.append(f"{template_id}: {difference}")
    assert not failures, f"{len(failures)} of {len(compared)} templates differ:\n" + "\n".join(failures)


# --- what the frontend shows of the pack (tests/browser/pack_ui.mjs) ------------------------------------------------


def _pack_part(browser_results, name: str):
    part = browser_results["pack"].get(name)
    assert part is not None, f"the browser script did not check {name}"
    assert not (isinstance(part, dict) and "error" in part), f"{name}: {part['error'][:1500]}"
    return part


def _published_models(doc: dict) -> set[tuple[str, str, str]]:
    """(folder, file, download URL) of every model file a workflow's nodes name, from the published table."""
    names = {v for n in doc["nodes"] for v in n.get("widgets_values") or []
             if isinstance(v, str) and v.endswith(".safetensors")}
    return {(PUBLISHED[n][0], n, PUBLISHED[n][1]) for n in names}


def _listed_models(shown: dict, pinned: bool) -> set[tuple[str, str, str]]:
    """The missing-models list as (folder, file, URL); every row must offer its download."""
    assert shown["ui"], "no missing-models list was shown"
    assert all(r["download"] for r in shown["rows"]), f"a download is not offered: {shown['rows']}"
    out = set()
    for r in shown["rows"]:
        url = r["url"] or ""
        if not pinned:  # its "Copy URL" gives the file's page: the same path under /blob/
            url = url.replace("/blob/main/", "/resolve/main/", 1)
        out.add((r["folder"], r["name"], url))
    return out


def test_template_browser_lists_the_examples_with_thumbnails(browser_results, server):
    names = _template_names()
    assert len(names) == len(_example_workflows()) == 16, f"example_workflows/ holds {len(names)} workflows"
    t = _pack_part(browser_results, "templates")
    assert sorted(t["listed"].get(PACK, [])) == names, f"/api/workflow_templates: {t['listed']}"
    assert sorted(t["cards"]) == names, f"the pack's category in the template browser shows {t['cards']}"
    from PIL import Image

    for name in names:
        thumb = t["thumbnails"].get(name) or {}
        assert thumb.get("answer") == {"status": 200, "type": "image/jpeg"} and thumb["width"] > 0, \
            f"{name}: the card shows no thumbnail: {thumb}"
        with Image.open(TEMPLATES / f"{name}.jpg") as im:
            assert (thumb["width"], thumb["height"]) == im.size, f"{name}: thumbnail {thumb}"
    opened = t["opened"]
    doc = json.loads((TEMPLATES / f"{opened['name']}.json").read_text())
    assert t["jsonAnswer"]["status"] == 200 and opened["nodeCount"] == len(doc["nodes"]), opened
    assert _listed_models(opened, server["pinned"]) == _published_models(doc)


def test_missing_models_list_every_file_with_its_download(browser_results, server):
    shown = {r["file"]: r for r in _pack_part(browser_results, "missingModels")}
    examples = _missing_models_examples()
    assert set(shown) == {str(f) for f in examples}
    every = set().union(*(_published_models(json.loads(f.read_text())) for f in _example_workflows()))
    assert set().union(*(_listed_models(shown[str(f)], server["pinned"]) for f in examples)) == every
    for f in examples:
        expected = _published_models(json.loads(f.read_text()))
        assert expected, f"{f.name} names no model file"
        assert _listed_models(shown[str(f)], server["pinned"]) == expected, f"{f.parent.name}/{f.name}"


def _first_paragraph(markdown: Path) -> str:
    """The first line of running text of a help page, without Markdown marks."""
    for line in markdown.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith(("#", "-", "|", "!", "<")):
            return re.sub(r"[*`_]", "", line.strip())[:40]
    raise AssertionError(f"{markdown} has no paragraph")


def test_node_help_page_is_the_pack_docs(browser_results):
    page = REPO / "web" / "docs" / f"{HELP_NODE}.md"
    assert page.is_file(), f"{page} is missing"
    help_ = _pack_part(browser_results, "help")
    assert _first_paragraph(page) in help_["text"].replace("\n", " "), f"{help_['via']}: {help_['text'][:300]}"
    localized = page.parent / HELP_NODE / f"{LOCALE}.md"
    assert localized.is_file(), f"{localized} is missing"
    help_ = _pack_part(browser_results, "localeHelp")
    assert _first_paragraph(localized) in help_["text"].replace("\n", " "), f"{help_['via']}: {help_['text'][:300]}"


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def _missing_translations(listed, object_info) -> tuple[set[str], set[str]]:
    """(the zh names of the pack's nodes, those the node library did not list)."""
    zh = _zh_names()
    assert zh, "locales/zh/nodeDefs.json is missing or names no node"
    ours = {k for k, v in object_info.items() if v.get("python_module", "").startswith("custom_nodes.")} & zh.keys()
    expected = {zh[k] for k in ours}
    return expected, expected - set(listed)


def test_chinese_locale_shows_translated_node_names(browser_results, server):
    expected, missing = _missing_translations(_pack_part(browser_results, "localeNames"), browser_results["object_info"])
    if _version(server["version"]) < _version(FIRST_TRANSLATED_FRONTEND):
        # Strict: an older frontend that shows them means the README's version is wrong.
        assert missing == expected, f"frontend {server['version']} shows translations: update FIRST_TRANSLATED_FRONTEND"
        pytest.xfail(f"frontend {server['version']} drops custom-node translations when it loads a locale")
    assert not missing, f"the node library in {LOCALE} lacks {sorted(missing)}"


# --- templates opened from the template browser and run (tests/browser/run_templates.mjs) ---------------------------

# The queued prompt made small for the CPU on its way to the server (as test_examples.tiny_graph does): the published
# model names are the synthetic files (TEMPLATE_RUN_FILES), CLIP-L alone stands in for DualCLIPLoader (T5-XXL is
# 9.5 GB whatever a file holds), the Redux loaders are the TEST-ONLY stand-ins that build ComfyUI's SigLIP and
# FLUX.1-Redux classes at the tiny files' size (ComfyUI's own build them at full size whatever the file holds;
# test_examples.py explains), 1 sampler step, a TINY_TOKENS canvas.
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


def _queued_templates(node_types: dict[str, list[str]]) -> list[str]:
    """The templates opened from the template browser and queued: together they hold every node type of the 16 (3
    of them: the variations (local editing), a Redux and an FFT one), so that each node of the pack's templates runs
    on the live server from a prompt the frontend built. Every one of the 16 runs end to end in test_examples.py,
    from the runner's conversion, which test_frontend_prompt_equals_the_runner_conversion_and_validates proves equal
    to the frontend's prompt; each shows its pictures in the frontend (test_examples_show_every_picture: the same
    files, loaded as the template browser loads them) and the browser lists its card (pack_ui.mjs, which opens one
    more). Queuing all 16 took about 40 s more of a 2-core run, opening the other 13 from the browser about 30 s."""
    return _greedy_cover({name: set(types) for name, types in node_types.items()})


@pytest.fixture(scope="module")
def template_runs(server, browser_results, tmp_path_factory):
    """The templates of _queued_templates opened from the template browser of the pinned frontend and queued, on
    the pinned pass's server once that pass is done (browser_results): its input folder started empty (the pack
    copies the pictures at start-up) and the published model names are synthetic files by then. {template name:
    result} (tests/browser/run_templates.mjs)."""
    assert server["pinned"], "the templates run on the pinned frontend's server"
    base = server["base"]
    out = tmp_path_factory.mktemp("template_runs")
    node_types = {name: sorted(n["type"] for n in json.loads((TEMPLATES / f"{name}.json").read_text())["nodes"])
                  for name in _template_names()}
    queue = _queued_templates(node_types)
    config = {"module": PACK, "names": queue, "nodeTypes": node_types, "rewrite": TEMPLATE_RUN_REWRITE}
    (out / "config.json").write_text(json.dumps(config))
    result = _run_script("run_templates.mjs", server["url"], out, out / "config.json", timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = {r["name"]: r for r in json.loads((out / "template_runs.json").read_text())}
    for name, r in runs.items():  # a card that took more than one try (shown when the test fails)
        if r.get("retries"):
            log.warning("template %r opened after %d failed tries: %s", name, len(r["retries"]), r["retries"])
    return {"runs": runs, "base": base, "queue": queue, "server_log": (base / "server.log").read_text()}


def test_templates_open_from_the_browser_and_run(template_runs):
    """Each template of _queued_templates opens from the template browser: no 404 (the pictures are there, under
    input/ace_plus/), every image node shows its picture; queued, it gives its output image(s): four for the
    variations template (RepeatLatentBatch)."""
    from PIL import Image

    queue = template_runs["queue"]
    assert queue and set(queue) <= set(_template_names()), queue
    assert sorted(template_runs["runs"]) == sorted(queue)
    base = template_runs["base"]
    for name in queue:
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
