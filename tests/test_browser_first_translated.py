"""The browser test, part 3: the first frontend release that shows the pack's Chinese node names (the README names
it), on a server of its own. The helpers are tests/test_browser.py's."""

from __future__ import annotations

import json
import os

import pytest
from test_browser import (
    FIRST_TRANSLATED_DIR,
    FIRST_TRANSLATED_FRONTEND,
    LOCALE,
    REPO,
    _get_json,
    _missing_translations,
    _pack_part,
    _require_browser,
    _run_script,
    _running_server,
    _server_base,
)


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
    # No API (cloud) nodes: the check reads the pack's names only (a lighter boot and node library).
    with _running_server(comfy_host.comfy_dir, base, static, "--disable-api-nodes") as url:
        object_info = _get_json(url + "object_info")
        result = _run_script("check_workflows.mjs", url, out, out / "jobs.json", out / "pack.json")
    assert result.returncode == 0, result.stderr[-3000:]
    raw = json.loads((out / "results.json").read_text())
    return {"version": raw["frontendVersion"], "pack": raw["pack"], "object_info": object_info}


def test_the_first_translated_frontend_shows_the_chinese_names_and_the_readme_names_it(first_translated):
    assert first_translated["version"] == FIRST_TRANSLATED_FRONTEND
    expected, missing = _missing_translations(_pack_part(first_translated, "localeNames"), first_translated["object_info"])
    assert expected and not missing, f"frontend {FIRST_TRANSLATED_FRONTEND}: the node library lacks {sorted(missing)}"
    readme = (REPO / "README.md").read_text()
    assert f"frontend {FIRST_TRANSLATED_FRONTEND} or newer" in readme
