"""ComfyUI adapters over ``ace_plus_core``: thin V3 nodes (``comfy_api.v0_0_2``).

Only importable inside ComfyUI. Every node module lists its node classes in a module-level ``NODES`` tuple;
:func:`all_nodes` collects them in menu order and :class:`ACEPlusExtension` hands them to ComfyUI.
Node ids, once shipped, never change.
"""

from comfy_api.v0_0_2 import ComfyExtension, io

from . import clash, example_inputs


def _node_modules() -> tuple:
    # Add a node module here (explicit relative imports: ComfyUI imports this pack under a path-like name).
    from . import canvas, conditioning, models, processors

    return (models, canvas, processors, conditioning)


def all_nodes() -> list[type[io.ComfyNode]]:
    nodes: list[type[io.ComfyNode]] = []
    for module in _node_modules():
        nodes.extend(module.NODES)
    return nodes


class ACEPlusExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        node_list = all_nodes()
        clash.watch(node_list)  # one warning if another folder registers the official ids too
        # Called once when ComfyUI loads the pack (0.3.48 .. 0.3.75 never call on_load): the templates' pictures.
        example_inputs.install()
        return node_list
