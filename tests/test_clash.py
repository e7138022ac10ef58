"""Another custom-node folder that registers the official ACE++ node ids (the official ComfyUI-ACE_Plus pack, often
installed beside this one) is named in one start-up warning, with the folder that ComfyUI really serves them from.

ComfyUI loads ``custom_nodes/`` in directory-listing order (hash order on ext4, not alphabetical) and the folder
loaded last keeps a shared id, so each case picks a stand-in folder name that the file system lists before, or
after, this pack's folder ``ace_plus``, checks that ComfyUI really loaded them in that order, and reads the winner
from ComfyUI's registry (the module of ``nodes.NODE_CLASS_MAPPINGS[id]``), not from the product.
"""

from __future__ import annotations

import json
import os
import re
import textwrap
from pathlib import Path

import pytest
import python_subprocess

REPO = Path(__file__).resolve().parent.parent
PACK = "ace_plus"  # the folder name runner/comfy_host.py gives this pack in custom_nodes/
OFFICIAL_NODE_IDS = (
    "ACEPlusLoader",
    "ACEPlusConditioning",
    "ACEPlusFFTProcessor",
    "ACEPlusLoraProcessor",
    "ACEPlusLoraConditioning",
)
CLASHING_ID = "ACEPlusLoraProcessor"

# A V1 pack like the official one, reduced to one official id and a node that does nothing.
STAND_IN = textwrap.dedent(
    f"""
    class StandIn:
        CATEGORY = "stand-in"
        RETURN_TYPES = ()
        FUNCTION = "run"

        @classmethod
        def INPUT_TYPES(cls):
            return {{"required": {{}}}}

        def run(self):
            return ()


    NODE_CLASS_MAPPINGS = {{{CLASHING_ID!r}: StandIn}}
    """
)

# Boots the real ComfyUI with the pack (comfy_host links it as custom_nodes/ace_plus); prints the order ComfyUI
# listed the folders in and the module of the class it serves for the clashing id; warnings go to stderr.
BOOT = textwrap.dedent(
    """
    import json, logging, os, sys
    logging.basicConfig(level=logging.WARNING, format="LOG|%(levelname)s|%(name)s|%(message)s")
    sys.path.insert(0, {runner!r})
    import comfy_host
    comfy_host.boot({base!r})
    import nodes
    custom_nodes = os.path.join({base!r}, "custom_nodes")
    print(json.dumps({{"order": os.listdir(os.path.realpath(custom_nodes)),
                      "module": nodes.NODE_CLASS_MAPPINGS[{node_id!r}].__module__}}))
    """
)


def _listed_before_pack(scratch: Path, name: str) -> bool:
    # The same entries created in the same order as in the real run (stand-in folder first, then the pack's link).
    scratch.mkdir()
    (scratch / name).mkdir()
    (scratch / PACK).symlink_to(REPO, target_is_directory=True)
    order = os.listdir(scratch)
    return order.index(name) < order.index(PACK)


def _name_listed(tmp_path: Path, before: bool) -> str:
    # Alphabetical order first (as the user sees folders), then variants until the file system's order agrees.
    stem = "ComfyUI-ACE_Plus" if before else "zzz_official_ace"
    for n in range(64):
        name = stem if n == 0 else f"{stem}_{n}"
        if _listed_before_pack(tmp_path / f"probe_{before}_{n}", name) == before:
            return name
    pytest.fail(f"no folder name found that this file system lists {'before' if before else 'after'} {PACK}")


def _boot(base: Path, stand_in: str) -> tuple[list[str], dict]:
    folder = base / "custom_nodes" / stand_in
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text(STAND_IN)
    code = BOOT.format(runner=str(REPO / "runner"), base=str(base), node_id=CLASHING_ID)
    result = python_subprocess.run(["-c", code], timeout=300, cwd=base.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    warnings = [line.split("|", 3)[3] for line in result.stderr.splitlines() if line.startswith("LOG|WARNING|")]
    return warnings, json.loads(result.stdout.strip().splitlines()[-1])


def _served_by(module: str) -> str:
    # ComfyUI imports a folder as a module named after its path: .../custom_nodes/<folder>[.submodule]
    return module.split("/custom_nodes/", 1)[1].split(".", 1)[0]


@pytest.mark.parametrize("stand_in_first", [True, False], ids=["official-loaded-first", "official-loaded-last"])
def test_one_warning_names_both_folders_and_the_folder_comfyui_serves(tmp_path, stand_in_first):
    name = _name_listed(tmp_path, before=stand_in_first)
    warnings, info = _boot(tmp_path / "base", name)

    order = info["order"]
    assert (order.index(name) < order.index(PACK)) == stand_in_first, f"ComfyUI listed {order}"
    winner = _served_by(info["module"])
    assert winner == (PACK if stand_in_first else name), f"last loaded should win; ComfyUI serves {info['module']}"

    about = [w for w in warnings if any(node_id in w for node_id in OFFICIAL_NODE_IDS)]
    assert len(about) == 1, f"expected one warning about the shared ids, got {about}"
    message = about[0]
    assert f"'{name}'" in message and f"'{PACK}'" in message, message
    assert str(tmp_path / "base" / "custom_nodes" / name) in message, "the other folder's path is not named"
    said = re.findall(r"'([^']+)'(?: \(this pack\))? now serves ([\w, ]+)", message)
    assert said == [(winner, CLASHING_ID)], f"ComfyUI serves {CLASHING_ID} from '{winner}'; the warning says {said}"
    assert (f"'{PACK}' (this pack) now serves" in message) == (winner == PACK), message
    for how in ("delete", ".disabled", "ComfyUI-Manager"):
        assert how in message, f"the warning does not say how to remove the other folder ({how!r}): {message}"


def test_no_warning_without_a_clash(comfy_host):
    # The session's ComfyUI has a sibling folder (tests/comfy_test_nodes) that registers other ids only; its
    # import log holds the warnings and errors logged while the folders loaded.
    logs = comfy_host.import_logs
    about = [m for m in logs if "ACE++" in m or PACK in m or any(node_id in m for node_id in OFFICIAL_NODE_IDS)]
    assert about == []
    assert set(OFFICIAL_NODE_IDS) <= set(comfy_host.pack_node_ids())
