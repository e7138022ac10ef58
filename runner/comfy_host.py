"""Boot a real ComfyUI in-process (CPU), load this pack through ComfyUI's own custom-node loader, run graphs.

Used by the test-suite and by the headless tools. Nothing here imports ComfyUI at module level; :func:`boot`
does, once per process (ComfyUI keeps global state: node registry, folder paths, model management).

The ComfyUI source tree is ``$COMFYUI_PATH`` when set (a user's own ComfyUI), else the host built by
``tools/setup_host.sh`` (``$ACE_HOST_DIR/ComfyUI``, default ``~/.cache/ace-plus-host/ComfyUI``).

The host tree itself is never modified: ComfyUI's ``--base-directory`` points models, ``custom_nodes``, input,
output, temp and user folders at a fresh working directory, and the pack is symlinked into its
``custom_nodes/`` the way a user installs it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import os
import sys
import uuid
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
PACK_DIR_NAME = "ace_plus"  # the folder name the pack gets in custom_nodes/


def default_host_dir() -> Path:
    return Path(os.environ.get("ACE_HOST_DIR", Path.home() / ".cache" / "ace-plus-host"))


def locate_comfyui() -> Path:
    """The ComfyUI source tree to use: ``$COMFYUI_PATH`` or the cached host's copy."""
    env = os.environ.get("COMFYUI_PATH")
    path = Path(env) if env else default_host_dir() / "ComfyUI"
    if not (path / "main.py").is_file() or not (path / "comfy").is_dir():
        hint = "set COMFYUI_PATH to a ComfyUI checkout" if env else "run tools/setup_host.sh first"
        raise RuntimeError(f"no ComfyUI source tree at {path} ({hint})")
    return path


class _LogCapture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self) -> list[str]:
        out = []
        for r in self.records:
            try:
                out.append(r.getMessage())
            except Exception:  # a malformed third-party log call must not break the harness
                out.append(str(r.msg))
        return out


class _HeadlessServer:
    """The part of ComfyUI's PromptServer that the executor talks to, recording every event it sends."""

    def __init__(self, on_event=None) -> None:
        self.client_id: str | None = None
        self.last_node_id: str | None = None
        self.last_prompt_id: str | None = None
        self.events: list[tuple[str, Any]] = []
        self.on_event = on_event

    def send_sync(self, event, data, sid=None) -> None:
        self.events.append((event, data))
        if self.on_event is not None:
            self.on_event(event, data)

    def queue_updated(self) -> None:
        pass


class GraphError(RuntimeError):
    """A graph failed validation or execution; ``details`` holds ComfyUI's own error data."""

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.details = details


@dataclasses.dataclass
class RunResult:
    prompt_id: str
    outputs: dict[str, Any]  # node id -> ui output (e.g. {"images": [{"filename", "subfolder", "type"}]})
    events: list[tuple[str, Any]]
    logs: list[str]

    def image_paths(self, output_dir: Path) -> list[Path]:
        paths = []
        for ui in self.outputs.values():
            for img in ui.get("images", []):
                if img.get("type") == "output":
                    paths.append(output_dir / img.get("subfolder", "") / img["filename"])
        return paths


class ComfyHost:
    """A booted ComfyUI: node registry loaded, custom nodes imported, an executor ready."""

    def __init__(self, comfy_dir: Path, base_dir: Path, import_logs: list[str]) -> None:
        import execution
        import folder_paths
        import nodes

        self.comfy_dir = comfy_dir
        self.base_dir = base_dir
        self.import_logs = import_logs
        self._execution = execution
        self._nodes = nodes
        self.folder_paths = folder_paths
        self.server = _HeadlessServer()
        self._install_progress_hook()
        # The cache_args main.py passes, every limit 0 with the classic cache: 0.3.75 reads "lru" and "ram";
        # 0.23 and later also read "ram_inactive" in every execute (main.py's prompt_worker passes all three;
        # the older releases ignore the key). 0.3.52 took cache_size instead.
        caching = {"cache_args": {"lru": 0, "ram": 0, "ram_inactive": 0}}
        if "cache_args" not in inspect.signature(execution.PromptExecutor).parameters:
            caching = {"cache_size": 0}
        self.executor = execution.PromptExecutor(self.server, cache_type=execution.CacheType.CLASSIC, **caching)

    def _install_progress_hook(self) -> None:
        """What main.py's hijack_progress does, minus previews: sampler steps become "progress" events."""
        import comfy.utils
        from comfy_execution.progress import get_progress_state
        from comfy_execution.utils import get_executing_context

        server = self.server

        def hook(value, total, preview_image, prompt_id=None, node_id=None):
            ctx = get_executing_context()
            if node_id is None and ctx is not None:
                node_id = ctx.node_id
            if prompt_id is None and ctx is not None:
                prompt_id = ctx.prompt_id
            get_progress_state().update_progress(node_id, value, total, None)
            server.send_sync("progress", {"value": value, "max": total, "prompt_id": prompt_id, "node": node_id})

        comfy.utils.set_progress_bar_global_hook(hook)

    # --- registry ---------------------------------------------------------------------------------------
    @property
    def node_class_mappings(self) -> dict[str, type]:
        return self._nodes.NODE_CLASS_MAPPINGS

    def pack_node_ids(self) -> list[str]:
        """Node ids that ComfyUI registered from this pack (by the module it recorded for each class)."""
        suffix = f"custom_nodes.{PACK_DIR_NAME}"
        return sorted(
            node_id
            for node_id, cls in self._nodes.NODE_CLASS_MAPPINGS.items()
            if getattr(cls, "RELATIVE_PYTHON_MODULE", None) == suffix
        )

    def object_info(self) -> dict[str, dict]:
        """What ComfyUI's ``GET /object_info`` returns, built in-process the way server.py builds it.

        V3 nodes describe themselves (``GET_NODE_INFO_V1``); V1 nodes are read from ``INPUT_TYPES`` and their
        class attributes. A node whose description fails is left out, as the server does (it only logs).
        """
        import folder_paths
        from comfy_api.internal import _ComfyNodeInternal

        nodes = self._nodes

        def node_info(node_class: str) -> dict:
            cls = nodes.NODE_CLASS_MAPPINGS[node_class]
            if issubclass(cls, _ComfyNodeInternal):
                return cls.GET_NODE_INFO_V1()
            types = cls.INPUT_TYPES()
            info = {
                "input": types,
                "input_order": {key: list(value.keys()) for key, value in cls.INPUT_TYPES().items()},
                "output": cls.RETURN_TYPES,
                "output_is_list": getattr(cls, "OUTPUT_IS_LIST", [False] * len(cls.RETURN_TYPES)),
                "output_name": getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES),
                "name": node_class,
                "display_name": nodes.NODE_DISPLAY_NAME_MAPPINGS.get(node_class, node_class),
                "description": getattr(cls, "DESCRIPTION", ""),
                "python_module": getattr(cls, "RELATIVE_PYTHON_MODULE", "nodes"),
                "category": getattr(cls, "CATEGORY", "sd"),
                "output_node": getattr(cls, "OUTPUT_NODE", False) is True,
            }
            return info

        out = {}
        with folder_paths.cache_helper:
            for name in nodes.NODE_CLASS_MAPPINGS:
                try:
                    out[name] = node_info(name)
                except Exception:  # as the server: one broken node must not hide the others
                    logging.exception("object_info: node %s failed to describe itself", name)
        return out

    @property
    def output_dir(self) -> Path:
        return Path(self.folder_paths.get_output_directory())

    @property
    def input_dir(self) -> Path:
        return Path(self.folder_paths.get_input_directory())

    def add_model_dir(self, folder_name: str, path: Path) -> None:
        self.folder_paths.add_model_folder_path(folder_name, str(path))
        self.folder_paths.filename_list_cache.pop(folder_name, None)

    # --- running graphs -----------------------------------------------------------------------------------
    def validate(self, prompt: dict) -> list[str]:
        prompt_id = str(uuid.uuid4())
        valid, error, outputs, node_errors = asyncio.run(self._execution.validate_prompt(prompt_id, prompt, None))
        if not valid:
            raise GraphError(f"graph failed validation: {error} {node_errors}", {"error": error, "nodes": node_errors})
        return outputs

    def run(self, prompt: dict, *, on_event=None) -> RunResult:
        """Validate then execute an API-format graph through ComfyUI's real PromptExecutor."""
        outputs = self.validate(prompt)
        prompt_id = str(uuid.uuid4())
        capture = _LogCapture()
        root = logging.getLogger()
        root.addHandler(capture)
        self.server.events = []
        self.server.on_event = on_event
        try:
            self.executor.execute(prompt, prompt_id, {"client_id": "ace-plus-tests"}, outputs)
        finally:
            root.removeHandler(capture)
            self.server.on_event = None
        events = list(self.executor.status_messages)
        if not self.executor.success:
            err = next((d for e, d in events if e == "execution_error"), {})
            raise GraphError(
                f"node {err.get('node_id')} ({err.get('node_type')}) failed: "
                f"{err.get('exception_type')}: {err.get('exception_message')}",
                err,
            )
        ui = {}
        for node_id, entry in self.executor.history_result.get("outputs", {}).items():
            ui[node_id] = entry
        return RunResult(prompt_id, ui, events, capture.messages())


_HOST: ComfyHost | None = None


def boot(base_dir: Path, *, extra_custom_nodes: tuple[Path, ...] = (), pack_dir: Path = REPO_ROOT) -> ComfyHost:
    """Boot ComfyUI once per process on the CPU with this pack in ``base_dir/custom_nodes``.

    ``extra_custom_nodes`` are further node folders/files linked beside the pack (test-only nodes).
    Raises ``RuntimeError`` when the pack (or any extra) fails to import through ComfyUI's loader:
    ComfyUI itself only logs that.
    """
    global _HOST
    if _HOST is not None:
        return _HOST

    comfy_dir = locate_comfyui()
    base_dir = Path(base_dir).resolve()
    custom_nodes = base_dir / "custom_nodes"
    custom_nodes.mkdir(parents=True, exist_ok=True)
    for sub in ("models", "input", "output", "temp", "user"):
        (base_dir / sub).mkdir(exist_ok=True)
    links = [(custom_nodes / PACK_DIR_NAME, Path(pack_dir).resolve())]
    links += [(custom_nodes / p.name, Path(p).resolve()) for p in extra_custom_nodes]
    for link, target in links:
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target, target_is_directory=target.is_dir())

    if str(comfy_dir) not in sys.path:
        sys.path.insert(0, str(comfy_dir))
    # As main.py does: claim the name `utils` for ComfyUI's utils package before comfy/utils.py can.
    import utils.install_util  # noqa: F401
    from comfy.cli_args import args

    args.cpu = True  # before anything imports comfy.model_management
    args.base_directory = str(base_dir)
    args.disable_auto_launch = True
    args.output_directory = str(base_dir / "output")
    args.input_directory = str(base_dir / "input")
    args.temp_directory = str(base_dir / "temp")

    import folder_paths

    folder_paths.set_output_directory(str(base_dir / "output"))
    folder_paths.set_input_directory(str(base_dir / "input"))
    folder_paths.set_temp_directory(str(base_dir / "temp"))
    folder_paths.set_user_directory(str(base_dir / "user"))
    if Path(folder_paths.folder_names_and_paths["custom_nodes"][0][0]).resolve() != custom_nodes:
        raise RuntimeError(
            "ComfyUI was already imported with another base directory; boot() must run before anything imports "
            "folder_paths"
        )

    import nodes

    capture = _LogCapture()
    root = logging.getLogger()
    root.addHandler(capture)
    try:
        asyncio.run(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False))
    finally:
        root.removeHandler(capture)
    logs = capture.messages()
    failed = [m for m in logs if "Cannot import" in m or "IMPORT FAILED" in m or "comfy_entrypoint" in m]
    ours = [m for m in failed if any(str(link) in m for link, _ in links)]
    if ours:
        raise RuntimeError("ComfyUI's loader failed to import a custom node:\n" + "\n".join(ours))
    loaded = {Path(p).resolve() for p in nodes.LOADED_MODULE_DIRS.values()}
    missing = [str(target) for _, target in links if target.resolve() not in loaded]
    if missing:
        raise RuntimeError(f"ComfyUI did not load {missing}; loader log:\n" + "\n".join(logs[-40:]))
    _HOST = ComfyHost(comfy_dir, base_dir, logs)
    return _HOST
