"""ACE++ for ComfyUI.

Loaded by ComfyUI's custom-node loader from ``custom_nodes/``: it calls :func:`comfy_entrypoint`, which
returns the extension listing this pack's nodes (ComfyUI's V3 node API, versioned module ``comfy_api.v0_0_2``).

Imported anywhere else (tests, tools) this module registers nothing and needs nothing from ComfyUI; the pure
logic lives in ``ace_plus_core`` and can be imported on its own.
"""

import logging

MIN_COMFYUI = "0.3.48"
# ComfyUI serves this folder under /extensions/<pack folder>/: the node help pages, web/docs/<NodeId>.md and
# web/docs/<NodeId>/<locale>.md. Translations (locales/<lang>/nodeDefs.json, main.json) it reads by itself.
WEB_DIRECTORY = "./web"

try:
    from comfy_api.v0_0_2 import ComfyExtension as _ComfyExtension  # noqa: F401
except ImportError:  # outside ComfyUI, or a ComfyUI without the V3 API
    _ComfyExtension = None
    try:
        import comfy  # noqa: F401
    except ImportError:
        pass  # not inside ComfyUI at all: stay silent, register nothing
    else:
        logging.getLogger(__name__).error(
            "ACE++ needs ComfyUI >= %s (the versioned node API comfy_api.v0_0_2); this ComfyUI is older. "
            "Update ComfyUI to use the ACE++ nodes.",
            MIN_COMFYUI,
        )

if _ComfyExtension is not None:

    async def comfy_entrypoint():
        """Called by ComfyUI's loader: returns the extension that lists the ACE++ nodes."""
        from .nodes import ACEPlusExtension

        return ACEPlusExtension()
