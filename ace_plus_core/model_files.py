"""Model files inspected without loading them: safetensors headers (``safe_open``, no tensor data; a refusal
becomes a message saying what is wrong and what to do), the Flux layout by the width of ``img_in`` (64 FLUX.1-dev,
384 FLUX.1-Fill, 448 ACE++ FFT), and which width a LoRA's ``img_in`` adapter expects."""

from __future__ import annotations

import json
import math
import os
import struct
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from safetensors import SafetensorError, safe_open

# safetensors' own limit on the JSON header (its reader refuses larger ones).
MAX_HEADER_BYTES = 100_000_000

PICKLE_EXTENSIONS = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pt2")
SAFETENSORS_EXTENSIONS = (".safetensors", ".sft")
# How a PyTorch zip (torch.save) or a pickle of protocol 2-5 starts.
PICKLE_MAGIC = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")

# Bytes per element of every safetensors dtype whose size is a whole number of bytes.
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "I16": 2, "U16": 2, "F16": 2,
               "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8}

# Flux models by img_in width (in_channels x 2 x 2), named by the canvas layout they take (ACE++ Canvas ``layout``:
# "lora" for FLUX.1-Fill, the base of the ACE++ LoRAs; "fft" for the ACE++ FFT model); FLUX.1-dev takes none.
LAYOUT_DEV = "dev"
LAYOUT_FILL = "lora"
LAYOUT_FFT = "fft"
LAYOUT_BY_FEATURES = {64: LAYOUT_DEV, 384: LAYOUT_FILL, 448: LAYOUT_FFT}
LAYOUT_NAMES = {
    LAYOUT_DEV: "FLUX.1-dev (img_in 64: noise only, no image conditioning)",
    LAYOUT_FILL: "FLUX.1-Fill (img_in 384: noise | image latent | mask)",
    LAYOUT_FFT: "ACE++ FFT (img_in 448: noise | UC latent | C latent | mask)",
}

# Where a checkpoint, a diffusion-model file or a diffusers file keeps img_in.
_IMG_IN_KEYS = tuple(p + n for p in ("model.diffusion_model.", "diffusion_model.", "")
                     for n in ("img_in.weight", "x_embedder.weight"))


# --- safetensors header -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorInfo:
    dtype: str  # safetensors' name: "F32", "BF16", "F8_E4M3" ...
    shape: tuple[int, ...]


@dataclass(frozen=True)
class SafetensorsHeader:
    path: str
    file_size: int
    tensors: Mapping[str, TensorInfo]
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    def dtype_counts(self) -> dict[str, int]:
        """safetensors dtype -> number of elements stored in it."""
        counts: Counter = Counter()
        for t in self.tensors.values():
            counts[t.dtype] += math.prod(t.shape)
        return dict(counts)


def _pickle_refusal(name: str, input_name: str, why: str) -> str:
    return (f"{input_name}: {name} is a pickle file ({why}); pickle files can run code; convert to .safetensors "
            "(or download the .safetensors release) and select that file instead.")


def check_not_pickle(path: str | os.PathLike, input_name: str = "file") -> None:
    """Refuse pickle-based formats by extension: loading them can run arbitrary code."""
    name = os.path.basename(str(path))
    if name.lower().endswith(PICKLE_EXTENSIONS):
        raise ValueError(_pickle_refusal(name, input_name, os.path.splitext(name)[1]))


def check_safetensors_name(path: str | os.PathLike, input_name: str = "file") -> None:
    """Refuse by extension anything but ``.safetensors`` / ``.sft``: only safetensors files are read by this pack
    (pickle formats can run code; other formats cannot be checked before loading)."""
    check_not_pickle(path, input_name)
    name = os.path.basename(str(path))
    if not name.lower().endswith(SAFETENSORS_EXTENSIONS):
        raise ValueError(
            f"{input_name}: {name} is not a .safetensors file; this pack reads only safetensors files (other "
            "formats can run code or cannot be checked before loading). Select the .safetensors release of the "
            "model or convert the file to .safetensors."
        )


def read_header(path: str | os.PathLike, input_name: str = "file") -> SafetensorsHeader:
    """Names, dtypes and shapes of a safetensors file's tensors, read by ``safe_open`` (which reads no tensor
    data and refuses a file its header does not describe exactly, e.g. a truncated one).

    Raises a ``ValueError`` naming the input, the file, the problem and the fix for pickle files (by extension, or
    by their first bytes when renamed), truncated files, corrupt headers and unreadable paths.
    """
    check_not_pickle(path, input_name)
    p = Path(path)
    try:
        with safe_open(str(p), framework="pt") as f:
            slices = {k: f.get_slice(k) for k in f.keys()}
            tensors = {k: TensorInfo(s.get_dtype(), tuple(s.get_shape())) for k, s in slices.items()}
            metadata = f.metadata() or {}
        file_size = p.stat().st_size
    except (SafetensorError, OSError) as e:
        raise ValueError(_refusal(p, input_name, e)) from e
    return SafetensorsHeader(str(p), file_size, tensors, metadata)


def _refusal(p: Path, input_name: str, error: Exception) -> str:
    """What is wrong with a file ``safe_open`` refused, found by reading its length prefix and JSON header."""
    name = f"{input_name}: {p.name}"
    redownload = "the file is truncated or corrupt: download or copy it again"
    try:
        size = p.stat().st_size
        with open(p, "rb") as fh:
            head = fh.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else None
            raw = fh.read(n) if n is not None and n <= MAX_HEADER_BYTES and 8 + n <= size else None
    except OSError as e:
        return f"{input_name}: cannot read {p.name}: {e}"
    framing, header = None, None
    if n is None:
        framing = f"is {size} bytes, shorter than the 8-byte length that starts a safetensors file; {redownload}."
    elif n > MAX_HEADER_BYTES:
        framing = (f"does not start like a safetensors file (it announces a {n}-byte header, more than the "
                   f"{MAX_HEADER_BYTES} allowed); it is corrupt or another format (.gguf renamed?). Use a "
                   ".safetensors file.")
    elif raw is None:
        framing = f"is {size} bytes but its header alone needs {8 + n}; {redownload}."
    else:
        try:
            header = json.loads(raw.decode("utf-8"))
        except ValueError as e:
            framing = (f"has a header that is not JSON ({e.__class__.__name__}); it is not a safetensors file or "
                       f"{redownload}.")
    if framing:
        if head.startswith(PICKLE_MAGIC):
            return _pickle_refusal(p.name, input_name, "it starts like a PyTorch zip or pickle: a renamed .pt/.ckpt?")
        return f"{name} {framing}"
    if not isinstance(header, dict):
        return f"{name} has a header that is not a JSON object; {redownload}."
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        return f"{name} has a malformed __metadata__ entry; {redownload}."
    data_size = size - 8 - n
    for key, entry in header.items():
        try:
            dtype, shape = str(entry["dtype"]), tuple(int(d) for d in entry["shape"])
            begin, end = (int(o) for o in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            return f"{name} has a malformed header entry for tensor {key!r}; {redownload}."
        if begin < 0 or end < begin or any(d < 0 for d in shape):
            return f"{name} has invalid offsets or shape for tensor {key!r}; {redownload}."
        if end > data_size:
            return (f"{name} is truncated: tensor {key!r} ends at data byte {end} but the file holds only "
                    f"{data_size} data bytes ({size} bytes in all); {redownload}.")
        nbytes = DTYPE_BYTES.get(dtype, 0) * math.prod(shape)
        if dtype in DTYPE_BYTES and end - begin != nbytes:
            return (f"{name} is corrupt: tensor {key!r} ({dtype} {list(shape)}) should take {nbytes} bytes but "
                    f"its offsets span {end - begin}; {redownload}.")
    return f"{name} is not a valid safetensors file (safetensors says: {error}); {redownload}."


# --- Diffusion models ---------------------------------------------------------------------------------------


# (what a state dict looks like, groups of key fragments: it matches when every fragment of one group is in some key)
_ARCHITECTURES = (
    ("a LoRA (load it with a LoRA loader)", [["lora_unet_"], ["lora_te"], ["lora_transformer_"], [".lora_A."],
                                             [".lora_down."]]),
    ("an SDXL UNet", [["input_blocks.", "middle_block.", "label_emb.0.0.weight"]]),
    ("a Stable Diffusion 1.x/2.x UNet", [["input_blocks.", "middle_block."]]),
    ("an SD3 MMDiT", [["joint_blocks."]]),
    ("a FLUX.2 transformer", [["double_stream_modulation"]]),
    ("a VAE", [["encoder.down.", "decoder.up."], ["taesd_encoder."], ["decoder.conv_in."]]),
    ("a text encoder (CLIP/T5)", [["text_model.encoder.layers."], ["encoder.block.", "shared.weight"]]),
    ("a diffusion transformer of another family", [["transformer_blocks."]]),
    ("an fp8-scaled model of an unknown family", [["scaled_fp8"]]),
)


def guess_architecture(keys: Iterable[str]) -> str | None:
    """A short human name for what a non-Flux state dict looks like (best effort), or None."""
    keys = list(keys)
    for name, groups in _ARCHITECTURES:
        if any(all(any(f in k for k in keys) for f in group) for group in groups):
            return name
    return None


@dataclass(frozen=True)
class DiffusionModelInfo:
    """What a diffusion-model file holds, read from its header."""

    name: str
    img_in_features: int | None  # None when the file has no img_in weight
    layout: str | None  # LAYOUT_DEV / LAYOUT_FILL / LAYOUT_FFT, None when img_in is absent or of another width
    dtype_counts: Mapping[str, int]
    looks_like: str | None  # for non-Flux files

    def describe(self) -> str:
        if self.layout is not None:
            what = LAYOUT_NAMES[self.layout]
        elif self.img_in_features is not None:
            what = f"a Flux-like model whose img_in takes {self.img_in_features} features"
        else:
            what = f"not a Flux diffusion model ({self.looks_like or 'no img_in weight found'})"
        dtypes = ", ".join(sorted(self.dtype_counts, key=lambda d: -self.dtype_counts[d]))
        return f"{self.name}: {what}; weights {dtypes or 'none'}"


def classify_diffusion_model(header: SafetensorsHeader) -> DiffusionModelInfo:
    key = next((k for k in _IMG_IN_KEYS if k in header.tensors and len(header.tensors[k].shape) == 2), None)
    features = header.tensors[key].shape[1] if key is not None else None
    return DiffusionModelInfo(
        name=header.name,
        img_in_features=features,
        layout=LAYOUT_BY_FEATURES.get(features),
        dtype_counts=header.dtype_counts(),
        looks_like=None if key is not None else guess_architecture(header.tensors),
    )


# --- LoRAs --------------------------------------------------------------------------------------------------

# The down/A matrix ([rank, in_features]) in every key layout ComfyUI's LoRA loader reads.
_DOWN_SUFFIXES = (".lora_down.weight", ".lora_A.weight", ".lora_A.default.weight", ".lora.down.weight",
                  "_lora.down.weight", ".lora_linear_layer.down.weight", ".lora_A")
_IMG_IN_MODULES = ("img_in", "x_embedder")


@dataclass(frozen=True)
class LoraInfo:
    name: str
    key_format: str  # "kohya", "comfyui" (diffusion_model.*.lora_A/B), "diffusers", "peft", "mixed", "unknown"
    modules: int  # number of adapted modules (down/A matrices)
    img_in_features: int | None  # in-features of the img_in adapter, None when img_in is not adapted
    looks_like: str | None  # for LoRAs that are not for Flux


def _module_of(key: str) -> str | None:
    for suffix in _DOWN_SUFFIXES:
        if key.endswith(suffix):
            return key[: -len(suffix)]
    return None


def _lora_key_format(modules: list[str]) -> str:
    if not modules:
        return "unknown"
    if all(m.startswith(("lora_unet_", "lora_transformer_", "lora_te")) for m in modules):
        return "kohya"
    if all(m.startswith("diffusion_model.") for m in modules):
        return "comfyui"
    if all(m.startswith(("transformer.", "unet.")) for m in modules):
        return "diffusers"
    if all(m.startswith("base_model.model.") for m in modules):
        return "peft"
    return "mixed"


#: Fragments of the key names of every adapter format ComfyUI's LoRA loader reads (LoRA in its key layouts, LoHa,
#: LoKr, GLoRA, OFT/BOFT, full diffs, set/reshape patches, DoRA scales).
ADAPTER_KEY_MARKERS = ("lora", "hada_", "lokr_", ".diff", "oft_", ".alpha", "dora_scale", "reshape_weight",
                       "set_weight", ".a1.", ".a2.", ".b1.", ".b2.", "w_norm", "b_norm")


def has_adapter_keys(header: SafetensorsHeader) -> bool:
    """Whether any tensor name looks like an adapter (LoRA, LoHa, LoKr, diff ...), not a full model's weight."""
    return any(marker in key.lower() for key in header.tensors for marker in ADAPTER_KEY_MARKERS)


def inspect_lora(header: SafetensorsHeader) -> LoraInfo:
    """Key format of a LoRA and the width its ``img_in`` adapter expects (384 Fill, 448 FFT)."""
    modules = {m: info for key, info in header.tensors.items() if (m := _module_of(key)) is not None}
    img_in = None
    for module, info in modules.items():
        flat = module.replace(".", "_")
        if len(info.shape) >= 2 and any(flat == m or flat.endswith(f"_{m}") for m in _IMG_IN_MODULES):
            img_in = info.shape[1]
            break
    names = sorted(modules)
    unet = ("input_blocks", "output_blocks", "middle_block", "down_blocks", "up_blocks", "mid_block")
    flux = ("double_blocks", "single_blocks", "img_in", "x_embedder", "transformer_blocks")
    looks_like = None
    if any(s in m for m in names for s in unet):
        looks_like = "a LoRA for a Stable Diffusion / SDXL UNet"
    elif names and all(m.startswith("lora_te") for m in names):
        looks_like = "a text-encoder-only LoRA"
    elif names and not any(s in m for m in names for s in flux):
        looks_like = "a LoRA for another architecture"
    return LoraInfo(header.name, _lora_key_format(names), len(modules), img_in, looks_like)


def check_canvas_fits_model(wanted: str, canvas_layouts: Iterable[str]) -> str:
    """``wanted`` (the model's layout) when every canvas was built for it; else a ``ValueError`` naming both
    (instead of the sampler's "mat1 and mat2 shapes cannot be multiplied")."""
    got = set(canvas_layouts)
    if got != {wanted}:
        shown = "/".join(sorted(got))
        other = "ACE++ FFT model" if shown == "fft" else "FLUX.1-Fill model with an ACE++ LoRA"
        raise ValueError(f"model is {LAYOUT_NAMES[wanted]} but the connected canvas was built with layout '{shown}'; "
                         f"set ACE++ Canvas layout to '{wanted}', or connect the {other} instead.")
    return wanted
