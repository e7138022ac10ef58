"""Node help pages (web/docs) and Chinese translations (locales/zh), checked against the live schema of the booted
ComfyUI and through ComfyUI's own code that registers, merges and serves them.

The frontend fetches ``/extensions/<pack>/docs/<NodeId>/<locale>.md``, falling back to ``.../docs/<NodeId>.md``,
where ``<pack>`` is the second part of the node's ``python_module``; it reads translations from ``GET /i18n``.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "web" / "docs"
ZH = REPO / "locales" / "zh"
CJK = re.compile(r"[\u4e00-\u9fff]")
HELP_PAGES = {"en": "{node}.md", "zh": "{node}/zh.md"}


def has_cjk(value) -> bool:
    return isinstance(value, str) and bool(CJK.search(value))


@pytest.fixture(scope="module")
def schema(comfy_host) -> dict[str, dict]:
    """The live definitions (as GET /object_info gives them) of every node this pack registered."""
    ids = comfy_host.pack_node_ids()
    declared = {m for p in (REPO / "nodes").glob("*.py") for m in re.findall(r'node_id="(\w+)"', p.read_text())}
    assert ids and set(ids) == declared, f"ComfyUI registered {ids}, nodes/*.py declare {sorted(declared)}"
    info = comfy_host.object_info()
    return {node: info[node] for node in ids}


def input_names(node_info: dict) -> list[str]:
    return [name for section in ("required", "optional") for name in node_info["input"].get(section, {})]


def zh_node_defs() -> dict:
    return json.loads((ZH / "nodeDefs.json").read_text(encoding="utf-8"))


def test_every_node_has_help_pages_that_name_each_input_and_output(schema):
    problems = []
    for node, info in schema.items():
        names = input_names(info) + list(info["output_name"])
        for locale, pattern in HELP_PAGES.items():
            page = DOCS / pattern.format(node=node)
            if not page.is_file():
                problems.append(f"{page.relative_to(REPO)} is missing")
                continue
            text = page.read_text(encoding="utf-8")
            missing = [n for n in names if f"`{n}`" not in text]
            if missing:
                problems.append(f"{page.relative_to(REPO)} does not describe {missing}")
            if locale == "zh" and len(CJK.findall(text)) < 100:
                problems.append(f"{page.relative_to(REPO)} is not written in Chinese")
    assert not problems, "\n".join(problems)
    # No page for a node that does not exist (a renamed id would leave a stale page behind).
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    expected = {pattern.format(node=node) for node in schema for pattern in HELP_PAGES.values()}
    assert pages == expected, f"pages for no node: {sorted(pages - expected)}"


def test_zh_node_defs_translate_every_node_input_and_output_of_the_live_schema(schema):
    defs = zh_node_defs()
    assert set(defs) == set(schema), f"nodes without a zh entry: {sorted(set(schema) - set(defs))}; " \
                                     f"entries for no node: {sorted(set(defs) - set(schema))}"
    problems = []
    for node, info in schema.items():
        entry = defs[node]
        for key in ("display_name", "description"):
            if not has_cjk(entry.get(key)):
                problems.append(f"{node}.{key} is not Chinese: {entry.get(key)!r}")
        inputs, live_inputs = entry.get("inputs", {}), input_names(info)
        if set(inputs) != set(live_inputs):
            problems.append(f"{node}.inputs: missing {sorted(set(live_inputs) - set(inputs))}, "
                            f"not in the schema {sorted(set(inputs) - set(live_inputs))}")
        outputs = entry.get("outputs", {})
        live_outputs = [str(i) for i in range(len(info["output_name"]))]
        if set(outputs) != set(live_outputs):
            problems.append(f"{node}.outputs: keys {sorted(outputs)}, the schema has outputs {live_outputs}")
        for kind, items in (("inputs", inputs), ("outputs", outputs)):
            for name, item in items.items():
                where = f"{node}.{kind}.{name}"
                if not isinstance(item, dict) or not set(item) <= {"name", "tooltip"}:
                    problems.append(f"{where} must be {{name, tooltip}}, got {item!r}")
                    continue
                if not (isinstance(item.get("name"), str) and item["name"].strip()):
                    problems.append(f"{where}.name is empty")
                if not has_cjk(item.get("tooltip")):
                    problems.append(f"{where}.tooltip is not Chinese: {item.get('tooltip')!r}")
    assert not problems, "\n".join(problems)


def test_zh_main_json_translates_our_categories_and_socket_types(schema):
    main = json.loads((ZH / "main.json").read_text(encoding="utf-8"))
    segments = {s for info in schema.values() for s in info["category"].split("/")}
    assert segments <= set(main["nodeCategories"]), f"untranslated: {segments - set(main['nodeCategories'])}"
    assert all(isinstance(v, str) and v for v in main["nodeCategories"].values())
    types = {t for info in schema.values() for t in info["output"] if t.startswith("ACE_PLUS")}
    assert types and {t for t in types if has_cjk(main["dataTypes"].get(t))} == types


def test_comfyui_merges_our_translations(schema):
    """ComfyUI's own loader (GET /i18n) returns our zh files merged in."""
    from app.custom_node_manager import CustomNodeManager

    translations = CustomNodeManager().build_translations()
    merged = translations.get("zh", {}).get("nodeDefs", {})
    for node, info in schema.items():  # where the frontend looks: nodeDefs.<id>.display_name, .inputs.<name>
        entry = merged.get(node)
        assert entry is not None, f"ComfyUI's zh translations have no nodeDefs entry for {node}"
        assert has_cjk(entry.get("display_name")) and set(entry.get("inputs", {})) == set(input_names(info))
    defs = zh_node_defs()
    assert {node: merged[node] for node in schema} == {node: defs[node] for node in schema}
    main = json.loads((ZH / "main.json").read_text(encoding="utf-8"))
    for key, values in main.items():
        assert {k: translations["zh"][key].get(k) for k in values} == values


def frontend_pack_name(schema) -> str:
    """The folder name the frontend puts in help URLs: the second part of the nodes' python_module."""
    packs = {info["python_module"] for info in schema.values()}
    assert len(packs) == 1, packs
    return packs.pop().split(".")[1]


def test_web_directory_is_registered_under_the_pack_folder(schema):
    import nodes  # ComfyUI's nodes.py (the host comes first on sys.path)

    pack = frontend_pack_name(schema)
    web_dir = nodes.EXTENSION_WEB_DIRS.get(pack)
    assert web_dir is not None and Path(web_dir).resolve() == (REPO / "web").resolve(), (
        f"ComfyUI registered no web directory for {pack!r} (WEB_DIRECTORY): {nodes.EXTENSION_WEB_DIRS}"
    )


@pytest.mark.filterwarnings("ignore:Bare functions are deprecated:DeprecationWarning")  # ComfyUI's own routes
def test_prompt_server_serves_the_help_pages_and_translations(schema):
    """ComfyUI's real PromptServer routes, in-process (aiohttp test client), at the URLs the frontend fetches."""
    import server
    from aiohttp.test_utils import TestClient, TestServer

    async def fetch(paths: list[str]) -> dict[str, tuple[int, bytes]]:
        prompt_server = server.PromptServer(asyncio.get_running_loop())
        prompt_server.add_routes()
        async with TestClient(TestServer(prompt_server.app)) as client:
            out = {}
            for path in paths:
                response = await client.get(path)
                out[path] = (response.status, await response.read())
            return out

    node, pack = "ACEPlusCanvas", frontend_pack_name(schema)
    urls = {f"/extensions/{pack}/docs/{page.format(node=node)}": DOCS / page.format(node=node)
            for page in HELP_PAGES.values()}
    had_instance = "instance" in vars(server.PromptServer)
    previous = getattr(server.PromptServer, "instance", None)
    try:
        got = asyncio.run(fetch([*urls, "/i18n"]))
    finally:  # PromptServer() registers itself as the process-wide instance; leave things as they were
        if had_instance:
            server.PromptServer.instance = previous
        else:
            del server.PromptServer.instance
    for url, path in urls.items():
        assert got[url][0] == 200, f"GET {url}: {got[url][0]}"
        assert got[url][1] == path.read_bytes()
    status, body = got["/i18n"]
    assert status == 200 and json.loads(body)["zh"]["nodeDefs"][node] == zh_node_defs()[node]
