"""The example workflows and their thumbnails over HTTP, from a real server of each tested release whose template
route differs in source: 0.3.75 (the host tree) and 0.33.0 (its copy from shared/third_party).

Both releases' ``app/custom_node_manager.py`` list a pack's ``example_workflows/*.json`` at
``GET /workflow_templates`` (names without ``.json``) and serve that folder as static files under
``/api/workflow_templates/<pack folder>/``, where the frontend fetches ``<name>.json`` and the ``<name>.jpg``
thumbnail. One server per release (loopback, free port), always terminated.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.parse
import urllib.request

import pytest
from conftest import REPO, model_cache_dir
from test_runner_http import BOOT_TIMEOUT, _start, wait_until_up

PACK = "ace_plus"  # the folder name _start gives the pack in the server's custom_nodes/
EXAMPLES = REPO / "example_workflows"
RELEASES = {"0.3.75": "ComfyUI", "0.33.0": "ComfyUI-0.33.0"}  # release -> tree under the host folder


@pytest.fixture(scope="module", params=sorted(RELEASES))
def server(request, tmp_path_factory):
    import comfy_host

    tree = comfy_host.default_host_dir() / RELEASES[request.param]
    if not (tree / "main.py").is_file():
        pytest.skip(f"no ComfyUI {request.param} tree at {tree} (tools/setup_host.sh puts it there)")
    started = _start(tree, sys.executable, tmp_path_factory.mktemp(f"templates-{request.param}"), model_cache_dir())
    try:
        wait_until_up(started, time.monotonic() + BOOT_TIMEOUT)
        version = json.loads(_fetch(f"{started.url}/system_stats"))["system"]["comfyui_version"]
        assert version == request.param
        yield started
    finally:
        started.stop()


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as resp:
        assert resp.status == 200
        return resp.read()


def test_every_template_and_thumbnail_is_served(server):
    names = sorted(p.stem for p in EXAMPLES.glob("*.json"))
    assert names and all((EXAMPLES / f"{n}.jpg").is_file() for n in names)  # every template has its thumbnail
    listed = json.loads(_fetch(f"{server.url}/workflow_templates"))
    assert sorted(listed[PACK]) == names
    for name in names:
        for suffix in (".json", ".jpg"):
            url = f"{server.url}/api/workflow_templates/{PACK}/{urllib.parse.quote(name + suffix)}"
            assert _fetch(url) == (EXAMPLES / f"{name}{suffix}").read_bytes(), url
