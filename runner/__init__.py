"""The headless runner: runs a ComfyUI workflow (UI or API format) through the real ComfyUI executor in-process, or
on running servers over HTTP, with synthetic weights when no real ones are given. Not imported by the node pack.

``run_workflow.py`` (the command line), ``workflow_convert.py`` (UI -> API format, as the frontend's "Queue"),
``comfy_host.py`` (boots ComfyUI in-process and loads this pack through its own loader; the tests use it too),
``tiny_models.py`` (synthetic model files in ComfyUI's real key layouts).
"""
