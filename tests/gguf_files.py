"""TEST-ONLY: ComfyUI-GGUF as a user installs it, and GGUF copies of the synthetic Flux models.

The node pack is the unchanged tree in ../shared/third_party/ComfyUI-GGUF, linked into custom_nodes/. The files are
written with the ``gguf`` package from PyPI the way ComfyUI-GGUF reads image models (``loader.py``): architecture
"flux" in the metadata, the tensor names of the safetensors file, the logical shape taken from the GGUF dims.
Following its converter (``tools/convert.py``), 1-D and tiny tensors stay F32 (it dequantizes 1-D BF16 anyway).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Mapping
from pathlib import Path

import paths

GGUF_NODES = paths.third_party_dir() / "ComfyUI-GGUF"
QUANTIZATION_THRESHOLD = 1024  # tools/convert.py: tensors this small stay F32
# What ComfyUI-GGUF's llama.cpp patch (tools/lcpp.patch) leaves unquantized in a Flux model.
FLUX_KEEP = ("txt_in.", "img_in.", "time_in.", "vector_in.", "guidance_in.", "final_layer.")


def missing() -> str | None:
    """None when ComfyUI-GGUF and the gguf package are present, else what is missing."""
    if not (GGUF_NODES / "nodes.py").is_file():
        return f"ComfyUI-GGUF is not at {GGUF_NODES}"
    if importlib.util.find_spec("gguf") is None:
        return "the gguf package is not installed (pip install -e .[test])"
    return None


def custom_node_dirs() -> tuple[Path, ...]:
    """ComfyUI-GGUF for the test host's custom_nodes/, where it can import; the GGUF tests then need it."""
    return () if missing() else (GGUF_NODES,)


def write_flux_gguf(sd: Mapping, path: Path, qtype: str, keep: Iterable[str] = (), keep_type: str = "BF16") -> Path:
    """Write a Flux state dict as GGUF: 2-D weights quantized to ``qtype`` (e.g. "Q8_0", "Q4_0"), those whose name
    starts with one of ``keep`` stored as ``keep_type`` instead, 1-D and tiny tensors F32."""
    import gguf

    types = gguf.GGMLQuantizationType
    writer = gguf.GGUFWriter(path=None, arch="flux")
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for key, tensor in sd.items():
        data = tensor.float().numpy()
        if data.ndim == 1 or data.size <= QUANTIZATION_THRESHOLD:
            kind = types.F32
        elif any(key.startswith(k) for k in keep):
            kind = types[keep_type]
        else:
            kind = types[qtype]
        writer.add_tensor(key, gguf.quants.quantize(data, kind), raw_dtype=kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer.write_header_to_file(path=path)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def dequantized(sd: Mapping, qtype: str, keep: Iterable[str] = (), keep_type: str = "BF16") -> dict:
    """The weights a file of :func:`write_flux_gguf` holds, round-tripped by gguf's own numpy (de)quantizer (an
    independent reference for what ComfyUI-GGUF's torch dequantizer computes)."""
    import gguf
    import torch

    types = gguf.GGMLQuantizationType
    out = {}
    for key, tensor in sd.items():
        data = tensor.float().numpy()
        if data.ndim == 1 or data.size <= QUANTIZATION_THRESHOLD:
            out[key] = tensor.double()
            continue
        kind = types[keep_type] if any(key.startswith(k) for k in keep) else types[qtype]
        out[key] = torch.from_numpy(gguf.quants.dequantize(gguf.quants.quantize(data, kind), kind)).double()
    return out
