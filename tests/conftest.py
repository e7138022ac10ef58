"""Test fixtures: a real ComfyUI booted in-process on the CPU, with this pack in its custom_nodes/.

Tests that only need ``ace_plus_core`` do not touch these fixtures and never import ComfyUI.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
# Appended, not prepended: the repo's own `nodes/` package must never shadow ComfyUI's `nodes.py`.
for p in (REPO / "runner", REPO):
    if str(p) not in sys.path:
        sys.path.append(str(p))

TEST_NODES = Path(__file__).resolve().parent / "comfy_test_nodes"
MODEL_FOLDERS = ("diffusion_models", "loras", "vae", "vae_approx", "text_encoders", "clip_vision", "style_models")


def model_cache_dir() -> Path:
    """Synthetic models are cached beside the host (reused across runs; runner/tiny_models.py keeps a manifest)."""
    env = os.environ.get("ACE_TEST_MODELS")
    if env:
        return Path(env)
    import comfy_host

    return comfy_host.default_host_dir() / "test-models"


@pytest.fixture(scope="session")
def comfy_host(tmp_path_factory):
    """ComfyUI booted once per test session (it keeps process-wide state), the pack loaded by its own loader.

    ComfyUI-GGUF (../shared/third_party, unchanged) is linked in as a user installs it, where it and its ``gguf``
    package are present (tests/gguf_files.py). The tiny test models need the TEST-ONLY detection patch in tests/tiny_flux_detection.py (ComfyUI hard-codes
    24 heads x 128 for Flux); it leaves full-width models untouched.
    """
    import comfy_host as host_module
    import gguf_files

    extra = (TEST_NODES, *gguf_files.custom_node_dirs())
    host = host_module.boot(tmp_path_factory.mktemp("comfy_base"), extra_custom_nodes=extra)
    import tiny_flux_detection

    tiny_flux_detection.install()
    return host


@pytest.fixture(scope="session")
def tiny_models(comfy_host) -> dict[str, Path]:
    """The synthetic model set (runner/tiny_models.py), registered in ComfyUI's model folders."""
    import tiny_models as factory

    paths = factory.build_model_set(model_cache_dir(), full=False)
    root = model_cache_dir()
    for folder in MODEL_FOLDERS:
        comfy_host.add_model_dir(folder, root / folder)
    return paths


@pytest.fixture(scope="session")
def full_models(tiny_models) -> dict[str, Path]:
    """Adds the full-width (hidden 3072) models that pass ComfyUI's unpatched detection (~0.8 GB each)."""
    import tiny_models as factory

    paths = factory.build_model_set(model_cache_dir(), full=True)
    return paths


@pytest.fixture
def input_image(comfy_host):
    """Writes an RGBA PNG into ComfyUI's input folder; alpha 0 marks the mask (LoadImage's MASK = 1 - alpha)."""
    from PIL import Image

    def make(name: str, width: int, height: int, hole: tuple[int, int, int, int] | None = None, seed: int = 0):
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[0:height, 0:width]
        rgb = np.stack([xx / max(width - 1, 1), yy / max(height - 1, 1), 0.5 + 0 * xx], -1)
        rgb = np.clip(rgb + rng.normal(0, 0.05, rgb.shape), 0, 1)
        alpha = np.ones((height, width))
        if hole is not None:
            top, left, h, w = hole
            alpha[top : top + h, left : left + w] = 0
        data = (np.concatenate([rgb, alpha[..., None]], -1) * 255).round().astype(np.uint8)
        Image.fromarray(data, "RGBA").save(comfy_host.input_dir / name)
        return name

    return make


# In CI a missing independent reference (Chromium, the official workflows in ../shared, diffusers, OpenCV, the
# ComfyUI source tree) must fail the run, not skip silently. Only these skips are legitimate there:
CI_ALLOWED_SKIPS = (
    "needs a CUDA device",  # GPU-only checks; CI has no GPU (bench/bench_models_gpu.py covers them on a device)
    "the examples are generated with ComfyUI",  # byte equality only holds on the pinned ComfyUI (COMFYUI_PATH)
)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not os.environ.get("CI") or not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if not any(allowed in reason for allowed in CI_ALLOWED_SKIPS):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where every reference must be present: {reason}"


@pytest.fixture
def no_network(monkeypatch):
    """Every socket connection and name lookup fails (and is recorded): the code under test must not go online."""
    import socket

    attempts: list[tuple] = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    with pytest.raises(OSError, match="offline"):
        socket.create_connection(("example.com", 80))
    attempts.clear()
    return attempts


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """pytest-xdist: the fuzz case counts of a finished worker, added to the summary printed here."""
    tallies = getattr(node, "workeroutput", {}).get("ace_plus_fuzz_tallies")
    if tallies:
        import test_fuzz_harness

        test_fuzz_harness.merge_worker_tallies(node.config, tallies)


# Run order: the fast, decisive checks of what each node returns come first, so that a feature broken at its node
# fails within the first two minutes of `bash tools/test.sh` (ARCHITECTURE.md, "Tests"). An entry is a file or
# "file::test prefix".
FIRST = (
    "test_stitch_proofs.py::test_stitch_node",  # the mask, grow, feather and colour match reach the blend
    "test_host_graphs.py::test_ace_lora_loader_node",  # the LoRA at its strength
    "test_model_input_layout.py::test_canvas_conditioning",  # UC, C and the mask where the model reads them
    "test_nodes_canvas_graphs.py::test_official_lora_wiring",  # SLICE_W at the true boundary
)
# Then the other files, longest first (worker-seconds of the main run on 2 cores, measured together): pytest-xdist
# (tools/test.sh: --no-loadscope-reorder, whole files per worker) hands each worker the next file as it finishes one,
# so the run ends on short files instead of one worker finishing a long file alone. The extra releases' runs use the
# same order (their longest: full-width models, the runner's CLI and HTTP servers, the examples).
LONGEST_FIRST = (
    "test_browser.py",  # ~120 s: the pinned frontend's pass, then three templates opened and run on its server
    "test_browser_latest.py",  # ~90 s
    "test_host_models_full.py",  # ~45 s
    "test_runner_cli.py",  # ~30 s (~45 s on 0.33.0)
    "test_examples.py",  # ~35 s
    "test_nodes_canvas_graphs.py",
    "test_fuzz_nodes.py",
    "test_runner_http.py",
    "test_clash.py",
    "test_fuzz_core.py",
    "test_host_loader.py",
    "test_official_workflows.py",  # ~25 s
    "test_browser_first_translated.py",
    "test_host_models.py",
    "test_robustness.py",
    "test_stitch_proofs.py",
    "test_packaging.py",
    "test_bench_models.py",
    "test_canvas_parity.py",  # ~10 s
)


def pytest_collection_modifyitems(config, items):
    def rank(item) -> tuple[int, int]:
        name = item.nodeid.rsplit("/", 1)[-1]  # "test_x.py::test_y[param]"
        file = name.split("::")[0]
        for i, entry in enumerate(FIRST):
            if name.startswith(entry):
                return 0, i
        return (1, LONGEST_FIRST.index(file)) if file in LONGEST_FIRST else (2, 0)

    items.sort(key=rank)  # stable: each file's own order is kept
