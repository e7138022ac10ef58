"""The model nodes at full width (hidden 3072) on ComfyUI's own, unpatched Flux detection.

Everything runs in one subprocess (tests/full_width_models_check.py, started through tests/python_subprocess.py)
that boots ComfyUI through runner/comfy_host.py without the test-only detection patch this test session installs,
loads one model at a time and writes what it observes as JSON; the assertions are here. About 45 s of CPU and 4 GB
of RAM at its peak.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import python_subprocess
from conftest import model_cache_dir
from full_width_models_check import FFT, FFT_FP8, FULL_WIDTH_LOADS
from tolerances import assert_catches, sum_bound

HELPER = Path(__file__).resolve().parent / "full_width_models_check.py"

# On the CPU (no bf16): storage per (file, weight_dtype); compute is fp32 throughout. The helper loads the pairs of
# FULL_WIDTH_LOADS; test_host_models.py runs all of them at tiny width.
EXPECTED_STORAGE = {
    (FFT, "default"): "torch.float32",  # the bf16 file, expanded as ComfyUI does without bf16
    (FFT, "fp8_e4m3fn"): "torch.float8_e4m3fn",
    (FFT, "fp8_e4m3fn_fast"): "torch.float8_e4m3fn",
    (FFT, "fp8_e5m2"): "torch.float8_e5m2",
    (FFT_FP8, "default"): "torch.float8_e4m3fn",  # kept fp8 (ComfyUI alone would expand it to fp32: 4x the memory)
    (FFT_FP8, "fp8_e4m3fn"): "torch.float8_e4m3fn",
    (FFT_FP8, "fp8_e4m3fn_fast"): "torch.float8_e4m3fn",
    (FFT_FP8, "fp8_e5m2"): "torch.float8_e5m2",
}


@pytest.fixture(scope="module")
def facts(request, tmp_path_factory) -> dict:
    """What the helper observes, for the cases of the tests selected in this session (tools/test.sh runs fewer on
    the extra releases)."""
    import comfy_host
    import tiny_models as factory

    models = model_cache_dir()
    demo = comfy_host.default_host_dir() / "demo-models"  # the headless runner's synthetic set
    factory.build_model_set(models, full=True)
    factory.build_model_set(demo, demo=True)
    work = tmp_path_factory.mktemp("full_width")
    out = work / "facts.json"
    cases = [item.callspec.params for item in request.session.items if item.module is request.module
             and hasattr(item, "callspec")]
    selected = {"loads": [[c["unet"], c["weight_dtype"]] for c in cases if "unet" in c],
                "lora": [c["name"] for c in cases if "name" in c]}
    proc = python_subprocess.run([HELPER, out, work / "base", models, demo, json.dumps(selected)], timeout=900)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-5000:])
    return json.loads(out.read_text())


def test_the_subprocess_uses_comfyuis_own_detection(facts):
    detection = facts["detection"]
    assert detection["module"] == "comfy.model_detection", detection
    assert Path(detection["file"]).as_posix().endswith("comfy/model_detection.py"), detection
    assert not detection["patch_imported"], detection


@pytest.mark.parametrize("unet, weight_dtype", FULL_WIDTH_LOADS)
def test_fft_loader_at_full_width(facts, unet, weight_dtype):
    fact = facts["loads"][f"ACEPlusLoader {unet} {weight_dtype}"]
    assert (fact["layout"], fact["in_channels"], fact["img_in_features"]) == ("fft", 112, 448), fact
    assert fact["storage"] == EXPECTED_STORAGE[unet, weight_dtype], fact
    assert fact["compute"] == "torch.float32", fact
    assert fact["fp8_optimizations"] is (weight_dtype == "fp8_e4m3fn_fast"), fact
    assert fact["finite"], fact


@pytest.mark.parametrize("name, layout, in_channels", [("fill", "lora", 96), ("fft", "fft", 112),
                                                       ("demo_fill", "lora", 96)], ids=["fill", "fft", "demo_fill"])
def test_prepare_and_lora_at_full_width(facts, name, layout, in_channels):
    """UNETLoader -> ACE++ Prepare Flux Model -> ACE++ LoRA Loader. ``demo_fill`` is the runner's synthetic Fill
    model with the LoRA its README job applies. The loaded img_in weight equals W + B @ A recomputed in float64
    from the files, and one model call changes by far more than rounding between strength 0 and 1."""
    fact = facts["lora"][name]
    prepared = fact["prepared"]
    assert (prepared["layout"], prepared["in_channels"], prepared["img_in_features"]) == (
        layout, in_channels, in_channels * 4), fact
    assert prepared["storage"] == fact["compute"] == "torch.float32", fact
    assert not fact["lora_log"], fact  # every LoRA key matched a weight of the model
    tol = assert_catches(sum_bound(fact["img_in_terms"], magnitude=fact["img_in_magnitude"]))
    assert fact["img_in_max_delta"] > 0.05 and fact["img_in_max_error"] < tol, (tol, fact)
    assert fact["relative_change"] > 0.1 and fact["finite"], fact
