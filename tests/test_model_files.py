"""ace_plus_core.model_files: safetensors headers read by hand, Flux layouts and LoRA adapters (no ComfyUI)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import tiny_models as tm  # tools/ is on the path (conftest.py)
import torch
from safetensors.torch import save_file

from ace_plus_core import model_files as mf


def _write(path: Path, sd: dict, metadata: dict | None = None) -> Path:
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path), metadata=metadata)
    return path


def _flux(in_channels: int, prefix: str = "", fp8: bool = False) -> dict:
    cfg = tm.FluxConfig(hidden_size=32, num_heads=1, in_channels=in_channels, context_in_dim=8, vec_in_dim=8,
                        axes_dim=(4, 14, 14))
    sd = tm.flux_state_dict(cfg)
    if fp8:
        sd = tm.to_fp8(sd)
    return {prefix + k: v for k, v in sd.items()}


def test_header_matches_safetensors_own_reader(tmp_path):
    from safetensors import safe_open

    path = _write(tmp_path / "m.safetensors", _flux(112, fp8=True), {"format": "pt"})
    header = mf.read_header(path)
    with safe_open(str(path), "pt") as f:
        assert set(header.tensors) == set(f.keys())
        for k in f.keys():
            assert header.tensors[k].shape == tuple(f.get_slice(k).get_shape())
            assert header.tensors[k].dtype == f.get_slice(k).get_dtype()
        assert header.metadata == f.metadata()
    assert header.file_size == path.stat().st_size


@pytest.mark.parametrize(
    "in_channels, prefix, layout, features",
    [
        (96, "", mf.LAYOUT_FILL, 384),
        (112, "", mf.LAYOUT_FFT, 448),
        (16, "", mf.LAYOUT_DEV, 64),
        (112, "model.diffusion_model.", mf.LAYOUT_FFT, 448),
        (96, "diffusion_model.", mf.LAYOUT_FILL, 384),
        (24, "", None, 96),
    ],
)
def test_classify_flux_layouts(tmp_path, in_channels, prefix, layout, features):
    path = _write(tmp_path / "m.safetensors", _flux(in_channels, prefix))
    info = mf.classify_diffusion_model(mf.read_header(path))
    assert info.is_flux and info.img_in_features == features and info.layout == layout
    assert info.img_in_key == prefix + "img_in.weight"
    assert not info.fp8 and info.main_dtype == "F32"


def test_classify_fp8_and_dtypes(tmp_path):
    path = _write(tmp_path / "fft_fp8.safetensors", _flux(112, fp8=True))
    info = mf.classify_diffusion_model(mf.read_header(path))
    assert info.layout == mf.LAYOUT_FFT and info.fp8
    assert set(info.dtype_counts) == {"F8_E4M3", "BF16"} and info.main_dtype == "F8_E4M3"
    assert "ACE++ FFT" in info.describe() and "F8_E4M3" in info.describe()


def test_classify_diffusers_flux(tmp_path):
    sd = {"x_embedder.weight": torch.zeros(8, 384), "transformer_blocks.0.attn.to_q.weight": torch.zeros(8, 8)}
    info = mf.classify_diffusion_model(mf.read_header(_write(tmp_path / "d.safetensors", sd)))
    assert info.layout == mf.LAYOUT_FILL and info.img_in_key == "x_embedder.weight"


@pytest.mark.parametrize(
    "keys, looks",
    [
        (["input_blocks.0.0.weight", "middle_block.1.norm.weight", "label_emb.0.0.weight"], "SDXL UNet"),
        (["model.diffusion_model.input_blocks.0.0.weight", "model.diffusion_model.middle_block.0.weight"], "1.x/2.x"),
        (["encoder.down.0.block.0.conv1.weight", "decoder.up.0.block.0.conv1.weight"], "VAE"),
        (["text_model.encoder.layers.0.mlp.fc1.weight"], "text encoder"),
        (["diffusion_model.double_blocks.0.img_attn.qkv.lora_A.weight"], "LoRA"),
        (["joint_blocks.0.x_block.attn.qkv.weight"], "SD3"),
    ],
)
def test_classify_non_flux_names_what_it_looks_like(tmp_path, keys, looks):
    sd = {k: torch.zeros(2, 2) for k in keys}
    info = mf.classify_diffusion_model(mf.read_header(_write(tmp_path / "x.safetensors", sd)))
    assert not info.is_flux and info.layout is None
    assert looks in info.looks_like
    assert "not a Flux diffusion model" in info.describe()


@pytest.mark.parametrize("ext", [".ckpt", ".pt", ".pth", ".bin", ".CKPT", ".pkl"])
def test_pickle_extensions_are_refused_without_reading(tmp_path, ext):
    path = tmp_path / f"model{ext}"
    path.write_bytes(b"\x80\x04not even read")
    with pytest.raises(ValueError, match="pickle files can run code; convert to .safetensors") as e:
        mf.read_header(path, "unet_name")
    assert str(e.value).startswith("unet_name: ") and path.name in str(e.value)


def test_file_shorter_than_the_length_prefix(tmp_path):
    path = tmp_path / "tiny.safetensors"
    path.write_bytes(b"\x10\x00\x00")
    with pytest.raises(ValueError, match="3 bytes, shorter than the 8-byte length"):
        mf.read_header(path)


def test_file_shorter_than_its_header(tmp_path):
    good = _write(tmp_path / "good.safetensors", _flux(112))
    data = good.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: 8 + n // 2])
    with pytest.raises(ValueError, match=rf"its header alone needs {8 + n}.*truncated or corrupt"):
        mf.read_header(cut)


def test_truncated_data_is_detected_from_the_offsets(tmp_path):
    good = _write(tmp_path / "good.safetensors", _flux(112))
    data = good.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"is truncated: tensor .* ends at data byte \d+ but the file holds"):
        mf.read_header(cut, "unet_name")


def test_header_that_is_not_json(tmp_path):
    path = tmp_path / "garbage.safetensors"
    junk = b"this is not json at all {"
    path.write_bytes(struct.pack("<Q", len(junk)) + junk + b"\x00" * 64)
    with pytest.raises(ValueError, match="header that is not JSON"):
        mf.read_header(path)


def test_absurd_header_length(tmp_path):
    path = tmp_path / "renamed.safetensors"
    path.write_bytes(b"PK\x03\x04" + b"\xff" * 60)  # a zip (e.g. a renamed .pt) read as a length
    with pytest.raises(ValueError, match="does not start like a safetensors file"):
        mf.read_header(path)


def test_inconsistent_offsets_are_corrupt(tmp_path):
    header = {"w": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 32]}}
    raw = json.dumps(header).encode()
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\x00" * 64)
    with pytest.raises(ValueError, match=r"should take 64 bytes but its offsets span 32"):
        mf.read_header(path)


def test_header_bytes_read_are_bounded(tmp_path):
    path = _write(tmp_path / "m.safetensors", _flux(112))
    with pytest.raises(ValueError, match="does not start like"):
        mf.read_header(path, max_header_bytes=16)


# --- LoRAs -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "in_channels, fmt, key_format, width",
    [
        (96, "peft", "comfyui", 384),
        (96, "kohya", "kohya", 384),
        (112, "peft", "comfyui", 448),
        (112, "kohya", "kohya", 448),
    ],
)
def test_lora_img_in_width_and_format(tmp_path, in_channels, fmt, key_format, width):
    base = tm.TINY.with_in_channels(in_channels)
    path = _write(tmp_path / "l.safetensors", tm.lora_state_dict(base, fmt=fmt))
    info = mf.inspect_lora(mf.read_header(path))
    assert info.key_format == key_format and info.img_in_features == width
    assert info.expected_layout == mf.layout_for_features(width) and info.looks_like is None
    assert info.modules == len(tm.lora_state_dict(base, fmt="peft")) // 2


def test_lora_without_img_in_and_diffusers_keys(tmp_path):
    sd = {
        "transformer.transformer_blocks.0.attn.to_q.lora_A.weight": torch.zeros(4, 64),
        "transformer.transformer_blocks.0.attn.to_q.lora_B.weight": torch.zeros(64, 4),
        "transformer.x_embedder.lora_A.weight": torch.zeros(4, 448),
        "transformer.x_embedder.lora_B.weight": torch.zeros(64, 4),
    }
    info = mf.inspect_lora(mf.read_header(_write(tmp_path / "d.safetensors", sd)))
    assert info.key_format == "diffusers" and info.img_in_features == 448 and info.expected_layout == mf.LAYOUT_FFT
    only_blocks = {k: v for k, v in sd.items() if "x_embedder" not in k}
    info = mf.inspect_lora(mf.read_header(_write(tmp_path / "b.safetensors", only_blocks)))
    assert info.img_in_features is None and "does not adapt img_in" in info.describe()


def test_sdxl_lora_is_named(tmp_path):
    path = _write(tmp_path / "sdxl.safetensors", tm.unmatched_lora_state_dict())
    info = mf.inspect_lora(mf.read_header(path))
    assert info.key_format == "kohya" and info.img_in_features is None
    assert "Stable Diffusion / SDXL UNet" in info.looks_like
