"""Python subprocesses for the tests that boot ComfyUI in a process of their own, forked from a server that has
imported the third-party packages ComfyUI imports (PRELOAD) once.

A test that boots ComfyUI in a fresh interpreter (the pack through ComfyUI's loader, a clash of node ids, the
registry archive, full-width models...) spent about 5 of its 9.5 CPU-seconds importing torch, torchvision (which
imports torch._dynamo), transformers and the like, the same modules each time. ``run`` gives such a test what
``subprocess.run([sys.executable, *args], capture_output=True, text=True, ...)`` gives (a CompletedProcess, or
TimeoutExpired), from a child of multiprocessing's fork server, started once per pytest process with PRELOAD
imported. The child gets what a fresh ``python -c CODE ARGS`` or ``python SCRIPT ARGS`` gets: its own ``__main__``,
``sys.argv``, the interpreter's own ``sys.path`` (the script's folder, or '' for -c, first), the working directory and
environment given, its stdout and stderr captured at the file descriptors. What differs is only that PRELOAD is
already in ``sys.modules`` (no test module, no ComfyUI or pack module is); nothing of ComfyUI runs before the child
runs its code. ACE_FRESH_INTERPRETERS=1 starts every one as a fresh interpreter instead.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
from pathlib import Path

# Imported once in the fork server: what a ComfyUI boot imports that costs most (python -X importtime on a boot
# through runner/comfy_host.py). Nothing of ComfyUI itself and nothing of the pack.
PRELOAD = ("torch", "torchvision", "transformers", "kornia", "aiohttp", "av", "spandrel", "numpy", "PIL.Image",
           "safetensors.torch", "yaml", "einops")

_context = None
_sys_path: dict[str, list[str]] = {}


def _fork_server():
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(list(PRELOAD))
    return _context


def _interpreter_path(env: dict) -> list[str]:
    """sys.path of a fresh interpreter in ``env`` without its first entry (the script's folder or '')."""
    key = json.dumps([env.get("PYTHONPATH"), env.get("PYTHONHOME"), env.get("PYTHONNOUSERSITE")])
    if key not in _sys_path:
        out = subprocess.run([sys.executable, "-c", "import json, sys; print(json.dumps(sys.path[1:]))"],
                             capture_output=True, text=True, env=env, check=True, cwd="/")
        _sys_path[key] = json.loads(out.stdout)
    return _sys_path[key]


def _child(args: list[str], cwd: str, env: dict, out: str, err: str, path: list[str]) -> None:
    """In the forked child: become ``python *args`` (see the module's docstring)."""
    import builtins
    import runpy
    import traceback
    import types

    for name, fd in ((out, 1), (err, 2)):
        f = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(f, fd)
        os.close(f)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    script = None if args[0] == "-c" else str(Path(args[0]).resolve())
    sys.argv = ["-c", *args[2:]] if script is None else list(args)
    sys.path[:] = ["" if script is None else str(Path(script).parent), *path]
    try:
        if script is None:
            main = types.ModuleType("__main__")
            main.__builtins__ = builtins
            sys.modules["__main__"] = main
            exec(compile(args[1], "<string>", "exec"), main.__dict__)  # noqa: S102 (what python -c does)
        else:
            runpy.run_path(script, run_name="__main__")
    except SystemExit:
        raise
    except BaseException:  # as the interpreter does: the traceback on stderr, exit status 1
        traceback.print_exc()
        sys.exit(1)


def run(args: list[str], *, cwd: str | Path | None = None, env: dict | None = None,
        timeout: float | None = None) -> subprocess.CompletedProcess:
    """``python *args`` (``["-c", code, *argv]`` or ``[script, *argv]``) with its output captured as text."""
    args = [str(a) for a in args]
    env = dict(os.environ if env is None else env)
    cwd = str(cwd or os.getcwd())
    if os.environ.get("ACE_FRESH_INTERPRETERS"):
        return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env,
                              timeout=timeout)
    with tempfile.TemporaryDirectory(prefix="ace-python-") as tmp:
        out, err = Path(tmp, "stdout"), Path(tmp, "stderr")
        proc = _fork_server().Process(target=_child, args=(args, cwd, env, str(out), str(err), _interpreter_path(env)))
        proc.start()
        proc.join(timeout)
        if proc.exitcode is None:
            proc.kill()
            proc.join()
            raise subprocess.TimeoutExpired([sys.executable, *args], timeout, _text(out), _text(err))
        return subprocess.CompletedProcess([sys.executable, *args], proc.exitcode, _text(out), _text(err))


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""
