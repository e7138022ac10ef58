"""ACE++ models on ComfyUI's public model API: Flux layout, compute dtype, FFT file loading, LoRAs that must fit.

Loading and patching go through ComfyUI's own functions (``comfy.sd.load_diffusion_model``,
``comfy.sd.load_lora_for_models``); nothing global changes and preparing works on a clone. Shapes are compared as
the layers compute with them (``in_features``/``out_features``, a tensor's own ``shape``), whatever the storage:
plain, fp8, GGUF blocks or ComfyUI's quantized tensors.
FLUX.1-Fill-type models (img_in 384 Fill, 448 FFT) never compute in fp16 (their activations overflow): bf16 where
the device has it, else fp32 (``ModelPatcher.set_model_compute_dtype``). An fp8 file loaded with "default" stays
fp8 on every device (ComfyUI would expand it to bf16 or fp32); its layers are upcast one at a time.
"""

from __future__ import annotations

import logging
import math

import comfy.lora
import comfy.lora_convert
import comfy.model_base
import comfy.model_management as mm
import comfy.sd
import comfy.utils
import torch

from ..ace_plus_core import model_files as mf
from ..ace_plus_core import limits
from . import compat

log = logging.getLogger(__name__)

LAYOUT_OPTION = "ace_plus_layout"  # model_options key: the canvas layout the model takes ("lora" or "fft")
WEIGHT_DTYPES = ["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"]
FILL_INFERENCE_DTYPES = (torch.bfloat16, torch.float32)
_FP8_BY_HEADER_NAME = {"F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}
# (up, down) tensor names of one LoRA module in the key layouts ComfyUI's LoRA adapter reads.
_UP_DOWN = ((".lora_up.weight", ".lora_down.weight"), ("_lora.up.weight", "_lora.down.weight"),
            (".lora.up.weight", ".lora.down.weight"), (".lora_B.weight", ".lora_A.weight"), (".lora_B", ".lora_A"),
            (".lora_B.default.weight", ".lora_A.default.weight"),
            (".lora_linear_layer.up.weight", ".lora_linear_layer.down.weight"))


def model_options_for(weight_dtype: str, header_dtypes: dict[str, int] | None = None) -> dict:
    """UNETLoader's ``model_options`` for a weight_dtype choice; with "default", a file whose header says it is
    mostly fp8 is kept in that fp8 dtype."""
    if weight_dtype not in WEIGHT_DTYPES:
        raise ValueError(f"weight_dtype must be one of {WEIGHT_DTYPES}; got {weight_dtype!r}")
    if weight_dtype == "default":
        main = max(header_dtypes, key=header_dtypes.get) if header_dtypes else None
        return {"dtype": _FP8_BY_HEADER_NAME[main]} if main in _FP8_BY_HEADER_NAME else {}
    options: dict = {"dtype": torch.float8_e5m2 if weight_dtype == "fp8_e5m2" else torch.float8_e4m3fn}
    if weight_dtype == "fp8_e4m3fn_fast":
        options["fp8_optimizations"] = True
    return options


def logical_shape(patcher, key: str) -> tuple[int, ...] | None:
    """The shape the layer computes with for a model key (``diffusion_model.img_in.weight``), honouring object
    patches; None when the model has no such tensor. A linear layer's weight is (out_features, in_features) however
    it is stored (a quantized tensor may hold packed bytes or padded blocks); any other tensor gives its own
    ``shape``, which GGUF's tensors report logically too."""
    module_name, _, attr = key.rpartition(".")
    try:
        module = patcher.get_model_object(module_name)
        tensor = getattr(module, attr)
    except AttributeError:
        return None
    features = getattr(module, "in_features", None), getattr(module, "out_features", None)
    if attr == "weight" and all(isinstance(f, int) and f > 0 for f in features):
        return features[1], features[0]
    return tuple(int(d) for d in tensor.shape) if isinstance(tensor, torch.Tensor) else None


def img_in_features(patcher) -> int | None:
    """Width of a Flux model's img_in (features per 2x2 latent patch); None when the model is not a Flux
    transformer."""
    if not isinstance(getattr(patcher, "model", None), comfy.model_base.Flux):
        return None
    shape = logical_shape(patcher, "diffusion_model.img_in.weight")
    return shape[1] if shape is not None and len(shape) == 2 else None


def describe_model(patcher) -> str:
    features = img_in_features(patcher)
    if features is None:
        return f"not a Flux model ({type(getattr(patcher, 'model', None)).__name__})"
    layout = mf.LAYOUT_BY_FEATURES.get(features)
    return mf.LAYOUT_NAMES[layout] if layout else f"a Flux model whose img_in takes {features} features"


def model_layout(patcher, input_name: str = "model") -> str:
    """ "lora" (FLUX.1-Fill) or "fft" for a usable ACE++ base; ValueError naming ``input_name`` and the fix otherwise."""
    layout = mf.LAYOUT_BY_FEATURES.get(img_in_features(patcher))
    if layout in (mf.LAYOUT_FILL, mf.LAYOUT_FFT):
        return layout
    if layout == mf.LAYOUT_DEV:
        raise ValueError(
            f"{input_name}: this is FLUX.1-dev (img_in takes 64 features: no image-conditioning channels), which "
            "cannot do ACE++ edits. Load FLUX.1-Fill-dev (flux1-fill-dev) with an ACE++ LoRA, or the ACE++ FFT "
            "model (ace_plus_fft.safetensors) with ACE++ FFT Loader."
        )
    raise ValueError(
        f"{input_name}: {describe_model(patcher)}; ACE++ needs FLUX.1-Fill-dev (img_in 384, with an ACE++ LoRA) or "
        "the ACE++ FFT model (img_in 448). Load one of them with UNETLoader, a GGUF loader or ACE++ FFT Loader."
    )


def compute_dtype(patcher) -> torch.dtype:
    """The dtype the model computes in: its (possibly patched) manual cast dtype, else its weights' dtype."""
    cast = patcher.get_model_object("manual_cast_dtype")
    return cast if cast is not None else patcher.model_dtype()


def prepare_flux(patcher, input_name: str = "model"):
    """A clone of ``patcher`` that never computes in fp16 and records its ACE++ layout; the input is untouched."""
    layout = model_layout(patcher, input_name)
    clone = patcher.clone()
    compute = compute_dtype(clone)
    if compute not in FILL_INFERENCE_DTYPES:
        target = torch.bfloat16 if mm.should_use_bf16(clone.load_device) else torch.float32
        clone.set_model_compute_dtype(target)  # on this clone only, as the core ModelComputeDtype node does
        log.info("ACE++: %s model computed in %s instead of %s", layout, target, compute)
    clone.model_options[LAYOUT_OPTION] = layout
    return clone


def check_fft_file(path: str, input_name: str = "unet_name") -> mf.DiffusionModelInfo:
    """Read the header and refuse anything that is not an ACE++ FFT (448) diffusion model, saying what it is."""
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    if name.lower().endswith(".gguf"):
        raise ValueError(
            f"{input_name}: {name} is a GGUF file; load it with a GGUF loader (ComfyUI-GGUF's Unet Loader) and "
            "connect that MODEL to ACE++ Prepare Flux Model."
        )
    mf.check_safetensors_name(path, input_name)
    info = mf.classify_diffusion_model(mf.read_header(path, input_name))
    if info.layout == mf.LAYOUT_FFT:
        return info
    select = "Select ace_plus_fft.safetensors (or ace_plus_fft_fp8.safetensors) from models/diffusion_models."
    if info.layout == mf.LAYOUT_FILL:
        what = ("not the ACE++ FFT model: this is FLUX.1-Fill; load it with UNETLoader and an ACE++ LoRA (ACE++ LoRA "
                "Loader or LoraLoaderModelOnly), then use ACE++ Conditioning.")
    elif info.layout == mf.LAYOUT_DEV:
        what = f"FLUX.1-dev (img_in takes 64 features: no image-conditioning channels), not the ACE++ FFT model. {select}"
    elif info.img_in_features is not None:
        what = f"a Flux-like model whose img_in takes {info.img_in_features} features; the FFT model takes 448. {select}"
    else:
        looks = f" (it looks like {info.looks_like})" if info.looks_like else ""
        what = f"not a Flux diffusion model: it has no img_in weight{looks}. {select}"
    raise ValueError(f"{input_name}: {name} is {what}")


def load_fft_file(path: str, weight_dtype: str = "default", input_name: str = "unet_name"):
    """The ACE++ FFT model, header-checked, loaded by ComfyUI's own loader (``comfy.sd.load_diffusion_model``, so
    the model carries whatever ComfyUI records to re-create it) and prepared by :func:`prepare_flux`."""
    info = check_fft_file(path, input_name)
    options = model_options_for(weight_dtype, dict(info.dtype_counts))
    try:
        patcher = comfy.sd.load_diffusion_model(path, model_options=options)
    except RuntimeError as e:  # ComfyUI's "Could not detect model type", or torch's state dict errors
        if isinstance(e, getattr(torch, "OutOfMemoryError", ())):
            raise
        raise ValueError(
            f"{input_name}: ComfyUI could not load {info.name} as a Flux model although its img_in is 448 wide; "
            f"the file may be incomplete: download ace_plus_fft.safetensors again. ComfyUI says: {e}"
        ) from e
    return prepare_flux(patcher, input_name)


def _all_finite(t: torch.Tensor) -> bool:
    if t.element_size() == 1:  # fp8: torch has no isfinite for float8_e4m3fn; fp16 holds every fp8 value
        t = t.to(torch.float16)
    return bool(torch.isfinite(t).all())


def _misfits(lora: dict, key_map: dict, patcher) -> list[str]:
    """Model weights whose LoRA matrices (up x down) or full diff have another shape than the weight's logical one."""
    bad = []
    for prefix, target in key_map.items():
        pairs = [(lora[prefix + u], lora[prefix + d]) for u, d in _UP_DOWN if prefix + u in lora and prefix + d in lora]
        diff = lora.get(prefix + ".diff")
        if (not pairs and diff is None) or prefix + ".reshape_weight" in lora:  # control LoRAs widen img_in
            continue
        key, offset = (target, None) if isinstance(target, str) else target[:2]  # offset: a slice of fused qkv
        shape = logical_shape(patcher, key)
        if shape is None:
            continue
        model = "x".join(map(str, shape))
        want = (offset[2] if offset else shape[0], math.prod(shape[1:]))
        for up, down in pairs:
            got = (int(up.shape[0]), math.prod(int(d) for d in down.shape[1:]))
            if got != want:
                bad.append(f"{key} (LoRA gives {got[0]}x{got[1]}, model has {model})")
        if diff is not None and tuple(diff.shape) != shape:
            bad.append(f"{key} (LoRA diff {'x'.join(map(str, diff.shape))}, model has {model})")
    return bad


def apply_lora(patcher, lora_path: str, strength: float, input_name: str = "lora_name"):
    """A clone of ``patcher`` with a safetensors LoRA applied by ``comfy.sd.load_lora_for_models``; ValueError when
    the LoRA is corrupt or does not fit (e.g. a 448-wide img_in adapter on a Fill model), before the clone is made,
    or when it patches nothing."""
    name = lora_path.replace("\\", "/").rsplit("/", 1)[-1]
    mf.check_safetensors_name(lora_path, input_name)
    strength = limits.LORA_STRENGTH.check(strength, "strength_model")
    header = mf.read_header(lora_path, input_name)
    info = mf.inspect_lora(header)
    if not mf.has_adapter_keys(header):  # e.g. a full model picked by mistake: refuse before loading gigabytes
        looks = mf.guess_architecture(header.tensors) or mf.classify_diffusion_model(header).describe()
        raise ValueError(
            f"{input_name}: {name} holds no LoRA weights (none of its {len(header.tensors)} tensors has a LoRA, LoHa, "
            f"LoKr or diff key name; it looks like {looks}). Select a LoRA file (ACE++ LoRAs: "
            "comfyui_portrait_lora64, comfyui_subject_lora16, comfyui_local_lora16)."
        )
    model_desc, features = describe_model(patcher), img_in_features(patcher)
    reshapes = any(k.endswith(".reshape_weight") for k in header.tensors)
    if info.img_in_features is not None and features is not None and info.img_in_features != features and not reshapes:
        hint = {mf.LAYOUT_FILL: "an ACE++ LoRA for FLUX.1-Fill needs the Fill model (UNETLoader)",
                mf.LAYOUT_FFT: "an FFT LoRA needs the ACE++ FFT model (ACE++ FFT Loader)"}
        raise ValueError(
            f"{input_name}: {name} does not fit the model: its img_in adapter is {info.img_in_features} wide but the "
            f"model is {model_desc}; "
            f"{hint.get(mf.LAYOUT_BY_FEATURES.get(info.img_in_features), 'use a LoRA trained for this model')}."
        )

    lora, metadata = comfy.utils.load_torch_file(lora_path, safe_load=True, return_metadata=True)
    broken = [k for k, t in lora.items() if t.is_floating_point() and not _all_finite(t)]
    if broken:
        raise ValueError(f"{input_name}: {name} is corrupt: {len(broken)} tensor(s) hold NaN or infinite values (e.g. "
                         f"{broken[0]!r}), which would turn every image to noise; download or copy the LoRA again.")
    key_map = comfy.lora.model_lora_keys_unet(patcher.model, {})
    converted = comfy.lora_convert.convert_lora(lora)
    bad = _misfits(converted, key_map, patcher)
    if bad:
        raise ValueError(
            f"{input_name}: {name} does not fit the model ({model_desc}): {len(bad)} weight(s) have other shapes, "
            f"e.g. {bad[0]}. Select a LoRA trained for this model."
        )
    # The LoRA modules that name a weight of the model, as ComfyUI's own matcher finds them (no ModelPatcher state
    # read): nothing means a LoRA for another model, fewer than the file holds is worth a warning.
    applied = comfy.lora.load_lora(converted, key_map, log_missing=False)
    if not applied:
        looks = f" ({info.looks_like})" if info.looks_like else ""
        raise ValueError(
            f"{input_name}: {name} patches nothing in the model ({model_desc}): none of its {len(header.tensors)} "
            f"keys ({info.key_format} format{looks}) names a weight of this model. Select a LoRA made for this "
            "model (ACE++ LoRAs for FLUX.1-Fill, or LoRAs trained on the ACE++ FFT model)."
        )
    if info.modules and len(applied) < info.modules:
        log.warning("ACE++ LoRA %s: %d of its %d modules matched no weight of the model (%s)", name,
                    info.modules - len(applied), info.modules, model_desc)
    return compat.load_lora_for_models(patcher, lora, strength, metadata)  # ComfyUI's own LoRA loading
