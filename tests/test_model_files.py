"""ace_plus_core.model_files: safetensors headers through safe_open, Flux layouts and LoRA adapters (no ComfyUI).

Oracles are written here from the safetensors format (u64 little-endian length, JSON header, data section), not
taken from the module under test.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest
import tiny_models as tm  # runner/ is on the path (conftest.py)
import torch
from safetensors.torch import save_file

from ace_plus_core import model_files as mf

REDOWNLOAD = "the file is truncated or corrupt: download or copy it again"
PICKLE = r"is a pickle file \(.*\); pickle files can run code; convert to \.safetensors"
# The safetensors dtype names of the torch dtypes the tests write.
ST_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.float8_e4m3fn: "F8_E4M3"}


def _write(path: Path, sd: dict, metadata: dict | None = None) -> Path:
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path), metadata=metadata)
    return path


def _parse(data: bytes) -> tuple[int, dict]:
    """The format by hand: header length and header JSON."""
    (n,) = struct.unpack("<Q", data[:8])
    return n, json.loads(data[8 : 8 + n])


def _flux(in_channels: int, prefix: str = "", fp8: bool = False) -> dict:
    cfg = tm.FluxConfig(hidden_size=32, num_heads=1, in_channels=in_channels, context_in_dim=8, vec_in_dim=8,
                        axes_dim=(4, 14, 14))
    sd = tm.flux_state_dict(cfg)
    if fp8:
        sd = tm.to_fp8(sd)
    return {prefix + k: v for k, v in sd.items()}


# --- reading good files ------------------------------------------------------------------------------


def test_header_matches_the_format(tmp_path):
    sd = _flux(112, fp8=True)
    path = _write(tmp_path / "m.safetensors", sd, {"format": "pt", "note": "x"})
    header = mf.read_header(path)
    n, raw = _parse(path.read_bytes())
    assert raw.pop("__metadata__") == header.metadata == {"format": "pt", "note": "x"}
    assert set(header.tensors) == set(raw) == set(sd)
    for k, entry in raw.items():
        assert header.tensors[k].dtype == entry["dtype"] == ST_DTYPES[sd[k].dtype]
        assert header.tensors[k].shape == tuple(entry["shape"]) == tuple(sd[k].shape)
    assert header.file_size == path.stat().st_size and header.name == "m.safetensors"
    counts: dict[str, int] = {}
    for v in sd.values():
        counts[ST_DTYPES[v.dtype]] = counts.get(ST_DTYPES[v.dtype], 0) + v.numel()
    assert header.dtype_counts() == counts


def test_header_length_that_looks_like_pickle_magic_is_still_safetensors(tmp_path):
    """A valid file whose header is 640 bytes starts with b"\\x80\\x02": only a refused file is sniffed."""
    text = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    raw = struct.pack("<Q", 640) + text.ljust(640) + b"\0" * 8
    assert raw.startswith(b"\x80\x02")
    good = tmp_path / "m.safetensors"
    good.write_bytes(raw)
    assert mf.read_header(good).tensors == {"w": mf.TensorInfo("F32", (2,))}
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(raw[:-1])
    with pytest.raises(ValueError, match=r"cut.safetensors is truncated: tensor 'w' ends at data byte 8 but the file "
                                         r"holds only 7 data bytes \(655 bytes in all\)"):
        mf.read_header(cut)


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
    assert info.img_in_features == features and info.layout == layout and info.looks_like is None
    assert info.describe().endswith("; weights F32")


def test_classify_fp8_and_dtypes(tmp_path):
    path = _write(tmp_path / "fft_fp8.safetensors", _flux(112, fp8=True))
    info = mf.classify_diffusion_model(mf.read_header(path))
    assert info.layout == mf.LAYOUT_FFT and set(info.dtype_counts) == {"F8_E4M3", "BF16"}
    assert info.describe() == ("fft_fp8.safetensors: ACE++ FFT (img_in 448: noise | UC latent | C latent | mask); "
                               "weights F8_E4M3, BF16")


def test_classify_diffusers_flux(tmp_path):
    sd = {"x_embedder.weight": torch.zeros(8, 384), "transformer_blocks.0.attn.to_q.weight": torch.zeros(8, 8)}
    info = mf.classify_diffusion_model(mf.read_header(_write(tmp_path / "d.safetensors", sd)))
    assert info.layout == mf.LAYOUT_FILL and info.img_in_features == 384


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
    assert info.img_in_features is None and info.layout is None
    assert looks in info.looks_like
    assert "not a Flux diffusion model" in info.describe()


# --- refusing bad files ------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", [".ckpt", ".pt", ".pth", ".bin", ".CKPT", ".pkl"])
def test_pickle_extensions_are_refused_without_reading(tmp_path, ext):
    path = tmp_path / f"model{ext}"  # never created: refused by name alone
    with pytest.raises(ValueError, match="pickle files can run code; convert to .safetensors") as e:
        mf.read_header(path, "unet_name")
    assert str(e.value).startswith(f"unet_name: model{ext} is a pickle file ({ext});")


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy_pickle"])
def test_pickle_renamed_to_safetensors_is_named(tmp_path, zipped):
    pt = tmp_path / "model.pt"
    torch.save({"img_in.weight": torch.zeros(2, 448)}, pt, _use_new_zipfile_serialization=zipped)
    renamed = tmp_path / "model.safetensors"
    pt.rename(renamed)
    with pytest.raises(ValueError, match=rf"^unet_name: model.safetensors {PICKLE}") as e:
        mf.read_header(renamed, "unet_name")
    assert "renamed .pt/.ckpt" in str(e.value)


def test_file_shorter_than_the_length_prefix(tmp_path):
    path = tmp_path / "tiny.safetensors"
    path.write_bytes(b"\x10\x00\x00")
    with pytest.raises(ValueError, match=rf"^file: tiny.safetensors is 3 bytes, shorter than the 8-byte length "
                                         rf"that starts a safetensors file; {REDOWNLOAD}"):
        mf.read_header(path)


def test_file_shorter_than_its_header(tmp_path):
    data = _write(tmp_path / "good.safetensors", _flux(112)).read_bytes()
    n, _ = _parse(data)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: 8 + n // 2])
    with pytest.raises(ValueError, match=rf"is {8 + n // 2} bytes but its header alone needs {8 + n}; {REDOWNLOAD}"):
        mf.read_header(cut)


@pytest.mark.parametrize("keep", [0.5, -1], ids=["half", "last_byte"])
def test_truncated_data_is_refused_and_the_tensor_named(tmp_path, keep):
    data = _write(tmp_path / "good.safetensors", _flux(112)).read_bytes()
    n, raw = _parse(data)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: int(len(data) * keep)] if keep == 0.5 else data[:keep])
    data_size = cut.stat().st_size - 8 - n
    with pytest.raises(ValueError, match=r"^unet_name: cut.safetensors is truncated: tensor ") as e:
        mf.read_header(cut, "unet_name")
    key, end, held = re.search(r"tensor '(.+)' ends at data byte (\d+) but the file holds only (\d+) data", str(e.value)
                               ).groups()
    assert int(end) == raw[key]["data_offsets"][1] > data_size == int(held)
    assert str(e.value).endswith(f"({cut.stat().st_size} bytes in all); {REDOWNLOAD}.")


def test_header_that_is_not_json(tmp_path):
    data = bytearray(_write(tmp_path / "good.safetensors", {"w": torch.zeros(4, 4)}).read_bytes())
    assert data[8:9] == b"{"
    data[8:9] = b"x"
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"garbage.safetensors has a header that is not JSON \(JSONDecodeError\); "
                                         rf"it is not a safetensors file or {REDOWNLOAD}"):
        mf.read_header(path)


def test_absurd_header_length(tmp_path):
    path = tmp_path / "renamed.safetensors"
    path.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\0" * 60)
    with pytest.raises(ValueError, match=r"does not start like a safetensors file \(it announces a 14064895815-byte "
                                         r"header, more than the 100000000 allowed\)"):
        mf.read_header(path)


def test_shape_that_does_not_fit_the_offsets(tmp_path):
    data = _write(tmp_path / "good.safetensors", {"w": torch.zeros(4, 4)}).read_bytes()
    assert data.count(b'"shape":[4,4]') == 1
    path = tmp_path / "bad.safetensors"
    path.write_bytes(data.replace(b'"shape":[4,4]', b'"shape":[4,2]'))
    with pytest.raises(ValueError, match=r"bad.safetensors is corrupt: tensor 'w' \(F32 \[4, 2\]\) should take 32 "
                                         r"bytes but its offsets span 64"):
        mf.read_header(path)


def test_other_refusals_quote_safetensors(tmp_path):
    """Trailing bytes after the data, or a dtype safetensors does not know: its own words are passed on."""
    data = _write(tmp_path / "good.safetensors", {"w": torch.zeros(4, 4)}).read_bytes()
    (tmp_path / "long.safetensors").write_bytes(data + b"\0" * 16)
    (tmp_path / "dtype.safetensors").write_bytes(data.replace(b'"dtype":"F32"', b'"dtype":"X32"'))
    for name in ("long.safetensors", "dtype.safetensors"):
        with pytest.raises(ValueError, match=rf"^unet_name: {name} is not a valid safetensors file \(safetensors "
                                             rf"says: .+\); {REDOWNLOAD}\.$"):
            mf.read_header(tmp_path / name, "unet_name")


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
    assert info.key_format == key_format and info.img_in_features == width and info.looks_like is None
    assert info.modules == len(tm.lora_state_dict(base, fmt="peft")) // 2


def test_lora_without_img_in_and_diffusers_keys(tmp_path):
    sd = {
        "transformer.transformer_blocks.0.attn.to_q.lora_A.weight": torch.zeros(4, 64),
        "transformer.transformer_blocks.0.attn.to_q.lora_B.weight": torch.zeros(64, 4),
        "transformer.x_embedder.lora_A.weight": torch.zeros(4, 448),
        "transformer.x_embedder.lora_B.weight": torch.zeros(64, 4),
    }
    info = mf.inspect_lora(mf.read_header(_write(tmp_path / "d.safetensors", sd)))
    assert info.key_format == "diffusers" and info.img_in_features == 448 and info.modules == 2
    only_blocks = {k: v for k, v in sd.items() if "x_embedder" not in k}
    info = mf.inspect_lora(mf.read_header(_write(tmp_path / "b.safetensors", only_blocks)))
    assert info.img_in_features is None and info.modules == 1


def test_sdxl_lora_is_named(tmp_path):
    path = _write(tmp_path / "sdxl.safetensors", tm.unmatched_lora_state_dict())
    info = mf.inspect_lora(mf.read_header(path))
    assert info.key_format == "kohya" and info.img_in_features is None
    assert "Stable Diffusion / SDXL UNet" in info.looks_like
