"""Model nodes: the drop-in ACE++ FFT loader, Flux preparation for any loader, and a LoRA loader that checks fit.

Rules kept here (issue 4):

* Nothing global is mutated: no class is appended to ``comfy.supported_models.models`` (official defect 9), and
  preparing a model clones its ModelPatcher and patches only the clone.
* FLUX.1-Fill-type models (img_in 384 or 448) never *compute* in fp16 (their activations overflow: the "noise on
  Turing" reports). Compute is bf16 where the device supports it, else fp32. Weights may be stored in fp8 (or in
  fp16 when the user forces ``--fp16-unet``); ComfyUI's manual-cast ops upcast them per layer.
* The layout (``"fill"`` 384 / ``"fft"`` 448) is recorded in the patcher's ``model_options["ace_plus_layout"]``
  so later nodes can check that the conditioning fits the model.

What ``weight_dtype`` "default" does with the pre-quantized ``ace_plus_fft_fp8.safetensors``: ComfyUI's rule
(``model_management.unet_dtype``) keeps an fp8 file in fp8 on GPUs with fp8 compute or too little memory, expands
it to bf16 on other bf16 GPUs, and expands it to fp32 where bf16 is not used (the CPU, pre-Ampere GPUs): 4x the
memory. ACEPlusLoader keeps it fp8 in that last case and lets the manual-cast ops upcast one layer at a time
(compute fp32); the bf16 expansion, chosen by ComfyUI for speed, is left as is. The fp8 choices always store fp8.

Preparing a model from another loader uses ComfyUI's per-patcher API ``ModelPatcher.set_model_compute_dtype``
(as the core ModelComputeDtype node): an object patch of ``manual_cast_dtype`` plus cast weights, on the clone.
Like every object patch it is set on the shared BaseModel only while that clone is the one loaded, and restored
when it is unpatched; the input patcher and other clones keep their own compute dtype.
"""

from __future__ import annotations

import logging
import math

import comfy.lora
import comfy.model_base
import comfy.model_detection
import comfy.model_management as mm
import comfy.model_patcher
import comfy.sd
import comfy.utils
import folder_paths
import torch
from comfy_api.v0_0_2 import io

from ..ace_plus_core import model_files as mf
from ..ace_plus_core import validate
from .common import CATEGORY, check_widgets, widget_message

log = logging.getLogger(__name__)

LAYOUT_OPTION = "ace_plus_layout"
WEIGHT_DTYPES = ["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"]
FILL_INFERENCE_DTYPES = (torch.bfloat16, torch.float32)  # FluxInpaint's rule, for 384 and 448 alike

_WEIGHT_DTYPE_TOOLTIP = (
    "How the weights are kept in memory. default: as ComfyUI decides (an fp8 file stays fp8 rather than being "
    "expanded to fp32). fp8_e4m3fn / fp8_e5m2: store in fp8 (half the memory of bf16). fp8_e4m3fn_fast: fp8 with "
    "fp8 matrix multiplication on GPUs that support it (RTX 40xx, H100). Computation is always bf16 or fp32."
)


# --------------------------------------------------------------------------------------------------
# Helpers (no node logic)
# --------------------------------------------------------------------------------------------------


def model_options_for(weight_dtype: str) -> dict:
    """The ``model_options`` ComfyUI's UNETLoader passes for a weight_dtype choice."""
    if weight_dtype not in WEIGHT_DTYPES:
        raise ValueError(f"weight_dtype must be one of {WEIGHT_DTYPES}; got {weight_dtype!r}")
    options: dict = {}
    if weight_dtype in ("fp8_e4m3fn", "fp8_e4m3fn_fast"):
        options["dtype"] = torch.float8_e4m3fn
    elif weight_dtype == "fp8_e5m2":
        options["dtype"] = torch.float8_e5m2
    if weight_dtype == "fp8_e4m3fn_fast":
        options["fp8_optimizations"] = True
    return options


def fill_compute_dtype(device) -> torch.dtype:
    """bf16 where ``device`` supports it, else fp32; never fp16."""
    return torch.bfloat16 if mm.should_use_bf16(device) else torch.float32


def _logical_shape(t) -> tuple[int, ...]:
    # GGUF-style wrapped weights store packed bytes but expose the logical shape (tensor_shape / .shape).
    shape = getattr(t, "tensor_shape", None)
    if shape is None:
        shape = t.shape
    return tuple(int(d) for d in shape)


def img_in_features(patcher) -> int | None:
    """Width of a Flux model's img_in (features per 2x2 latent patch), read from the model itself, honouring
    object patches; None when the model is not a Flux transformer."""
    if not isinstance(getattr(patcher, "model", None), comfy.model_base.Flux):
        return None
    try:
        module = patcher.get_model_object("diffusion_model.img_in")
    except AttributeError:
        return None
    features = getattr(module, "in_features", None)
    if isinstance(features, int) and features > 0:
        return features
    weight = getattr(module, "weight", None)
    if weight is None:
        return None
    shape = _logical_shape(weight)
    return shape[1] if len(shape) == 2 else None


def describe_model(patcher) -> str:
    features = img_in_features(patcher)
    if features is None:
        inner = getattr(patcher, "model", None)
        return f"not a Flux model ({type(inner).__name__})"
    layout = mf.layout_for_features(features)
    return mf.LAYOUT_NAMES[layout] if layout else f"a Flux model whose img_in takes {features} features"


def model_layout(patcher, input_name: str = "model") -> str:
    """ "fill" or "fft" for a usable ACE++ base; ValueError naming ``input_name`` and the fix otherwise."""
    features = img_in_features(patcher)
    layout = mf.layout_for_features(features)
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


def effective_compute_dtype(patcher) -> torch.dtype:
    """The dtype the model computes in: the (possibly object-patched) manual cast dtype, else the weights'."""
    if "manual_cast_dtype" in patcher.object_patches:
        cast = patcher.object_patches["manual_cast_dtype"]
    else:
        cast = getattr(patcher.model, "manual_cast_dtype", None)
    return cast if cast is not None else patcher.model_dtype()


def prepare_flux(patcher, input_name: str = "model"):
    """A clone of ``patcher`` that never computes in fp16 and records its ACE++ layout; the input is untouched."""
    layout = model_layout(patcher, input_name)
    clone = patcher.clone()
    compute = effective_compute_dtype(clone)
    if compute not in FILL_INFERENCE_DTYPES:
        target = fill_compute_dtype(clone.load_device)
        # ComfyUI's own per-patcher route (as the ModelComputeDtype node): an object patch of manual_cast_dtype,
        # applied while this clone is loaded, plus cast weights; the shared BaseModel keeps its own value.
        clone.set_model_compute_dtype(target)
        log.info("ACE++: %s model computed in %s instead of %s", layout, target, compute)
    clone.model_options[LAYOUT_OPTION] = layout
    return clone


def load_fft_state_dict(sd: dict, metadata: dict | None = None, model_options: dict | None = None):
    """Build an ACE++ FFT ModelPatcher from a state dict the way ``comfy.sd.load_diffusion_model_state_dict``
    (ComfyUI 0.3.75) does, but with FluxInpaint's inference dtypes (bf16/fp32) on *this* model config instance
    only, never fp16 compute, and fp8 files kept fp8 instead of expanded to fp32."""
    model_options = model_options or {}
    dtype = model_options.get("dtype", None)

    prefix = comfy.model_detection.unet_prefix_from_state_dict(sd)
    stripped = comfy.utils.state_dict_prefix_replace(sd, {prefix: ""}, filter_keys=True)
    if len(stripped) > 0:
        sd = stripped
    parameters = comfy.utils.calculate_parameters(sd)
    weight_dtype = comfy.utils.weight_dtype(sd)
    load_device = mm.get_torch_device()

    # Detection only reads the global model list; the config instance it returns is ours to adjust.
    model_config = comfy.model_detection.model_config_from_unet(sd, "", metadata=metadata)
    if model_config is None:
        converted = comfy.model_detection.convert_diffusers_mmdit(sd, "")
        if converted is not None:
            sd = converted
            model_config = comfy.model_detection.model_config_from_unet(sd, "")
    if model_config is None or model_config.unet_config.get("image_model") != "flux":
        return None
    model_config.supported_inference_dtypes = list(FILL_INFERENCE_DTYPES)

    offload_device = mm.unet_offload_device()
    if model_config.scaled_fp8 is not None:
        weight_dtype = None
    if dtype is None:
        unet_dtype = mm.unet_dtype(
            model_params=parameters, supported_dtypes=model_config.supported_inference_dtypes, weight_dtype=weight_dtype
        )
        if weight_dtype in mm.FLOAT8_TYPES and unet_dtype == torch.float32:
            # ComfyUI would expand an fp8 file to fp32 here (e.g. on CPU: 4x the memory); keep it fp8 and upcast
            # per layer instead.
            unet_dtype = weight_dtype
    else:
        unet_dtype = dtype

    if model_config.layer_quant_config is not None:
        manual_cast_dtype = mm.unet_manual_cast(None, load_device, model_config.supported_inference_dtypes)
    else:
        manual_cast_dtype = mm.unet_manual_cast(unet_dtype, load_device, model_config.supported_inference_dtypes)
    compute = manual_cast_dtype if manual_cast_dtype is not None else unet_dtype
    if compute not in FILL_INFERENCE_DTYPES:  # fp16 weights (forced --fp16-unet) would compute in fp16
        manual_cast_dtype = fill_compute_dtype(load_device)
    model_config.set_inference_dtype(unet_dtype, manual_cast_dtype)
    model_config.custom_operations = model_options.get("custom_operations", model_config.custom_operations)
    if model_options.get("fp8_optimizations", False):
        model_config.optimizations["fp8"] = True

    model = model_config.get_model(sd, "")
    model = model.to(offload_device)
    model.load_model_weights(sd, "")
    if len(sd) > 0:
        log.info("left over keys in diffusion model: %s", list(sd.keys()))
    return comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=offload_device)


def check_fft_file(path: str, input_name: str = "unet_name") -> mf.DiffusionModelInfo:
    """Read the header and refuse anything that is not an ACE++ FFT (448) diffusion model, saying what it is."""
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    if name.lower().endswith(".gguf"):
        raise ValueError(
            f"{input_name}: {name} is a GGUF file; load it with a GGUF loader (ComfyUI-GGUF's Unet Loader) and "
            "connect that MODEL to ACE++ Prepare Flux Model."
        )
    mf.check_safetensors_name(path, input_name)
    header = mf.read_header(path, input_name)
    info = mf.classify_diffusion_model(header)
    if info.layout == mf.LAYOUT_FFT:
        return info
    if info.layout == mf.LAYOUT_FILL:
        raise ValueError(
            f"{input_name}: {name} is not the ACE++ FFT model: this is FLUX.1-Fill; load it with UNETLoader and an "
            "ACE++ LoRA (ACE++ LoRA Loader or LoraLoaderModelOnly), then use ACE++ LoRA Conditioning."
        )
    if info.layout == mf.LAYOUT_DEV:
        raise ValueError(
            f"{input_name}: {name} is FLUX.1-dev (img_in takes 64 features: no image-conditioning channels), not "
            "the ACE++ FFT model; select ace_plus_fft.safetensors (or ace_plus_fft_fp8.safetensors)."
        )
    if info.img_in_features is not None:
        raise ValueError(
            f"{input_name}: {name} is a Flux-like model whose img_in takes {info.img_in_features} features; the "
            "ACE++ FFT model takes 448. Select ace_plus_fft.safetensors (or ace_plus_fft_fp8.safetensors)."
        )
    looks = f" (it looks like {info.looks_like})" if info.looks_like else ""
    raise ValueError(
        f"{input_name}: {name} is not a Flux diffusion model: it has no img_in weight{looks}. Select "
        "ace_plus_fft.safetensors (or ace_plus_fft_fp8.safetensors) from models/diffusion_models."
    )


def _patch_target_shape(v) -> tuple[int, int] | None:
    """(out, in-numel) a LoRA-type patch produces, or None when it cannot be told cheaply."""
    weights = getattr(v, "weights", None)
    name = getattr(v, "name", None)
    if name == "lora" and weights is not None:
        up, down, _alpha, mid, _dora, reshape = weights[:6]
        if reshape is not None or mid is not None:
            return None
        return int(up.shape[0]), math.prod(int(d) for d in down.shape[1:])
    if isinstance(v, tuple) and len(v) == 2 and v[0] == "diff":
        diff = v[1][0]
        if diff.ndim >= 2:
            return int(diff.shape[0]), math.prod(int(d) for d in diff.shape[1:])
    return None


def _all_finite(t: torch.Tensor) -> bool:
    if t.element_size() == 1:  # fp8: torch has no isfinite for float8_e4m3fn; fp16 holds every fp8 value
        t = t.to(torch.float16)
    return bool(torch.isfinite(t).all())


STRENGTH_RANGE = (-100.0, 100.0)


def check_strength(strength, name: str = "strength_model") -> float:
    return float(validate.check_number(strength, name, *STRENGTH_RANGE))


def apply_lora(patcher, lora_path: str, strength: float, input_name: str = "lora_name"):
    """Load a safetensors LoRA onto a clone through ``comfy.sd.load_lora_for_models``; ValueError when it
    patches nothing or a patched weight has another shape (e.g. a 448-wide img_in adapter on a Fill model)."""
    name = lora_path.replace("\\", "/").rsplit("/", 1)[-1]
    mf.check_safetensors_name(lora_path, input_name)
    strength = check_strength(strength)
    header = mf.read_header(lora_path, input_name)
    info = mf.inspect_lora(header)
    if not mf.has_adapter_keys(header):  # e.g. a full model picked by mistake: refuse before loading gigabytes
        looks = mf.guess_architecture(header.tensors) or mf.classify_diffusion_model(header).describe()
        raise ValueError(
            f"{input_name}: {name} holds no LoRA weights (none of its {len(header.tensors)} tensors has a LoRA, LoHa, "
            f"LoKr or diff key name; it looks like {looks}). Select a LoRA file (ACE++ LoRAs: "
            "comfyui_portrait_lora64, comfyui_subject_lora16, comfyui_local_lora16)."
        )
    model_desc = describe_model(patcher)
    features = img_in_features(patcher)
    reshapes = any(k.endswith(".reshape_weight") for k in header.tensors)  # control LoRAs widen img_in on purpose
    if info.img_in_features is not None and features is not None and info.img_in_features != features and not reshapes:
        wanted = mf.layout_for_features(info.img_in_features)
        hint = (
            "an ACE++ LoRA for FLUX.1-Fill needs the Fill model (UNETLoader)"
            if wanted == mf.LAYOUT_FILL
            else "an FFT LoRA needs the ACE++ FFT model (ACE++ FFT Loader)"
            if wanted == mf.LAYOUT_FFT
            else "use a LoRA trained for this model"
        )
        raise ValueError(
            f"{input_name}: {name} does not fit the model: its img_in adapter is {info.img_in_features} wide but the "
            f"model is {model_desc}; {hint}."
        )

    lora = comfy.utils.load_torch_file(lora_path, safe_load=True)
    broken = [k for k, t in lora.items() if t.is_floating_point() and not _all_finite(t)]
    if broken:
        raise ValueError(
            f"{input_name}: {name} is corrupt: {len(broken)} tensor(s) hold NaN or infinite values (e.g. "
            f"{broken[0]!r}), which would turn every image to noise; download or copy the LoRA again."
        )
    new = comfy.sd.load_lora_for_models(patcher, None, lora, strength, 0)[0]
    added = {k: new.patches[k][len(patcher.patches.get(k, [])) :] for k in new.patches}
    added = {k: v for k, v in added.items() if v}
    if not added:
        looks = f" ({info.looks_like})" if info.looks_like else ""
        raise ValueError(
            f"{input_name}: {name} patches nothing in the model ({model_desc}): none of its {len(header.tensors)} "
            f"keys ({info.key_format} format{looks}) names a weight of this model. Select a LoRA made for this "
            "model (ACE++ LoRAs for FLUX.1-Fill, or LoRAs trained on the ACE++ FFT model)."
        )
    weights = patcher.model.state_dict()
    bad = []
    for key, entries in added.items():
        if not isinstance(key, str) or key not in weights:
            continue
        shape = _logical_shape(weights[key])
        target = (shape[0], math.prod(shape[1:])) if len(shape) >= 2 else None
        for entry in entries:
            produced = _patch_target_shape(entry[1])
            if target is not None and produced is not None and produced != target:
                bad.append(f"{key} (LoRA gives {produced[0]}x{produced[1]}, model has {'x'.join(map(str, shape))})")
    if bad:
        raise ValueError(
            f"{input_name}: {name} does not fit the model ({model_desc}): {len(bad)} weight(s) have other shapes, "
            f"e.g. {bad[0]}. Select a LoRA trained for this model."
        )
    if info.modules and len(added) < info.modules:
        log.warning(
            "ACE++ LoRA %s: %d of its %d modules matched no weight of the model (%s)",
            name,
            info.modules - len(added),
            info.modules,
            model_desc,
        )
    return new


# --------------------------------------------------------------------------------------------------
# Nodes
# --------------------------------------------------------------------------------------------------


class ACEPlusLoader(io.ComfyNode):
    """Drop-in for the official ACEPlusLoader (same id, inputs, output), without touching ComfyUI's model list."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ACEPlusLoader",
            display_name="ACE++ FFT Loader",
            category=f"{CATEGORY}/models",
            description=(
                "Loads the ACE++ FFT model (ace_plus_fft.safetensors or ace_plus_fft_fp8.safetensors; img_in 448 "
                "wide) from models/diffusion_models. Checks the file header first and says what a wrong file is "
                "(FLUX.1-Fill, FLUX.1-dev, not Flux, truncated, pickle). Computes in bf16, or fp32 where bf16 is "
                "unsupported, never fp16; fp8 weights stay fp8. Same id and inputs as the official node; unlike it, "
                "it does not modify ComfyUI's global model list."
            ),
            inputs=[
                io.Combo.Input(
                    "unet_name",
                    options=folder_paths.get_filename_list("diffusion_models"),
                    tooltip="The ACE++ FFT model file in models/diffusion_models (.safetensors).",
                ),
                io.Combo.Input("weight_dtype", options=WEIGHT_DTYPES, default="default", tooltip=_WEIGHT_DTYPE_TOOLTIP),
            ],
            outputs=[
                io.Model.Output(
                    display_name="MODEL",
                    tooltip="The ACE++ FFT model (layout 'fft'); use it with ACE++ FFT conditioning.",
                )
            ],
        )

    @classmethod
    def execute(cls, unet_name, weight_dtype="default") -> io.NodeOutput:
        options = model_options_for(weight_dtype)
        path = folder_paths.get_full_path_or_raise("diffusion_models", unet_name)
        check_fft_file(path, "unet_name")
        sd, metadata = comfy.utils.load_torch_file(path, safe_load=True, return_metadata=True)
        model = load_fft_state_dict(sd, metadata=metadata, model_options=options)
        if model is None:
            raise ValueError(
                f"unet_name: ComfyUI could not detect a Flux model in {unet_name} although its img_in is 448 wide; "
                "the file may be incomplete. Download ace_plus_fft.safetensors again."
            )
        model.model_options[LAYOUT_OPTION] = mf.LAYOUT_FFT
        return io.NodeOutput(model)


class ACEPlusModelPatch(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ACEPlusModelPatch",
            display_name="ACE++ Prepare Flux Model",
            category=f"{CATEGORY}/models",
            description=(
                "Makes any loaded FLUX.1-Fill (img_in 384) or ACE++ FFT (img_in 448) model safe for ACE++: reads "
                "the layout from the model itself (works after UNETLoader, GGUF loaders, checkpoints), makes it "
                "compute in bf16 (fp32 where bf16 is unsupported) instead of fp16, and records the layout for the "
                "ACE++ conditioning nodes. Works on a copy: the input model is unchanged. Refuses FLUX.1-dev and "
                "non-Flux models."
            ),
            inputs=[
                io.Model.Input(
                    "model",
                    tooltip="A FLUX.1-Fill or ACE++ FFT model from any loader (UNETLoader, GGUF Unet Loader, ...).",
                )
            ],
            outputs=[
                io.Model.Output(
                    display_name="MODEL",
                    tooltip="The same weights, computing in bf16/fp32, with the ACE++ layout (fill/fft) recorded.",
                )
            ],
        )

    @classmethod
    def execute(cls, model) -> io.NodeOutput:
        return io.NodeOutput(prepare_flux(model, "model"))


class ACEPlusLoraLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ACEPlusLoraLoader",
            display_name="ACE++ LoRA Loader",
            category=f"{CATEGORY}/models",
            description=(
                "Applies a LoRA (.safetensors only) to a copy of the model through ComfyUI's own LoRA code, and "
                "stops with an error, instead of a log line, when the LoRA patches nothing or does not fit the "
                "model (e.g. a LoRA trained on the ACE++ FFT model, 448-wide img_in, on FLUX.1-Fill, or an SDXL "
                "LoRA). ACE++ LoRAs (portrait, subject, local editing) go on FLUX.1-Fill-dev."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The model to patch (FLUX.1-Fill for the ACE++ LoRAs)."),
                io.Combo.Input(
                    "lora_name",
                    options=folder_paths.get_filename_list("loras"),
                    tooltip="The LoRA file in models/loras, e.g. comfyui_portrait_lora64.safetensors.",
                ),
                io.Float.Input(
                    "strength_model",
                    default=1.0,
                    min=-100.0,
                    max=100.0,
                    step=0.01,
                    tooltip="How strongly the LoRA changes the model (1.0 as trained; 0 returns the model unchanged).",
                ),
            ],
            outputs=[io.Model.Output(display_name="MODEL", tooltip="A copy of the model with the LoRA applied.")],
        )

    @classmethod
    def validate_inputs(cls, strength_model=None) -> bool | str:
        return widget_message(cls, strength_model=strength_model)

    @classmethod
    def execute(cls, model, lora_name, strength_model=1.0) -> io.NodeOutput:
        check_widgets(cls, strength_model=strength_model)
        path = folder_paths.get_full_path_or_raise("loras", lora_name)
        if strength_model == 0:
            mf.check_safetensors_name(path, "lora_name")
            mf.read_header(path, "lora_name")  # still refuse a broken or pickle file
            return io.NodeOutput(model)
        return io.NodeOutput(apply_lora(model, path, strength_model, "lora_name"))


NODES = (ACEPlusLoader, ACEPlusModelPatch, ACEPlusLoraLoader)
