"""One warning at start-up when another custom-node folder registers one of the five official ACE++ node ids.

Users often keep the official ``ComfyUI-ACE_Plus`` pack beside this one. ComfyUI imports the folders of
``custom_nodes/`` one after another (in directory-listing order, which is not alphabetical on most file systems)
and every registration replaces the class an id had, so the folder loaded last serves a shared id, silently.

Only ComfyUI's registry is read (``nodes.NODE_CLASS_MAPPINGS`` and the ``RELATIVE_PYTHON_MODULE`` it records on
each class); no other pack is imported or scanned. :func:`watch` runs while ComfyUI asks this pack for its nodes:
a folder loaded before this one already holds the ids (this pack's registration then replaces them). It schedules
the report on the running event loop; ComfyUI's loader never waits on I/O, so the loop runs the report once every
folder is loaded, when a folder loaded after this one has replaced this pack's classes. (A pack whose entrypoint
really waits would let the report run early, before the folders after it.) Without a clash: ten dict lookups.
"""

from __future__ import annotations

import asyncio
import logging
import os

OFFICIAL_NODE_IDS = (
    "ACEPlusLoader",
    "ACEPlusConditioning",
    "ACEPlusFFTProcessor",
    "ACEPlusLoraProcessor",
    "ACEPlusLoraConditioning",
)
PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # custom_nodes/<this folder>

log = logging.getLogger(__name__)


def _folder(cls) -> str:
    # ComfyUI sets RELATIVE_PYTHON_MODULE = "custom_nodes.<folder name>" on each class it registers from a folder.
    return getattr(cls, "RELATIVE_PYTHON_MODULE", cls.__module__).split(".", 1)[-1]


def watch(pack_nodes: list[type]) -> None:
    """Called from this pack's ``get_node_list`` with the classes it returns, before ComfyUI registers them."""
    import nodes  # ComfyUI's nodes.py, where every pack's ids end up

    registry = nodes.NODE_CLASS_MAPPINGS
    ours = set(pack_nodes)
    earlier = {i: _folder(registry[i]) for i in OFFICIAL_NODE_IDS if i in registry and registry[i] not in ours}
    asyncio.get_running_loop().call_soon(_report, earlier, ours)


def _report(earlier: dict[str, str], ours: set[type]) -> None:
    import nodes

    registry = nodes.NODE_CLASS_MAPPINGS
    me = os.path.basename(PACK_DIR)
    served = {i: me if registry[i] in ours else _folder(registry[i]) for i in OFFICIAL_NODE_IDS if i in registry}
    clashing = sorted(set(earlier) | {i for i, folder in served.items() if folder != me})
    others = sorted((set(earlier.values()) | set(served.values())) - {me})
    if not others:
        return
    by_winner: dict[str, list[str]] = {}
    for node_id in clashing:
        by_winner.setdefault(served.get(node_id, "?"), []).append(node_id)
    winners = "; ".join(
        f"'{folder}'{' (this pack)' if folder == me else ''} now serves {', '.join(ids)}"
        for folder, ids in by_winner.items()
    )
    where = ", ".join(f"'{o}' ({nodes.LOADED_MODULE_DIRS.get(o, o)})" for o in others)
    log.warning(
        "ACE++: the custom-node folder%s %s register%s node ids that this pack, '%s' (%s), registers too: %s. "
        "ComfyUI keeps whichever folder it loads last, so %s. To keep only this pack, remove %s: delete the "
        "folder, or rename it to end in '.disabled', or disable or uninstall it in ComfyUI-Manager, then restart "
        "ComfyUI.",
        "s" if len(others) > 1 else "",
        where,
        "" if len(others) > 1 else "s",
        me,
        PACK_DIR,
        ", ".join(clashing),
        winners,
        " and ".join(f"'{o}'" for o in others),
    )
