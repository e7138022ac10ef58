"""Synthetic model files in ComfyUI's real key layouts, for tests (no downloads, no ComfyUI import).

Everything here is written from reading ComfyUI 0.3.75's model code (``comfy/ldm/flux``,
``comfy/model_detection.py``, ``comfy/taesd/taesd.py``, ``comfy/clip_model.py``, ``comfy/lora.py``);
nothing instantiates ComfyUI classes, so a test that loads these files through ComfyUI's own loaders
is an independent check of both sides.

What it makes:

* Flux transformers (``flux_state_dict``) in the diffusion-model layout UNETLoader files have (no
  ``model.diffusion_model.`` prefix). ``in_channels`` is per latent channel, as ComfyUI counts it:
  16 (FLUX.1-dev, ``img_in`` 64 wide), 96 (FLUX.1-Fill, 384 wide), 112 (ACE++ FFT, 448 wide).
  ``TINY`` needs a detection patch in ComfyUI (see ``FluxConfig.comfy_unet_config``);
  ``FULL_DETECTABLE`` passes ComfyUI's unpatched detection.
* ``to_fp8``: an fp8 copy like ``ace_plus_fft_fp8.safetensors``.
* LoRAs (``lora_state_dict``) in kohya and ComfyUI/PEFT key formats, plus one that matches nothing.
* A 16-channel TAESD VAE (``taesd_vae_state_dict``) that is a near-identity autoencoder
  (8x8 box-average down, nearest up), so decoded images resemble what was encoded.
* A random CLIP-L text encoder (``clip_l_state_dict``).
* A SigLIP vision tower (``siglip_vision_state_dict``, ``TINY_SIGLIP``) and a FLUX.1-Redux projector
  (``redux_state_dict``) in the layouts of ``sigclip_vision_patch14_384.safetensors`` and
  ``flux1-redux-dev.safetensors``, narrow, for the Redux workflows.

CLI::

    python runner/tiny_models.py --out DIR [--full] [--force]
"""

import argparse
import contextlib
import dataclasses
import fnmatch
import json
import math
import os
import sys
import time
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

__all__ = [
    "FACTORY_VERSION",
    "FluxConfig",
    "TINY",
    "FULL_DETECTABLE",
    "DEMO",
    "IN_CHANNELS_DEV",
    "IN_CHANNELS_FILL",
    "IN_CHANNELS_FFT",
    "derived_axes_dim",
    "flux_param_shapes",
    "flux_state_dict",
    "to_fp8",
    "DEFAULT_LORA_TARGETS",
    "FULL_LORA_TARGETS",
    "LORA_STORAGE_DTYPES",
    "lora_state_dict",
    "unmatched_lora_state_dict",
    "taesd_vae_state_dict",
    "split_taesd",
    "clip_l_state_dict",
    "SiglipVisionConfig",
    "TINY_SIGLIP",
    "siglip_vision_state_dict",
    "redux_state_dict",
    "write_safetensors",
    "build_model_set",
    "main",
]

# Bump whenever any generated tensor or file name changes: cached model sets are then rebuilt.
FACTORY_VERSION = 1

# Per-latent-channel input widths (ComfyUI's unet_config["in_channels"]); img_in is 4x this (2x2 patches).
IN_CHANNELS_DEV = 16  # FLUX.1-dev: noise only
IN_CHANNELS_FILL = 96  # FLUX.1-Fill: 16 noise + 16 masked-image latent + 64 folded mask
IN_CHANNELS_FFT = 112  # ACE++ FFT: 16 noise + 16 UC latent + 16 C latent + 64 folded mask


# --------------------------------------------------------------------------------------------------
# Deterministic random numbers
# --------------------------------------------------------------------------------------------------


def _generator(seed: int, name: str) -> torch.Generator:
    """A CPU generator whose stream depends only on (seed, name): tensors do not depend on each other,
    so e.g. a Fill and an FFT model made with the same seed share every weight except ``img_in``."""
    mixed = (int(seed) * 0x9E3779B1 + zlib.crc32(name.encode("utf-8"))) % (2**63 - 1)
    return torch.Generator(device="cpu").manual_seed(mixed)


def _randn(shape: Iterable[int], seed: int, name: str, std: float = 1.0, mean: float = 0.0) -> torch.Tensor:
    t = torch.randn(tuple(shape), generator=_generator(seed, name), dtype=torch.float32)
    if std != 1.0:
        t.mul_(std)
    if mean != 0.0:
        t.add_(mean)
    return t


# --------------------------------------------------------------------------------------------------
# Flux
# --------------------------------------------------------------------------------------------------


def derived_axes_dim(head_dim: int) -> tuple[int, int, int]:
    """RoPE axes for a head size, by the rule FLUX uses at 128 (16/56/56): [h/8, 7h/16, 7h/16].

    This is the rule the test harness's detection patch applies; 32 -> (4, 14, 14)."""
    if head_dim % 16:
        raise ValueError(f"head_dim must be a multiple of 16, got {head_dim}")
    return (head_dim // 8, 7 * head_dim // 16, 7 * head_dim // 16)


@dataclass(frozen=True)
class FluxConfig:
    """Shape of a FLUX transformer as ComfyUI's ``comfy.ldm.flux.model.Flux`` builds it.

    ``in_channels``/``out_channels`` are per latent channel (before 2x2 patching), as in ComfyUI's
    ``unet_config``. Use ``with_in_channels`` to switch between dev (16), Fill (96) and FFT (112).
    """

    hidden_size: int = 64
    num_heads: int = 2
    depth: int = 1
    depth_single_blocks: int = 1
    in_channels: int = IN_CHANNELS_FILL
    out_channels: int = 16
    context_in_dim: int = 768
    vec_in_dim: int | None = 768
    mlp_ratio: float = 4.0
    guidance_embed: bool = True
    qkv_bias: bool = True
    patch_size: int = 2
    theta: int = 10000
    axes_dim: tuple[int, ...] = field(default=(4, 14, 14))

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} not divisible by num_heads {self.num_heads}")
        if sum(self.axes_dim) != self.head_dim:
            raise ValueError(f"axes_dim {self.axes_dim} must sum to head_dim {self.head_dim}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        return int(self.hidden_size * self.mlp_ratio)

    @property
    def img_in_features(self) -> int:
        """Width of ``img_in``: in_channels x patch area (64 dev, 384 Fill, 448 FFT)."""
        return self.in_channels * self.patch_size * self.patch_size

    def with_in_channels(self, in_channels: int) -> "FluxConfig":
        return dataclasses.replace(self, in_channels=in_channels)

    def comfy_unet_config(self) -> dict:
        """The ``unet_config`` ComfyUI's ``detect_unet_config`` yields for this model (with the harness's
        num_heads/axes_dim patch for non-3072 widths; identical to the unpatched result at 24 x 128)."""
        return {
            "image_model": "flux",
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "vec_in_dim": self.vec_in_dim,
            "context_in_dim": self.context_in_dim,
            "hidden_size": self.hidden_size,
            "mlp_ratio": self.mlp_ratio,
            "num_heads": self.num_heads,
            "depth": self.depth,
            "depth_single_blocks": self.depth_single_blocks,
            "axes_dim": list(self.axes_dim),
            "theta": self.theta,
            "patch_size": self.patch_size,
            "qkv_bias": self.qkv_bias,
            "guidance_embed": self.guidance_embed,
        }


# Tiny Fill-shaped Flux: 64 wide, 2 heads of 32, one double and one single block, CLIP-L-width text
# and pooled inputs (a real CLIPTextEncode output feeds it directly). Needs the detection patch.
TINY = FluxConfig()

# Smallest Flux that ComfyUI's unpatched detection accepts (hidden 3072 = 24 x 128, axes 16/56/56):
# one double block, no single blocks, txt_in T5-XXL wide (4096: 0.3.52 and 0.3.64 assume it, 0.3.75 reads
# it), narrow vector_in (32, read by every release). ~400M parameters.
FULL_DETECTABLE = FluxConfig(
    hidden_size=3072,
    num_heads=24,
    depth=1,
    depth_single_blocks=0,
    context_in_dim=4096,
    vec_in_dim=32,
    axes_dim=(16, 56, 56),
)


# What the headless runner substitutes for real FLUX weights: CLIP-L-width text inputs (768) so the real
# CLIPLoader + CLIPTextEncode path feeds it; detectable without any patch where ComfyUI reads txt_in's width
# (0.3.75; 0.3.52 and 0.3.64 assume 4096 and need the test-only patch). ~395M parameters.
DEMO = dataclasses.replace(FULL_DETECTABLE, context_in_dim=768, vec_in_dim=768)


def flux_param_shapes(cfg: FluxConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter of ComfyUI's Flux (``comfy/ldm/flux/model.py`` + ``layers.py``) with its shape,
    in ComfyUI's diffusion-model key layout (no prefix)."""
    h, hd, mlp = cfg.hidden_size, cfg.head_dim, cfg.mlp_hidden
    shapes: dict[str, tuple[int, ...]] = {}

    def linear(name: str, fan_in: int, fan_out: int, bias: bool = True) -> None:
        shapes[f"{name}.weight"] = (fan_out, fan_in)
        if bias:
            shapes[f"{name}.bias"] = (fan_out,)

    def mlp_embedder(name: str, fan_in: int) -> None:
        linear(f"{name}.in_layer", fan_in, h)
        linear(f"{name}.out_layer", h, h)

    def qk_norm(name: str) -> None:
        shapes[f"{name}.query_norm.scale"] = (hd,)
        shapes[f"{name}.key_norm.scale"] = (hd,)

    linear("img_in", cfg.img_in_features, h)
    mlp_embedder("time_in", 256)
    if cfg.vec_in_dim is not None:
        mlp_embedder("vector_in", cfg.vec_in_dim)
    if cfg.guidance_embed:
        mlp_embedder("guidance_in", 256)
    linear("txt_in", cfg.context_in_dim, h)

    for i in range(cfg.depth):
        for side in ("img", "txt"):
            p = f"double_blocks.{i}.{side}"
            linear(f"{p}_mod.lin", h, 6 * h)
            linear(f"{p}_attn.qkv", h, 3 * h, bias=cfg.qkv_bias)
            qk_norm(f"{p}_attn.norm")
            linear(f"{p}_attn.proj", h, h)
            linear(f"{p}_mlp.0", h, mlp)
            linear(f"{p}_mlp.2", mlp, h)

    for i in range(cfg.depth_single_blocks):
        p = f"single_blocks.{i}"
        linear(f"{p}.linear1", h, 3 * h + mlp)
        linear(f"{p}.linear2", h + mlp, h)
        qk_norm(f"{p}.norm")
        linear(f"{p}.modulation.lin", h, 3 * h)

    linear("final_layer.linear", h, cfg.patch_size * cfg.patch_size * cfg.out_channels)
    linear("final_layer.adaLN_modulation.1", h, 2 * h)
    return shapes


def flux_state_dict(
    cfg: FluxConfig = TINY,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    weight_std: float = 0.02,
    bias_std: float = 0.01,
    norm_std: float = 0.02,
) -> dict[str, torch.Tensor]:
    """Random Flux weights: linear weights N(0, weight_std), biases N(0, bias_std), RMSNorm scales
    N(1, norm_std). Deterministic in (cfg, seed); each tensor is drawn from its own (seed, key) stream
    and cast to ``dtype`` immediately (so the full model peaks at its final size plus one fp32 tensor)."""
    out: dict[str, torch.Tensor] = {}
    for key, shape in flux_param_shapes(cfg).items():
        if key.endswith(".scale"):
            t = _randn(shape, seed, key, std=norm_std, mean=1.0)
        elif key.endswith(".bias"):
            t = _randn(shape, seed, key, std=bias_std)
        else:
            t = _randn(shape, seed, key, std=weight_std)
        out[key] = t.to(dtype)
    return out


def to_fp8(sd: Mapping[str, torch.Tensor], dtype: torch.dtype = torch.float8_e4m3fn) -> dict[str, torch.Tensor]:
    """An fp8 copy like ``ace_plus_fft_fp8.safetensors``: 2-D ``.weight`` tensors (the linears) in ``dtype``,
    every other floating tensor (biases, RMSNorm scales) in bfloat16. Values outside fp8's range are
    clamped first (plain casting would give NaN for e4m3fn)."""
    fmax = torch.finfo(dtype).max
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if v.ndim == 2 and k.endswith(".weight"):
            out[k] = v.float().clamp(-fmax, fmax).to(dtype)
        elif v.is_floating_point():
            out[k] = v.to(torch.bfloat16)
        else:
            out[k] = v.clone()
    return out


# --------------------------------------------------------------------------------------------------
# LoRA
# --------------------------------------------------------------------------------------------------

# Module names (fnmatch patterns over the key without ".weight"); only 2-D weights are ever targeted.
DEFAULT_LORA_TARGETS: tuple[str, ...] = ("img_in", "double_blocks.*", "single_blocks.*")
# For FULL_DETECTABLE / DEMO, which have no single blocks.
FULL_LORA_TARGETS: tuple[str, ...] = ("img_in", "double_blocks.*")
# Storage dtypes of the extra copies of the tiny peft Fill LoRA (file suffix -> dtype).
LORA_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp8_e4m3fn": torch.float8_e4m3fn,
    "fp8_e5m2": torch.float8_e5m2,
}


def _linear_shapes(base: Mapping[str, torch.Tensor] | FluxConfig) -> dict[str, tuple[int, int]]:
    """module name -> (out, in) of every 2-D weight of a Flux state dict or config."""
    if isinstance(base, FluxConfig):
        items = flux_param_shapes(base).items()
    else:
        items = ((k, tuple(v.shape)) for k, v in base.items())
    out: dict[str, tuple[int, int]] = {}
    for k, shape in items:
        for prefix in ("model.diffusion_model.", "diffusion_model."):
            if k.startswith(prefix):
                k = k[len(prefix) :]
                break
        if k.endswith(".weight") and len(shape) == 2:
            out[k[: -len(".weight")]] = (int(shape[0]), int(shape[1]))
    return out


def lora_state_dict(
    base: Mapping[str, torch.Tensor] | FluxConfig,
    targets: Iterable[str] = DEFAULT_LORA_TARGETS,
    rank: int = 4,
    fmt: str = "peft",
    seed: int = 0,
    scale: float = 0.02,
    dtype: torch.dtype = torch.float32,
) -> dict[str, torch.Tensor]:
    """A random LoRA for a Flux model (given as a state dict or a ``FluxConfig``).

    ``targets``: module names or fnmatch patterns (``"img_in"``, ``"double_blocks.0.img_attn.qkv"``,
    ``"single_blocks.*"``); each must match at least one 2-D weight. An ``img_in`` target takes the
    base's width, so a Fill base gives a 384-wide adapter and an FFT base a 448-wide one.

    ``fmt``:
      * ``"kohya"``: ``lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight`` ([rank, in]),
        ``.lora_up.weight`` ([out, rank]) and ``.alpha`` (= rank, so the multiplier is 1);
      * ``"peft"``: ``diffusion_model.double_blocks.0.img_attn.qkv.lora_A.weight`` ([rank, in]) and
        ``.lora_B.weight`` ([out, rank]), no alpha (ComfyUI then uses 1) -- the format of the
        official ACE++ LoRAs.

    Both factors are non-zero, drawn so that the weight delta ``up @ down`` has std ``scale``
    (the base linears have std 0.02). The same (base, targets, rank, seed, scale) gives the same
    tensors in both formats, hence identical patches.
    """
    if fmt not in ("kohya", "peft"):
        raise ValueError(f"fmt must be 'kohya' or 'peft', got {fmt!r}")
    shapes = _linear_shapes(base)
    chosen: list[str] = []
    for pattern in targets:
        hits = [name for name in shapes if fnmatch.fnmatchcase(name, pattern)]
        if not hits:
            raise ValueError(f"LoRA target {pattern!r} matches no 2-D weight of the base model")
        chosen.extend(h for h in hits if h not in chosen)

    factor_std = math.sqrt(scale / math.sqrt(rank))
    out: dict[str, torch.Tensor] = {}
    for name in chosen:
        fan_out, fan_in = shapes[name]
        down = _randn((rank, fan_in), seed, f"lora_down:{name}", std=factor_std).to(dtype)
        up = _randn((fan_out, rank), seed, f"lora_up:{name}", std=factor_std).to(dtype)
        if fmt == "kohya":
            k = "lora_unet_" + name.replace(".", "_")
            out[f"{k}.lora_down.weight"] = down
            out[f"{k}.lora_up.weight"] = up
            out[f"{k}.alpha"] = torch.tensor(float(rank), dtype=dtype)
        else:
            k = "diffusion_model." + name
            out[f"{k}.lora_A.weight"] = down
            out[f"{k}.lora_B.weight"] = up
    return out


def unmatched_lora_state_dict(
    rank: int = 4, seed: int = 0, dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    """A kohya LoRA for an SDXL UNet (``lora_unet_input_blocks_...``): valid LoRA, wrong architecture, so
    no key maps onto a Flux model (ComfyUI only logs "lora key not loaded"). UNet keys only, so it does
    not patch a CLIP text encoder through LoraLoader either."""
    modules = {
        "input_blocks_4_1_transformer_blocks_0_attn1_to_q": (640, 640),
        "input_blocks_4_1_transformer_blocks_0_attn2_to_k": (640, 2048),
        "input_blocks_4_1_proj_in": (640, 640),
        "middle_block_1_transformer_blocks_0_ff_net_2": (1280, 5120),
        "output_blocks_0_1_transformer_blocks_0_attn1_to_out_0": (1280, 1280),
    }
    factor_std = math.sqrt(0.02 / math.sqrt(rank))
    out: dict[str, torch.Tensor] = {}
    for name, (fan_out, fan_in) in modules.items():
        k = f"lora_unet_{name}"
        out[f"{k}.lora_down.weight"] = _randn((rank, fan_in), seed, f"down:{k}", std=factor_std).to(dtype)
        out[f"{k}.lora_up.weight"] = _randn((fan_out, rank), seed, f"up:{k}", std=factor_std).to(dtype)
        out[f"{k}.alpha"] = torch.tensor(float(rank), dtype=dtype)
    return out


# --------------------------------------------------------------------------------------------------
# TAESD VAE
# --------------------------------------------------------------------------------------------------

# (vae_scale, vae_shift) that ComfyUI's VAELoader sets for its tiny autoencoders, by latent channels.
_TAESD_SCALE_SHIFT = {4: (0.18215, 0.0), 16: (0.3611, 0.1159)}

# nn.Sequential indices of comfy/taesd/taesd.py (64 channels everywhere inside).
_TAESD_ENC_BLOCKS = (1, 3, 4, 5, 7, 8, 9, 11, 12, 13)
_TAESD_ENC_DOWN = (2, 6, 10)  # conv(64, 64, stride=2, bias=False)
_TAESD_DEC_BLOCKS = (3, 4, 5, 8, 9, 10, 13, 14, 15, 18)
_TAESD_DEC_UPCONV = (7, 12, 17)  # conv(64, 64, bias=False) after nn.Upsample(2)


def taesd_vae_state_dict(
    latent_channels: int = 16,
    seed: int = 0,
    perturb: float = 0.01,
    scale_shift: tuple[float, float] | None = None,
    dtype: torch.dtype = torch.float32,
) -> dict[str, torch.Tensor]:
    """A TAESD-layout VAE (``taesd_encoder.*``, ``taesd_decoder.*``, ``vae_scale``, ``vae_shift``), the
    layout ``comfy.sd.VAE`` detects by ``taesd_decoder.1.weight`` (its input width = latent channels).

    It is a near-identity autoencoder, not noise: the encoder box-averages 8x8 pixel cells into latent
    channels 0-2 (``2*rgb - 1``) and random centred mixes of RGB into channels 3+; the decoder upsamples
    channels 0-2 back (nearest), so ``decode(encode(img))`` ~ an 8x8-blockwise mean of ``img`` (within a
    few percent: TAESD's tanh latent clamp). Every other weight carries small random values
    (``perturb``), so no tensor is all zeros. ``vae_scale``/``vae_shift`` default to taef1's
    (0.3611/0.1159) for 16 channels, taesd's (0.18215/0) for 4.
    """
    if latent_channels < 3:
        raise ValueError("latent_channels must be >= 3")
    if scale_shift is None:
        scale_shift = _TAESD_SCALE_SHIFT.get(latent_channels, (1.0, 0.0))
    c = 64
    sd: dict[str, torch.Tensor] = {}

    def conv(name: str, n_in: int, n_out: int, k: int = 3, bias: bool = True, std: float = perturb) -> None:
        fan_in = n_in * k * k
        sd[f"{name}.weight"] = _randn((n_out, n_in, k, k), seed, name, std=std / math.sqrt(fan_in))
        if bias:
            sd[f"{name}.bias"] = _randn((n_out,), seed, name + ".bias", std=std * 0.1)

    def block(name: str) -> None:
        # Block: ReLU(conv(x) + x); a small residual branch keeps the block ~ identity on x >= 0.
        conv(f"{name}.conv.0", c, c, std=math.sqrt(2.0))
        conv(f"{name}.conv.2", c, c, std=math.sqrt(2.0))
        conv(f"{name}.conv.4", c, c, std=perturb)

    def set_tap(name: str, o: int, i: int, ky: int, kx: int, value: float) -> None:
        sd[f"{name}.weight"][o, i, ky, kx] = value

    enc, dec = "taesd_encoder", "taesd_decoder"
    # Encoder: conv(3,64), blocks, three stride-2 convs, conv(64, latent).
    conv(f"{enc}.0", 3, c)
    for ch in range(3):  # RGB in [0, 1] -> channels 0-2
        set_tap(f"{enc}.0", ch, ch, 1, 1, 1.0)
        sd[f"{enc}.0.bias"][ch] = 0.0
    for i in _TAESD_ENC_BLOCKS:
        block(f"{enc}.{i}")
    for i in _TAESD_ENC_DOWN:
        conv(f"{enc}.{i}", c, c, bias=False)
        for ch in range(c):  # pad 1, stride 2: taps 1-2 read pixels 2o, 2o+1 -> 2x2 box mean
            for ky in (1, 2):
                for kx in (1, 2):
                    set_tap(f"{enc}.{i}", ch, ch, ky, kx, 0.25)
    conv(f"{enc}.14", c, latent_channels)
    for ch in range(3):  # latent 0-2 = 2*rgb - 1
        set_tap(f"{enc}.14", ch, ch, 1, 1, 2.0)
        sd[f"{enc}.14.bias"][ch] = -1.0
    mix = _randn((latent_channels, 3), seed, "latent_mix", std=0.5)
    for ch in range(3, latent_channels):  # latent 3+ = centred random mixes of RGB
        for j in range(3):
            set_tap(f"{enc}.14", ch, j, 1, 1, 2.0 * float(mix[ch, j]))
        sd[f"{enc}.14.bias"][ch] = -float(mix[ch].sum())

    # Decoder: Clamp, conv(latent, 64), ReLU, blocks / upsample+conv, conv(64, 3).
    conv(f"{dec}.1", latent_channels, c)
    for ch in range(3):  # split the signed latent into ReLU-safe +/- parts
        set_tap(f"{dec}.1", 2 * ch, ch, 1, 1, 1.0)
        set_tap(f"{dec}.1", 2 * ch + 1, ch, 1, 1, -1.0)
        sd[f"{dec}.1.bias"][2 * ch] = 0.0
        sd[f"{dec}.1.bias"][2 * ch + 1] = 0.0
    for i in _TAESD_DEC_BLOCKS:
        block(f"{dec}.{i}")
    for i in _TAESD_DEC_UPCONV:
        conv(f"{dec}.{i}", c, c, bias=False)
        for ch in range(c):
            set_tap(f"{dec}.{i}", ch, ch, 1, 1, 1.0)
    conv(f"{dec}.19", c, 3)
    for ch in range(3):  # out = (l + 1) / 2 in [0, 1]; TAESD.decode then maps it to [-1, 1]
        set_tap(f"{dec}.19", ch, 2 * ch, 1, 1, 0.5)
        set_tap(f"{dec}.19", ch, 2 * ch + 1, 1, 1, -0.5)
        sd[f"{dec}.19.bias"][ch] = 0.5

    sd["vae_scale"] = torch.tensor(float(scale_shift[0]))
    sd["vae_shift"] = torch.tensor(float(scale_shift[1]))
    return {k: v.to(dtype) for k, v in sd.items()}


def split_taesd(sd: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(encoder, decoder) state dicts without prefix, as ``vae_approx/taef1_encoder.safetensors`` and
    ``taef1_decoder.safetensors`` hold them (VAELoader's "taef1" entry re-adds the prefixes and sets
    vae_scale/vae_shift itself)."""
    enc = {k[len("taesd_encoder.") :]: v for k, v in sd.items() if k.startswith("taesd_encoder.")}
    dec = {k[len("taesd_decoder.") :]: v for k, v in sd.items() if k.startswith("taesd_decoder.")}
    return enc, dec


# --------------------------------------------------------------------------------------------------
# CLIP-L
# --------------------------------------------------------------------------------------------------


def clip_l_state_dict(
    seed: int = 0,
    dtype: torch.dtype = torch.float16,
    num_layers: int = 12,
    hidden: int = 768,
    intermediate: int = 3072,
    vocab: int = 49408,
    positions: int = 77,
) -> dict[str, torch.Tensor]:
    """A random CLIP-L text encoder in the HF ``CLIPTextModel`` layout ComfyUI's CLIPLoader reads
    (``text_model.embeddings.*``, ``text_model.encoder.layers.N.*``, ``text_model.final_layer_norm.*``,
    ``text_projection.weight``). Detected as CLIP-L by ``text_model.encoder.layers.0.mlp.fc1.weight``
    (and the absence of layer 22); ~123M parameters, ~246 MB in fp16."""
    sd: dict[str, torch.Tensor] = {}

    def put(key: str, shape: tuple[int, ...], std: float, mean: float = 0.0) -> None:
        sd[key] = _randn(shape, seed, key, std=std, mean=mean).to(dtype)

    def linear(name: str, fan_in: int, fan_out: int, bias: bool = True) -> None:
        put(f"{name}.weight", (fan_out, fan_in), 0.02)
        if bias:
            put(f"{name}.bias", (fan_out,), 0.01)

    def layer_norm(name: str) -> None:
        put(f"{name}.weight", (hidden,), 0.02, mean=1.0)
        put(f"{name}.bias", (hidden,), 0.01)

    put("text_model.embeddings.token_embedding.weight", (vocab, hidden), 0.02)
    put("text_model.embeddings.position_embedding.weight", (positions, hidden), 0.01)
    for i in range(num_layers):
        p = f"text_model.encoder.layers.{i}"
        layer_norm(f"{p}.layer_norm1")
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            linear(f"{p}.self_attn.{proj}", hidden, hidden)
        layer_norm(f"{p}.layer_norm2")
        linear(f"{p}.mlp.fc1", hidden, intermediate)
        linear(f"{p}.mlp.fc2", intermediate, hidden)
    layer_norm("text_model.final_layer_norm")
    linear("text_projection", hidden, hidden, bias=False)
    return sd


# --------------------------------------------------------------------------------------------------
# SigLIP vision tower and FLUX.1-Redux
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SiglipVisionConfig:
    """Shape of the SigLIP vision tower ComfyUI builds as ``comfy.clip_model.CLIPVisionModelProjection``
    (model_type ``siglip_vision_model``: biased patch convolution, no class token, no pre-norm, a final
    ``post_layernorm``)."""

    hidden_size: int = 144
    num_layers: int = 2
    intermediate_size: int = 288
    patch_size: int = 14
    image_size: int = 384
    num_channels: int = 3

    @property
    def num_positions(self) -> int:
        return (self.image_size // self.patch_size) ** 2


# The published SigLIP (so400m, patch 14, 384 px: 27 layers of 16 heads x 72, 729 tokens) made narrow: the same
# image size, patch and token count, the same head width (144 = 2 heads of 72), two layers. ~0.5M parameters.
TINY_SIGLIP = SiglipVisionConfig()


def siglip_vision_state_dict(
    cfg: SiglipVisionConfig = TINY_SIGLIP, seed: int = 0, dtype: torch.dtype = torch.float16, qk_std: float = 0.1
) -> dict[str, torch.Tensor]:
    """Random SigLIP vision weights under the key names ComfyUI's CLIPVisionLoader reads from
    ``sigclip_vision_patch14_384.safetensors`` (``vision_model.embeddings.patch_embedding.*``,
    ``...position_embedding.weight``, ``vision_model.encoder.layers.N.{layer_norm1,self_attn.*_proj,layer_norm2,
    mlp.fc1,mlp.fc2}.*``, ``vision_model.post_layernorm.*``). Query and key projections are drawn wider
    (``qk_std``) than the other linears (0.02) so that attention is far from uniform: then the head count
    changes the output."""
    h, inter = cfg.hidden_size, cfg.intermediate_size
    sd: dict[str, torch.Tensor] = {}

    def put(key: str, shape: tuple[int, ...], std: float, mean: float = 0.0) -> None:
        sd[key] = _randn(shape, seed, key, std=std, mean=mean).to(dtype)

    def linear(name: str, fan_in: int, fan_out: int, std: float = 0.02) -> None:
        put(f"{name}.weight", (fan_out, fan_in), std)
        put(f"{name}.bias", (fan_out,), 0.01)

    def layer_norm(name: str) -> None:
        put(f"{name}.weight", (h,), 0.02, mean=1.0)
        put(f"{name}.bias", (h,), 0.01)

    emb = "vision_model.embeddings"
    put(f"{emb}.patch_embedding.weight", (h, cfg.num_channels, cfg.patch_size, cfg.patch_size), 0.02)
    put(f"{emb}.patch_embedding.bias", (h,), 0.01)
    put(f"{emb}.position_embedding.weight", (cfg.num_positions, h), 0.02)
    for i in range(cfg.num_layers):
        p = f"vision_model.encoder.layers.{i}"
        layer_norm(f"{p}.layer_norm1")
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            linear(f"{p}.self_attn.{proj}", h, h, qk_std if proj in ("q_proj", "k_proj") else 0.02)
        layer_norm(f"{p}.layer_norm2")
        linear(f"{p}.mlp.fc1", h, inter)
        linear(f"{p}.mlp.fc2", inter, h)
    layer_norm("vision_model.post_layernorm")
    return sd


def redux_state_dict(
    redux_dim: int, txt_in_features: int, seed: int = 0, dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    """A random FLUX.1-Redux projector in ``flux1-redux-dev.safetensors``'s layout (``comfy/ldm/flux/redux.py``):
    ``redux_up`` (redux_dim -> 3 x txt_in_features), SiLU, ``redux_down`` (-> txt_in_features). ``redux_dim`` is
    the SigLIP width, ``txt_in_features`` the FLUX model's ``txt_in`` width."""
    sd: dict[str, torch.Tensor] = {}
    for name, fan_in, fan_out in (("redux_up", redux_dim, 3 * txt_in_features),
                                  ("redux_down", 3 * txt_in_features, txt_in_features)):
        sd[f"{name}.weight"] = _randn((fan_out, fan_in), seed, f"{name}.weight", std=0.02).to(dtype)
        sd[f"{name}.bias"] = _randn((fan_out,), seed, f"{name}.bias", std=0.01).to(dtype)
    return sd


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------


def write_safetensors(
    path: str | os.PathLike, sd: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> Path:
    """Write ``sd`` as safetensors atomically (temp file + rename, so a concurrent reader never sees a
    partial file). Tensors are made contiguous; metadata values are stored as strings. With more than one
    metadata key the header's key order (hence the file's bytes, not its content) varies between runs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous() for k, v in sd.items()}
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=meta or None)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _recipes(full: bool, demo: bool = False) -> dict[str, tuple[str, object]]:
    """relative path -> (recipe string, zero-argument builder). The recipe string identifies the
    content; a cached file is reused only when its recipe (and FACTORY_VERSION) is unchanged."""
    fill = TINY.with_in_channels(IN_CHANNELS_FILL)
    fft = TINY.with_in_channels(IN_CHANNELS_FFT)
    dev = TINY.with_in_channels(IN_CHANNELS_DEV)

    def flux(cfg: FluxConfig, seed: int, dtype: torch.dtype, fp8: bool = False):
        def build():
            sd = flux_state_dict(cfg, seed=seed, dtype=dtype)
            return to_fp8(sd) if fp8 else sd

        return f"flux {cfg!r} seed={seed} dtype={dtype} fp8={fp8}", build

    def lora(cfg: FluxConfig, fmt: str, seed: int, rank: int = 4, targets=DEFAULT_LORA_TARGETS,
             dtype: torch.dtype = torch.float32):
        def build():
            return lora_state_dict(cfg, targets, rank=rank, fmt=fmt, seed=seed, dtype=dtype)

        stored = "" if dtype == torch.float32 else f" dtype={dtype}"
        return f"lora {cfg!r} targets={tuple(targets)} rank={rank} fmt={fmt} seed={seed}{stored}", build

    def taesd(part: str | None):
        def build():
            sd = taesd_vae_state_dict(16, seed=0)
            if part is None:
                return sd
            enc, dec = split_taesd(sd)
            return enc if part == "encoder" else dec

        return f"taesd latent=16 seed=0 part={part}", build

    r: dict[str, tuple[str, object]] = {
        "diffusion_models/tiny_flux_fill.safetensors": flux(fill, 0, torch.float32),
        "diffusion_models/tiny_ace_plus_fft.safetensors": flux(fft, 0, torch.float32),
        "diffusion_models/tiny_ace_plus_fft_fp8.safetensors": flux(fft, 0, torch.float32, fp8=True),
        "diffusion_models/tiny_flux_dev.safetensors": flux(dev, 0, torch.float32),
        # Same seed: kohya and peft files hold the same numbers, so they patch identically.
        "loras/tiny_fill_lora_kohya.safetensors": lora(fill, "kohya", 1),
        "loras/tiny_fill_lora_peft.safetensors": lora(fill, "peft", 1),
        "loras/tiny_fft_lora_peft.safetensors": lora(fft, "peft", 2),
        # The peft Fill LoRA's numbers stored in other dtypes (LoRA files come in all of them).
        **{f"loras/tiny_fill_lora_peft_{name}.safetensors": lora(fill, "peft", 1, dtype=dtype)
           for name, dtype in LORA_STORAGE_DTYPES.items()},
        "loras/unmatched_lora.safetensors": (
            "unmatched sdxl rank=4 seed=3",
            lambda: unmatched_lora_state_dict(4, seed=3),
        ),
        "vae/tiny_taef1.safetensors": taesd(None),
        "vae_approx/taef1_encoder.safetensors": taesd("encoder"),
        "vae_approx/taef1_decoder.safetensors": taesd("decoder"),
        "text_encoders/clip_l_random.safetensors": ("clip_l seed=0 fp16", lambda: clip_l_state_dict(0, torch.float16)),
        "clip_vision/tiny_siglip_vision.safetensors": (
            f"siglip_vision {TINY_SIGLIP!r} seed=0 fp16",
            lambda: siglip_vision_state_dict(TINY_SIGLIP, seed=0, dtype=torch.float16),
        ),
        # Redux tokens as wide as the tiny FLUX's txt_in, from the tiny SigLIP's width.
        "style_models/tiny_flux_redux.safetensors": (
            f"redux dim={TINY_SIGLIP.hidden_size} txt_in={TINY.context_in_dim} seed=0 fp32",
            lambda: redux_state_dict(TINY_SIGLIP.hidden_size, TINY.context_in_dim, seed=0),
        ),
    }
    if full:
        full_fill = FULL_DETECTABLE.with_in_channels(IN_CHANNELS_FILL)
        full_fft = FULL_DETECTABLE.with_in_channels(IN_CHANNELS_FFT)
        r["diffusion_models/full_flux_fill.safetensors"] = flux(full_fill, 0, torch.bfloat16)
        r["diffusion_models/full_ace_plus_fft.safetensors"] = flux(full_fft, 0, torch.bfloat16)
        r["diffusion_models/full_ace_plus_fft_fp8.safetensors"] = flux(full_fft, 0, torch.bfloat16, fp8=True)
        r["loras/full_fill_lora_peft.safetensors"] = lora(full_fill, "peft", 1, targets=FULL_LORA_TARGETS)
        r["loras/full_fft_lora_peft.safetensors"] = lora(full_fft, "peft", 2, targets=FULL_LORA_TARGETS)
    if demo:
        demo_fill = DEMO.with_in_channels(IN_CHANNELS_FILL)
        r["diffusion_models/demo_flux_fill.safetensors"] = flux(demo_fill, 0, torch.bfloat16)
        demo_fft = DEMO.with_in_channels(IN_CHANNELS_FFT)
        r["diffusion_models/demo_ace_plus_fft.safetensors"] = flux(demo_fft, 0, torch.bfloat16)
        r["loras/demo_fill_lora_peft.safetensors"] = lora(demo_fill, "peft", 1, targets=FULL_LORA_TARGETS)
    return r


@contextlib.contextmanager
def _dir_lock(out_dir: Path):
    """Serialize builders of one cache dir (e.g. pytest-xdist workers); a no-op without fcntl."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    with open(out_dir / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build_model_set(
    out_dir: str | os.PathLike, full: bool = False, force: bool = False, verbose: bool = False, demo: bool = False
) -> dict[str, Path]:
    """Write the synthetic model set under ``out_dir`` in ComfyUI's folder names and return
    {file stem: path}. Files (relative to ``out_dir``)::

        diffusion_models/tiny_flux_fill.safetensors       TINY, in_channels 96 (img_in 384), fp32
        diffusion_models/tiny_ace_plus_fft.safetensors    TINY, in_channels 112 (img_in 448), fp32
        diffusion_models/tiny_ace_plus_fft_fp8.safetensors  to_fp8 of the above
        diffusion_models/tiny_flux_dev.safetensors        TINY, in_channels 16 (img_in 64), fp32
        diffusion_models/full_flux_fill.safetensors       (full=True) FULL_DETECTABLE, 96, bf16, ~0.8 GB
        diffusion_models/full_ace_plus_fft.safetensors    (full=True) FULL_DETECTABLE, 112, bf16, ~0.8 GB
        diffusion_models/demo_flux_fill.safetensors       (demo=True) DEMO (CLIP-L text widths), 96, bf16
        diffusion_models/demo_ace_plus_fft.safetensors    (demo=True) DEMO, 112, bf16
        loras/tiny_fill_lora_kohya.safetensors            kohya, Fill base, rank 4, seed 1
        loras/tiny_fill_lora_peft.safetensors             peft, same numbers as the kohya one
        loras/tiny_fft_lora_peft.safetensors              peft, FFT base (448-wide img_in adapter)
        loras/tiny_fill_lora_peft_<dtype>.safetensors     the peft Fill LoRA stored in bf16, fp16, fp8_e4m3fn, fp8_e5m2
        diffusion_models/full_ace_plus_fft_fp8.safetensors  (full=True) to_fp8 of full_ace_plus_fft
        loras/full_fill_lora_peft.safetensors             (full=True) peft, full Fill base, img_in + double blocks
        loras/full_fft_lora_peft.safetensors              (full=True) peft, full FFT base (448-wide img_in adapter)
        loras/demo_fill_lora_peft.safetensors             (demo=True) peft, DEMO Fill base, img_in + double blocks
        loras/unmatched_lora.safetensors                  SDXL kohya keys: matches nothing
        vae/tiny_taef1.safetensors                        16-channel TAESD with vae_scale/vae_shift
        vae_approx/taef1_encoder.safetensors              the same TAESD split the way VAELoader's
        vae_approx/taef1_decoder.safetensors                "taef1" entry reads it
        text_encoders/clip_l_random.safetensors           random CLIP-L, fp16
        clip_vision/tiny_siglip_vision.safetensors        TINY_SIGLIP (144 wide, 2 layers, 729 tokens), fp16
        style_models/tiny_flux_redux.safetensors          Redux 144 -> 2304 -> 768 (TINY's txt_in width), fp32

    ``manifest.json`` records FACTORY_VERSION and each file's recipe and size; a file whose entry
    matches is not rewritten, so one cache dir serves many test runs. ``force`` rewrites everything.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.json"
    result: dict[str, Path] = {}
    with _dir_lock(out):
        manifest: dict = {}
        if manifest_path.exists():
            try:
                manifest = json.loads(manifest_path.read_text())
            except (OSError, ValueError):
                manifest = {}
        if manifest.get("factory_version") != FACTORY_VERSION:
            manifest = {"factory_version": FACTORY_VERSION, "files": {}}
        files = manifest.setdefault("files", {})

        for rel, (recipe, build) in _recipes(full, demo).items():
            path = out / rel
            entry = files.get(rel)
            cached = (
                not force
                and entry is not None
                and entry.get("recipe") == recipe
                and path.is_file()
                and path.stat().st_size == entry.get("bytes")
            )
            t0 = time.perf_counter()
            if not cached:
                sd = build()
                # One metadata key: safetensors orders several keys differently from run to run.
                meta = {"tiny_models": json.dumps({"factory_version": FACTORY_VERSION, "recipe": recipe})}
                write_safetensors(path, sd, meta)
                del sd
                files[rel] = {"recipe": recipe, "bytes": path.stat().st_size}
                tmp = manifest_path.with_name(f".manifest.{os.getpid()}.tmp")
                tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
                os.replace(tmp, manifest_path)
            if verbose:
                status = "cached" if cached else f"wrote in {time.perf_counter() - t0:.2f}s"
                print(f"{rel:55s} {path.stat().st_size / 1e6:9.2f} MB  {status}")
            result[path.name[: -len(".safetensors")]] = path
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write synthetic ComfyUI model files for tests.")
    parser.add_argument("--out", required=True, help="output folder (gets diffusion_models/, loras/, vae/, ...)")
    parser.add_argument("--full", action="store_true",
                        help="also write the ~0.8 GB detectable Fill and FFT models, an fp8 FFT and their LoRAs")
    parser.add_argument("--force", action="store_true", help="rewrite files even if the manifest says they are current")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    paths = build_model_set(args.out, full=args.full, force=args.force, verbose=True)
    print(f"{len(paths)} files under {Path(args.out).resolve()} in {time.perf_counter() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
