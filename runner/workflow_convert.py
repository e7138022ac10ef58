"""Convert a UI-format ComfyUI workflow (what the frontend saves) to API format (what ``POST /prompt`` takes).

Pure Python, no ComfyUI import: the node definitions come from ``object_info`` (the dict ComfyUI's
``GET /object_info`` returns; ``ComfyHost.object_info()`` builds the same in-process).

It follows the ComfyUI frontend's ``graphToPrompt()`` (read from ComfyUI_frontend 1.32.9, the frontend that
ComfyUI 0.3.75 pins: ``src/utils/executionUtil.ts``, ``ExecutableNodeDTO``, ``litegraphService.ts``,
``widgets.ts``, ``widgetInputs.ts``, ``uploadImage.ts``, ``litegraphUtil.migrateWidgetsValues``):

* **Widgets.** A node gets one widget per input whose type has a widget (INT, FLOAT, BOOLEAN, STRING, COMBO, ...)
  and is not ``forceInput``, in ``input_order`` (required, then optional, then the rest). INT inputs flagged
  ``control_after_generate`` (or, when the flag is absent, named ``seed``/``noise_seed``) get a frontend-only
  "control_after_generate" widget right after them; a COMBO flagged so gets that and a "control_filter_list"
  widget. A media combo flagged ``image_upload``/``video_upload``/``animated_image_upload`` in ``required``
  gets an "upload" button widget after all the others (its value, ``"image"``, is saved in ``widgets_values``),
  an ``audio`` combo flagged ``audio_upload`` an AUDIOUPLOAD one. The core extensions' extra widgets take a
  slot too: ``audioUI`` on the audio load/save/preview nodes and ``image`` on ``Preview3D``/``SaveGLB``, sent
  as ``""`` whatever was saved (the newer frontends no longer send ``audioUI``), and ``PreviewAny`` gets a
  ``preview`` text widget (sent as ``""``). Widgets with ``serialize = false`` (``audioUI``, ``preview``) take no
  slot when ``widgets_values`` are loaded.
  ``widgets_values`` fill the widgets in that order; widgets without a saved value keep their default (e.g.
  ``DualCLIPLoader``'s newer ``device``). The frontend-only widgets take a slot but are never sent. List
  values are sent as ``{"__value__": [...]}`` (a bare list would read as a link).
* **Inputs** are matched to the definition **by name** (the frontend rebuilds a node's sockets from the
  definition on load); a linked input overrides the widget of the same name ("widget converted to input").
* **Links** are resolved like ``ExecutableNodeDTO.resolveInput``: through ``Reroute`` nodes, through bypassed
  nodes (mode 4: the output takes the input in the same slot when its type fits, else the first input of the
  exact type, else the first compatible one), never into a muted node (mode 2): an input linked to a muted,
  bypassed-without-match or dropped node is left out, as the frontend removes "inputs connected to removed
  nodes". Muted and bypassed nodes are not sent.
* **Virtual nodes** (``Note``, ``MarkdownNote``, ``Reroute``, ``PrimitiveNode``) are not sent. A
  ``PrimitiveNode`` first copies its value into the widget of every input it feeds (``applyToGraph``), so
  those inputs get the primitive's value, not a link.
* **Unknown node types** raise :class:`MissingNodeTypes` listing them all, unless the node is muted/bypassed
  (handled from its saved sockets) or its type is in ``drop_types``: a dropped node is removed like a muted
  one, with the links from it (for third-party preview nodes such as ``MaskPreview+``).
* **Subgraphs** (``definitions.subgraphs``) are flattened: inner nodes get the frontend's execution ids
  ``"<subgraph node id>:<inner id>"``; links into and out of the subgraph follow the instance's sockets, which
  are matched to the definition's inputs by name. An unconnected subgraph input that feeds a widget inside
  uses the instance's promoted widget value (``widgets_values`` in the order of the inputs that feed widgets)
  when the instance saved one for it, else the inner widget's own value. Legacy **group nodes**
  (``extra.groupNodes``, types ``workflow>NAME``) raise :class:`UnsupportedWorkflow` (convert them to
  subgraphs in the frontend).

Not replicated: widget text replacement (``%Node.widget%`` when a primitive's "Run widget replace on values"
is on), custom-node JavaScript that changes widgets or serialisation, frontend "control before generate" mode
(the saved seed is sent as saved, which is what the frontend sends in its default "after" mode).
"""

from __future__ import annotations

import copy
import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ConversionError",
    "MissingNodeTypes",
    "UnsupportedWorkflow",
    "VIRTUAL_NODE_TYPES",
    "WIDGET_TYPES",
    "is_ui_workflow",
    "is_api_workflow",
    "widget_names",
    "process_dynamic_prompt",
    "ui_to_api",
]

MODE_ALWAYS, MODE_NEVER, MODE_BYPASS = 0, 2, 4


class _Undefined:
    """JavaScript's ``undefined``: a combo without options or default has no value and is not sent."""

    def __repr__(self) -> str:
        return "undefined"


_UNDEFINED = _Undefined()

#: Input types the frontend draws as widgets (``ComfyWidgets`` plus the core extensions' custom widgets).
WIDGET_TYPES = frozenset({
    "INT", "FLOAT", "BOOLEAN", "STRING", "MARKDOWN", "COMBO", "IMAGEUPLOAD", "COLOR", "IMAGECOMPARE", "CHART",
    "GALLERIA", "TEXTAREA", "WEBCAM", "AUDIO_UI", "AUDIOUPLOAD", "AUDIO_RECORD", "LOAD_3D", "PREVIEW_3D",
})
#: Frontend-only node types: never sent to the server.
VIRTUAL_NODE_TYPES = frozenset({"Note", "MarkdownNote", "Reroute", "PrimitiveNode"})
_MEDIA_UPLOAD_FLAGS = ("image_upload", "video_upload", "animated_image_upload")
#: Widget inputs the frontend's core extensions add to some node types (``beforeRegisterNodeDef`` in
#: uploadAudio.ts, load3d.ts, saveMesh.ts): DOM widgets that report their element's state (``""`` here),
#: whatever was saved; they are sent. ``audioUI`` has ``serialize = false`` (no ``widgets_values`` slot).
_EXTENSION_WIDGETS = {
    **dict.fromkeys(("LoadAudio", "SaveAudio", "PreviewAudio", "SaveAudioMP3", "SaveAudioOpus"),
                    ("audioUI", "AUDIO_UI")),
    "Preview3D": ("image", "PREVIEW_3D"),
    "SaveGLB": ("image", "PREVIEW_3D"),
}
_DOM_VALUE_TYPES = frozenset({"AUDIO_UI", "PREVIEW_3D"})
_UNSAVED_TYPES = frozenset({"AUDIO_UI"})
_SUBGRAPH_INPUT_ID, _SUBGRAPH_OUTPUT_ID = -10, -20


class ConversionError(ValueError):
    """The workflow cannot be converted (malformed, cyclic links ...)."""


class MissingNodeTypes(ConversionError):
    """Node types that the server does not know. ``types`` maps each type to the ids of its nodes."""

    def __init__(self, types: Mapping[str, list[str]]) -> None:
        self.types = {k: sorted(v, key=_id_key) for k, v in types.items()}
        listed = ", ".join(f"{t} (node {', '.join(ids)})" for t, ids in sorted(self.types.items()))
        super().__init__(
            f"the workflow uses node types this ComfyUI does not have: {listed}. Install the custom nodes that "
            "provide them, or drop them (ui_to_api(drop_types=...), run_workflow.py --drop-node-type TYPE)"
        )


class UnsupportedWorkflow(ConversionError):
    """A workflow feature the converter does not handle (legacy group nodes)."""


# --------------------------------------------------------------------------------------------------
# Format detection
# --------------------------------------------------------------------------------------------------


def is_ui_workflow(data: Any) -> bool:
    """A frontend-saved workflow: a ``nodes`` list (and usually ``links``)."""
    return isinstance(data, dict) and isinstance(data.get("nodes"), list)


def is_api_workflow(data: Any) -> bool:
    """An API graph: ``{node_id: {"class_type": ..., "inputs": {...}}}``."""
    return (
        isinstance(data, dict)
        and bool(data)
        and all(isinstance(v, dict) and "class_type" in v for v in data.values())
    )


# --------------------------------------------------------------------------------------------------
# Node definitions -> sockets and widgets
# --------------------------------------------------------------------------------------------------


@dataclass
class _Spec:
    name: str
    type: str
    options: dict
    optional: bool


@dataclass
class _Widget:
    name: str
    value: Any
    send: bool = True  # False: frontend-only (options.serialize === false)
    slot: bool = True  # False: widget.serialize === false, it takes no widgets_values slot when loaded
    settable: bool = True  # False: a DOM widget that ignores the value it is given
    dynamic_prompts: bool = False  # STRING with dynamicPrompts: {a|b} is resolved when queued


@dataclass
class _Input:
    name: str
    type: str
    link: int | None
    widget: str | None = None  # the widget this socket belongs to


@dataclass
class _Node:
    id: str  # execution id ("5", or "12:5" inside subgraph instance 12)
    type: str
    mode: int
    title: str
    inputs: list[_Input]
    output_types: list[str]
    widgets: list[_Widget] = field(default_factory=list)
    virtual: bool = False
    known: bool = True
    graph: _Graph | None = None
    raw: dict = field(default_factory=dict)
    subgraph: dict | None = None  # definition, for subgraph instances
    inner: _Graph | None = None  # the flattened inside of a subgraph instance


@dataclass
class _Link:
    id: int
    origin_id: int | str
    origin_slot: int
    target_id: int | str
    target_slot: int
    type: str


@dataclass
class _Graph:
    links: dict[int, _Link]
    path: tuple[str, ...]  # subgraph instance ids from the root
    instance: _Node | None = None  # the subgraph node this graph is the inside of
    nodes: dict[str, _Node] = field(default_factory=dict)  # local id -> node


def _input_specs(definition: Mapping) -> list[_Spec]:
    """Inputs in the order the frontend creates them (``getOrderedInputSpecs`` over the V2 inputs)."""
    groups = definition.get("input") or {}
    specs: dict[str, _Spec] = {}
    for section in ("required", "optional"):
        for name, raw in (groups.get(section) or {}).items():
            specs[name] = _spec(name, raw, section == "optional")
        if section == "required":
            extension = _EXTENSION_WIDGETS.get(str(definition.get("name")))
            if extension is not None and extension[0] not in specs:
                specs[extension[0]] = _Spec(extension[0], extension[1], {}, False)
            upload = _upload_spec(groups.get("required") or {})
            if upload is not None:
                specs["upload"] = upload
    order = definition.get("input_order")
    if not order:
        return list(specs.values())
    ordered: list[_Spec] = []
    for section, optional in (("required", False), ("optional", True)):
        for name in order.get(section) or []:
            spec = specs.get(name)
            if spec is not None and spec.optional == optional and spec not in ordered:
                ordered.append(spec)
    ordered += [s for s in specs.values() if s not in ordered]
    return ordered


def _spec(name: str, raw: Any, optional: bool) -> _Spec:
    if not isinstance(raw, (list, tuple)) or not raw:
        return _Spec(name, "UNKNOWN", {}, optional)
    options = dict(raw[1]) if len(raw) > 1 and isinstance(raw[1], dict) else {}
    if isinstance(raw[0], (list, tuple)):
        options.setdefault("options", list(raw[0]))
        return _Spec(name, "COMBO", options, optional)
    return _Spec(name, str(raw[0]), options, optional)


def _upload_spec(required: Mapping) -> _Spec | None:
    """uploadImage.ts: the first media combo in ``required`` gets an IMAGEUPLOAD button input named 'upload';
    uploadAudio.ts: an ``audio`` input flagged ``audio_upload`` gets an AUDIOUPLOAD one."""
    for name, raw in required.items():
        if not isinstance(raw, (list, tuple)) or len(raw) < 2 or not isinstance(raw[1], dict):
            continue
        is_combo = isinstance(raw[0], (list, tuple)) or raw[0] == "COMBO"
        if is_combo and any(raw[1].get(flag) is True for flag in _MEDIA_UPLOAD_FLAGS):
            return _Spec("upload", "IMAGEUPLOAD", {**raw[1], "imageInputName": name}, False)
    audio = required.get("audio")
    if isinstance(audio, (list, tuple)) and len(audio) > 1 and isinstance(audio[1], dict) and \
            audio[1].get("audio_upload") is True:
        return _Spec("upload", "AUDIOUPLOAD", {}, False)
    return None


def _widget_type(spec: _Spec) -> str | None:
    wtype = spec.options.get("widgetType") or spec.type
    if wtype not in WIDGET_TYPES or spec.options.get("forceInput"):
        return None
    return wtype


def _has_control(spec: _Spec, wtype: str) -> bool:
    flag = spec.options.get("control_after_generate")
    if wtype == "INT":
        return bool(flag) if flag is not None else spec.name in ("seed", "noise_seed")
    return wtype == "COMBO" and bool(flag)


def _default(spec: _Spec, wtype: str) -> Any:
    opts = spec.options
    if wtype in ("INT", "FLOAT"):
        return opts.get("default", 0)
    if wtype == "BOOLEAN":
        return opts.get("default", False)
    if wtype == "COMBO":
        if opts.get("default") is not None:
            return opts["default"]
        values = opts.get("options") or []
        return values[0] if values else _UNDEFINED
    if wtype == "IMAGEUPLOAD":
        return "image"
    if wtype == "COLOR":
        return opts.get("default") or "#000000"
    return opts.get("default", "")


def _build_widgets(specs: list[_Spec]) -> list[_Widget]:
    widgets: list[_Widget] = []
    for spec in specs:
        wtype = _widget_type(spec)
        if wtype is None:
            continue
        widgets.append(_Widget(spec.name, _default(spec, wtype), send=wtype not in ("IMAGEUPLOAD", "AUDIOUPLOAD"),
                               slot=wtype not in _UNSAVED_TYPES, settable=wtype not in _DOM_VALUE_TYPES,
                               dynamic_prompts=wtype == "STRING" and spec.options.get("dynamicPrompts") is True))
        if _has_control(spec, wtype):
            control = spec.options.get("control_after_generate")
            name = control if isinstance(control, str) else "control_after_generate"
            widgets.append(_Widget(name, "randomize", send=False))
            if wtype == "COMBO":
                widgets.append(_Widget("control_filter_list", "", send=False))
    return widgets


def widget_names(definition: Mapping) -> list[str]:
    """The ``widgets_values`` layout of a node type, frontend-only widgets included (e.g. for authoring)."""
    return [w.name for w in _build_widgets(_input_specs(definition))]


def _migrate_widget_values(specs: list[_Spec], widgets: list[_Widget], values: list) -> list:
    """litegraphUtil.migrateWidgetsValues: old files saved a value for ``forceInput`` inputs; drop those."""
    names = {w.name for w in widgets}
    original = [s for s in specs if s.name in names or s.options.get("forceInput")]
    count = sum(2 if (s.options.get("control_after_generate") or s.name in ("seed", "noise_seed")) else 1
                for s in original)
    if count == len(values) and any(s.options.get("forceInput") for s in original):
        return [v for s, v in zip(original, values, strict=False) if not s.options.get("forceInput")]
    return values


def _assign_widget_values(node: _Node, specs: list[_Spec], raw_values: Any) -> None:
    if raw_values is None:
        return
    if isinstance(raw_values, dict):  # some custom nodes save a dict; match by name
        for w in node.widgets:
            if w.name in raw_values and w.slot and w.settable:
                w.value = raw_values[w.name]
        return
    values = _migrate_widget_values(specs, node.widgets, list(raw_values))
    # LGraphNode.configure: the values fill the widgets that serialize, in order.
    for widget, value in zip([w for w in node.widgets if w.slot], values, strict=False):
        if widget.settable:
            widget.value = value


# --------------------------------------------------------------------------------------------------
# Loading the graph
# --------------------------------------------------------------------------------------------------


def _parse_links(raw_links: Iterable) -> dict[int, _Link]:
    links: dict[int, _Link] = {}
    for raw in raw_links or []:
        if raw is None:
            continue
        if isinstance(raw, dict):  # schema 1 / subgraph definitions
            link = _Link(int(raw["id"]), raw["origin_id"], int(raw["origin_slot"]), raw["target_id"],
                         int(raw["target_slot"]), str(raw.get("type", "*")))
        else:  # schema 0.4: [id, origin_id, origin_slot, target_id, target_slot, type]
            link = _Link(int(raw[0]), raw[1], int(raw[2]), raw[3], int(raw[4]), str(raw[5]) if len(raw) > 5 else "*")
        links[link.id] = link
    return links


def _saved_inputs(raw: Mapping) -> list[dict]:
    return [i for i in (raw.get("inputs") or []) if isinstance(i, dict)]


def _make_node(raw: dict, graph: _Graph, object_info: Mapping, subgraphs: Mapping[str, dict],
               drop: set[str]) -> _Node:
    local_id = str(raw["id"])
    exec_id = ":".join((*graph.path, local_id))
    ntype = str(raw.get("type"))
    mode = int(raw.get("mode") or 0)
    saved = _saved_inputs(raw)
    saved_outputs = [o for o in (raw.get("outputs") or []) if isinstance(o, dict)]

    def from_saved(virtual: bool = False, known: bool = False) -> _Node:
        inputs = [_Input(str(i.get("name", "")), str(i.get("type", "*")), i.get("link"),
                         (i.get("widget") or {}).get("name")) for i in saved]
        outs = [str(o.get("type", "*")) for o in saved_outputs]
        return _Node(exec_id, ntype, mode, raw.get("title") or ntype, inputs, outs, virtual=virtual, known=known,
                     graph=graph, raw=raw)

    if ntype in drop:
        node = from_saved()
        node.mode = MODE_NEVER
        return node
    if ntype in VIRTUAL_NODE_TYPES:
        node = from_saved(virtual=True, known=True)
        if ntype == "Reroute":
            node.inputs = node.inputs[:1] or [_Input("", "*", None)]
            node.output_types = ["*"]
        return node
    if ntype in subgraphs:
        node = from_saved(known=True)
        node.subgraph = subgraphs[ntype]
        # litegraphService: an instance's sockets follow the definition's inputs, saved ones matched by name.
        saved_by_name = {i.name: i for i in node.inputs}
        node.inputs = [saved_by_name.pop(str(i.get("name")), None) or _Input(str(i.get("name")),
                                                                              str(i.get("type", "*")), None)
                       for i in subgraphs[ntype].get("inputs") or []] + list(saved_by_name.values())
        node.title = raw.get("title") or subgraphs[ntype].get("name") or ntype
        node.output_types = [str(o.get("type", "*")) for o in subgraphs[ntype].get("outputs") or []] or \
            node.output_types
        return node
    definition = object_info.get(ntype)
    if definition is None:
        return from_saved()

    specs = _input_specs(definition)
    by_name = {str(i.get("name")): i for i in saved}
    inputs: list[_Input] = []
    # litegraphService: sockets without a widget first, then one socket per widget (unless socketless).
    for spec in specs:
        if _widget_type(spec) is None:
            inputs.append(_Input(spec.name, spec.type, by_name.get(spec.name, {}).get("link")))
    for spec in specs:
        wtype = _widget_type(spec)
        if wtype is not None:
            inputs.append(_Input(spec.name, spec.type, by_name.get(spec.name, {}).get("link"), spec.name))
    defined = {i.name for i in inputs}
    for i in saved:  # extra sockets added by custom JavaScript
        if str(i.get("name")) not in defined:
            inputs.append(_Input(str(i.get("name")), str(i.get("type", "*")), i.get("link"),
                                 (i.get("widget") or {}).get("name")))
    outputs = definition.get("output") or []
    output_types = ["COMBO" if isinstance(t, (list, tuple)) else str(t) for t in outputs]
    output_types += [str(o.get("type", "*")) for o in saved_outputs[len(output_types):]]
    node = _Node(exec_id, ntype, mode, raw.get("title") or definition.get("display_name") or ntype, inputs,
                 output_types, widgets=_build_widgets(specs), graph=graph, raw=raw)
    if ntype == "PreviewAny":  # previewAny.ts adds a read-only text widget when the node is created
        node.widgets.append(_Widget("preview", "", slot=False))
    _assign_widget_values(node, specs, raw.get("widgets_values"))
    return node


class _Converter:
    def __init__(self, workflow: Mapping, object_info: Mapping, drop_types: Iterable[str]) -> None:
        self.object_info = object_info
        self.drop = set(drop_types or ())
        definitions = workflow.get("definitions") or {}
        self.subgraphs = {str(sg["id"]): sg for sg in definitions.get("subgraphs") or [] if "id" in sg}
        group_nodes = (workflow.get("extra") or {}).get("groupNodes") or {}
        self.root = _Graph(_parse_links(workflow.get("links")), ())
        self.order: list[_Node] = []  # every node, flattened, in execution order
        self.by_exec_id: dict[str, _Node] = {}
        missing: dict[str, list[str]] = {}
        self._load(self.root, workflow.get("nodes") or [], group_nodes, missing, depth=0)
        if missing:
            raise MissingNodeTypes(missing)

    def _load(self, graph: _Graph, raw_nodes: list, group_nodes: Mapping, missing: dict[str, list[str]],
              depth: int) -> None:
        if depth > 32:
            raise ConversionError("subgraphs nested more than 32 deep (a subgraph that contains itself?)")
        for raw in raw_nodes:
            node = _make_node(raw, graph, self.object_info, self.subgraphs, self.drop)
            graph.nodes[str(raw["id"])] = node
        for node in _execution_order(graph):
            if not node.known and (node.type.startswith(("workflow>", "workflow/")) or node.type in group_nodes):
                raise UnsupportedWorkflow(
                    f"node {node.id} is a legacy group node ({node.type}); open the workflow in ComfyUI's frontend "
                    "and convert the group node to a subgraph (or ungroup it), then save it again"
                )
            if not node.known and node.mode not in (MODE_NEVER, MODE_BYPASS):
                missing.setdefault(node.type, []).append(node.id)
            self.order.append(node)
            self.by_exec_id[node.id] = node
            if node.subgraph is not None and node.mode not in (MODE_NEVER, MODE_BYPASS):
                sg = node.subgraph
                inner = _Graph(_parse_links(sg.get("links")), (*graph.path, str(node.raw["id"])), instance=node)
                node.inner = inner
                self._load(inner, sg.get("nodes") or [], group_nodes, missing, depth + 1)

    # --- primitive nodes (applyToGraph) ---------------------------------------------------------------
    def apply_primitives(self) -> None:
        for node in self.order:
            if node.type != "PrimitiveNode":
                continue
            values = node.raw.get("widgets_values")
            if not isinstance(values, list) or not values:
                continue
            value = values[0]
            graph = node.graph
            link_ids = []
            for out in node.raw.get("outputs") or []:
                link_ids += list(out.get("links") or [])
            for link_id in link_ids:
                link = graph.links.get(int(link_id))
                target = graph.nodes.get(str(link.target_id)) if link else None
                if target is None:
                    continue
                socket = next((i for i in target.inputs if i.link == link.id), None)
                name = (socket.widget or socket.name) if socket is not None else None
                for w in target.widgets:
                    if w.name == name:
                        w.value = copy.deepcopy(value)

    # --- link resolution (ExecutableNodeDTO) -----------------------------------------------------------
    def resolve_input(self, node: _Node, slot: int, visited: set, type_: str | None = None):
        key = (node.id, "I", slot)
        if key in visited:
            raise ConversionError(f"circular link while resolving input {slot} of node {node.id} ({node.type})")
        visited.add(key)
        if slot >= len(node.inputs):
            return None
        socket = node.inputs[slot]
        if socket.link is None:
            return None
        graph = node.graph
        link = graph.links.get(int(socket.link))
        if link is None:  # a dangling link: the frontend drops it when it loads the workflow
            return None
        if graph.instance is not None and _as_int(link.origin_id) == _SUBGRAPH_INPUT_ID:
            instance = graph.instance
            if link.origin_slot >= len(instance.inputs):
                return None
            outer = instance.inputs[link.origin_slot]
            if outer.link is None:
                value = self._promoted_value(instance, link.origin_slot)
                return ("widget", value) if value is not _NOTHING else None
            return self.resolve_input(instance, link.origin_slot, visited)
        origin = graph.nodes.get(str(link.origin_id))
        if origin is None:
            return None
        return self.resolve_output(origin, link.origin_slot, type_ or socket.type, visited)

    def resolve_output(self, node: _Node, slot: int, type_: str, visited: set):
        key = (node.id, "O", slot)
        if key in visited:
            raise ConversionError(f"circular link while resolving output {slot} of node {node.id} ({node.type})")
        visited.add(key)
        if node.mode == MODE_BYPASS:
            index = _bypass_slot_index(node, slot, type_)
            if index < 0 or index >= len(node.inputs):
                return None
            return self.resolve_input(node, index, visited)
        if node.subgraph is not None:
            return self._resolve_subgraph_output(node, slot, type_, visited)
        if node.virtual:
            if node.type == "Reroute" and slot < len(node.inputs) and node.inputs[slot].link is not None:
                return self.resolve_input(node, slot, visited, type_)
            return None
        return ("link", node.id, slot)

    def _resolve_subgraph_output(self, node: _Node, slot: int, type_: str, visited: set):
        outputs = node.subgraph.get("outputs") or []
        if slot >= len(outputs):
            return None
        inner_graph = node.inner
        if inner_graph is None:
            return None
        for link_id in outputs[slot].get("linkIds") or []:
            link = inner_graph.links.get(int(link_id))
            if link is None or _as_int(link.target_id) != _SUBGRAPH_OUTPUT_ID:
                continue
            inner = inner_graph.nodes.get(str(link.origin_id))
            if inner is None:
                return None
            return self.resolve_output(inner, link.origin_slot, type_, visited)
        return None

    def _promoted_value(self, instance: _Node, slot: int):
        """The subgraph node's own widget for an unconnected input (a promoted widget), if it saved one."""
        sg_inputs = instance.subgraph.get("inputs") or []
        if slot >= len(sg_inputs):
            return _NOTHING
        name = sg_inputs[slot].get("name")
        values = instance.raw.get("widgets_values")
        if isinstance(values, dict):
            return values.get(name, _NOTHING)
        if not isinstance(values, list):
            return _NOTHING
        # SubgraphNode: one promoted widget per subgraph input that feeds a widget inside, in input order.
        widget_inputs = [str(i.get("name")) for i in sg_inputs if self._feeds_widget(instance, i)]
        if name in widget_inputs and widget_inputs.index(name) < len(values):
            return values[widget_inputs.index(name)]
        return _NOTHING

    @staticmethod
    def _feeds_widget(instance: _Node, sg_input: Mapping) -> bool:
        for link_id in sg_input.get("linkIds") or []:
            link = instance.inner.links.get(int(link_id)) if instance.inner else None
            target = instance.inner.nodes.get(str(link.target_id)) if link else None
            socket = next((i for i in target.inputs if i.link == link.id), None) if target else None
            if socket is not None and socket.widget:
                return True
        return False

    # --- the prompt ------------------------------------------------------------------------------------
    def prompt(self, meta: bool, rng: random.Random | None) -> dict:
        self.apply_primitives()
        output: dict[str, dict] = {}
        for node in self.order:
            if node.virtual or node.subgraph is not None or node.mode in (MODE_NEVER, MODE_BYPASS):
                continue
            inputs: dict[str, Any] = {}
            for w in node.widgets:
                if w.send and w.name and w.value is not _UNDEFINED:  # JSON.stringify drops undefined
                    value = w.value
                    if w.dynamic_prompts and rng is not None and isinstance(value, str):
                        value = process_dynamic_prompt(value, rng)
                    inputs[w.name] = _wrap(value)
            for i, socket in enumerate(node.inputs):
                resolved = self.resolve_input(node, i, set())
                if resolved is None:
                    continue
                if resolved[0] == "widget":
                    inputs[socket.name] = _wrap(resolved[1])
                else:
                    inputs[socket.name] = [str(resolved[1]), int(resolved[2])]
            entry: dict[str, Any] = {"inputs": inputs, "class_type": node.type}
            if meta:
                entry["_meta"] = {"title": node.title}
            output[node.id] = entry
        for entry in output.values():
            for name, value in list(entry["inputs"].items()):
                if isinstance(value, list) and len(value) == 2 and value[0] not in output:
                    del entry["inputs"][name]
        return output


_NOTHING = _Undefined()


def _id_key(exec_id: str) -> tuple:
    return tuple(int(p) if p.lstrip("-").isdigit() else 0 for p in str(exec_id).split(":"))


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _wrap(value: Any) -> Any:
    return {"__value__": value} if isinstance(value, list) else value


def _valid_connection(a: str, b: str) -> bool:
    """LiteGraph.isValidConnection: '*'/'' match anything; comma lists match on any common type."""
    if a in ("", "*") or b in ("", "*") or a == b:
        return True
    a, b = str(a).lower(), str(b).lower()
    if "," not in a and "," not in b:
        return a == b
    return any(_valid_connection(x, y) for x in a.split(",") for y in b.split(","))


def _bypass_slot_index(node: _Node, slot: int, type_: str) -> int:
    """ExecutableNodeDTO.#getBypassSlotIndex."""
    inputs = node.inputs
    if type_ in ("*", ""):
        return slot if len(inputs) > slot else 0
    output_type = node.output_types[slot] if slot < len(node.output_types) else "*"
    if slot < len(inputs):
        opposite = inputs[slot]
        if _valid_connection(opposite.type, output_type) and _valid_connection(opposite.type, type_):
            return slot
    for i, socket in enumerate(inputs):
        if socket.type == type_:
            return i
    for i, socket in enumerate(inputs):
        if _valid_connection(socket.type, output_type) and _valid_connection(socket.type, type_):
            return i
    return -1


def _execution_order(graph: _Graph) -> list[_Node]:
    """Upstream nodes first (Kahn), ties by the saved ``order`` then id; cycles keep their saved order."""
    nodes = list(graph.nodes.values())
    rank = {n.id: (n.raw.get("order", 0) if isinstance(n.raw.get("order"), int) else 0, _as_int(n.raw.get("id")) or 0)
            for n in nodes}
    deps: dict[str, set[str]] = {n.id: set() for n in nodes}
    local = {str(n.raw["id"]): n for n in nodes}
    for link in graph.links.values():
        src, dst = local.get(str(link.origin_id)), local.get(str(link.target_id))
        if src is not None and dst is not None and src is not dst:
            deps[dst.id].add(src.id)
    done: list[_Node] = []
    placed: set[str] = set()
    remaining = sorted(nodes, key=lambda n: rank[n.id])
    while remaining:
        ready = [n for n in remaining if deps[n.id] <= placed]
        if not ready:  # a cycle: keep the saved order for the rest
            ready = remaining[:1]
        for n in ready:
            done.append(n)
            placed.add(n.id)
        remaining = [n for n in remaining if n.id not in placed]
    return done


_COMMENTS = re.compile(r"/\*[\s\S]*?\*/|//.*")
_ESCAPED = re.compile(r"\\([{}|])")


def process_dynamic_prompt(text: str, rng: random.Random | None = None) -> str:
    """The frontend's ``processDynamicPrompt``: strips ``//`` and ``/* */`` comments, replaces every ``{a|b|c}``
    (nested allowed) by one option chosen at random, keeps backslash escapes (``\\{`` -> ``{``).

    Note what this does to ACE++ prompts written with ``{image}``: a one-option block, so the frontend sends
    ``image`` (braces gone) for any STRING widget with ``dynamicPrompts`` (e.g. ``CLIPTextEncode``).
    """
    rng = rng or random.Random()
    source = _COMMENTS.sub("", text)
    pos = 0

    def escape() -> str:
        nonlocal pos
        nxt = source[pos] if pos < len(source) else ""
        pos += 1
        return "\\" + nxt

    def choice_block() -> str:
        nonlocal pos
        options: list[str] = []
        choice = ""
        depth = 0
        while pos < len(source):
            char = source[pos]
            pos += 1
            if char == "\\":
                choice += escape()
                continue
            if char == "{":
                depth += 1
            elif char == "}":
                if not depth:
                    break
                depth -= 1
            elif char == "|" and not depth:
                options.append(choice)
                choice = ""
                continue
            choice += char
        options.append(choice)
        return process_dynamic_prompt(options[int(rng.random() * len(options))], rng)

    result = ""
    while pos < len(source):
        char = source[pos]
        pos += 1
        if char == "\\":
            result += escape()
        elif char == "{":
            result += choice_block()
        else:
            result += char
    return _ESCAPED.sub(r"\1", result)


def ui_to_api(workflow: Mapping, object_info: Mapping, *, drop_types: Iterable[str] = (),
              meta: bool = True, dynamic_prompts: bool | random.Random = True) -> dict[str, dict]:
    """Convert a UI-format workflow to the API graph the frontend's ``graphToPrompt()`` would queue.

    ``object_info``: node definitions as ``GET /object_info`` returns them. ``drop_types``: node types removed
    with every link from them (as if muted), e.g. ``{"MaskPreview+"}``. ``meta``: include ``_meta.title``
    (the frontend does; the server ignores it). ``dynamic_prompts``: resolve ``{a|b}`` choices in STRING widgets
    flagged ``dynamicPrompts`` as the frontend does when it queues (True: a fresh ``random.Random``; or pass a
    seeded ``random.Random``; False: send the text as saved).

    Raises :class:`MissingNodeTypes` (unknown types, all listed), :class:`UnsupportedWorkflow` (legacy group
    nodes) or :class:`ConversionError`.
    """
    if not is_ui_workflow(workflow):
        raise ConversionError("not a UI-format workflow (no 'nodes' list)")
    if dynamic_prompts is True:
        rng: random.Random | None = random.Random()
    elif dynamic_prompts is False:
        rng = None
    else:
        rng = dynamic_prompts
    return _Converter(workflow, object_info, drop_types).prompt(meta, rng)
