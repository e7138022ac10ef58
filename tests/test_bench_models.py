"""bench/bench_models_gpu.py keeps working: its --dry-run (tiny widths, CPU) loads both layouts and runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import python_subprocess

REPO = Path(__file__).resolve().parent.parent


def test_bench_models_dry_run(tmp_path):
    pytest.importorskip("comfy_host").locate_comfyui()  # needs a ComfyUI source tree (tools/setup_host.sh)
    out = tmp_path / "rows.json"
    cmd = [REPO / "bench" / "bench_models_gpu.py", "--dry-run", "--runs", "1", "--dtypes", "bf16", "fp8_e4m3fn",
           "--json", out]
    result = python_subprocess.run(cmd, timeout=300, cwd="/")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert {(r["layout"], r["weight_dtype"]) for r in rows} == {
        (layout, dt) for layout in ("fill", "fft") for dt in ("bf16", "fp8_e4m3fn")
    }
    assert all(r["finite"] and r["compute"] in ("bfloat16", "float32") for r in rows)
    assert {r["weight_storage"] for r in rows if r["weight_dtype"] == "fp8_e4m3fn"} == {"float8_e4m3fn"}
    assert "FFT/Fill time per step" in result.stdout
