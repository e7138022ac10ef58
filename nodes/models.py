"""Model nodes: the drop-in ACE++ FFT loader, Flux preparation for any loader, a LoRA loader that checks fit.

Thin adapters over :mod:`.flux_models` (the ComfyUI model integration).
"""

from __future__ import annotations

import folder_paths
from comfy_api.v0_0_2 import io

from ..ace_plus_core import limits
from ..ace_plus_core import model_files as mf
from . import flux_models as fm
from .common import CATEGORY

_WEIGHT_DTYPE_TOOLTIP = (
    "How the weights are kept in memory. default: as ComfyUI decides, except that an fp8 file stays fp8 (never "
    "expanded to bf16/fp32). fp8_e4m3fn / fp8_e5m2: store in fp8 (half the memory of bf16). fp8_e4m3fn_fast: fp8 "
    "with fp8 matrix multiplication on GPUs that support it (RTX 40xx, H100). Computation is always bf16 or fp32."
)


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
                io.Combo.Input("unet_name", options=folder_paths.get_filename_list("diffusion_models"),
                               tooltip="The ACE++ FFT model file in models/diffusion_models (.safetensors)."),
                io.Combo.Input("weight_dtype", options=fm.WEIGHT_DTYPES, default="default", tooltip=_WEIGHT_DTYPE_TOOLTIP),
            ],
            outputs=[io.Model.Output(display_name="MODEL", tooltip="The ACE++ FFT model (layout 'fft'); use it with "
                                     "ACE++ FFT conditioning.")],
        )

    @classmethod
    def execute(cls, unet_name, weight_dtype="default") -> io.NodeOutput:
        path = folder_paths.get_full_path_or_raise("diffusion_models", unet_name)
        return io.NodeOutput(fm.load_fft_file(path, weight_dtype, "unet_name"))


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
            inputs=[io.Model.Input("model", tooltip="A FLUX.1-Fill or ACE++ FFT model from any loader (UNETLoader, "
                                   "GGUF Unet Loader, ...).")],
            outputs=[io.Model.Output(display_name="MODEL", tooltip="The same weights, computing in bf16/fp32, with the "
                                     "ACE++ layout (lora/fft, as ACE++ Canvas calls it) recorded.")],
        )

    @classmethod
    def execute(cls, model) -> io.NodeOutput:
        return io.NodeOutput(fm.prepare_flux(model, "model"))


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
                io.Combo.Input("lora_name", options=folder_paths.get_filename_list("loras"),
                               tooltip="The LoRA file in models/loras, e.g. comfyui_portrait_lora64.safetensors."),
                io.Float.Input("strength_model", **limits.LORA_STRENGTH.widget(), tooltip="How strongly the LoRA changes the model (1.0 as trained; 0 returns "
                               "the model unchanged)."),
            ],
            outputs=[io.Model.Output(display_name="MODEL", tooltip="A copy of the model with the LoRA applied.")],
        )

    @classmethod
    def execute(cls, model, lora_name, strength_model=1.0) -> io.NodeOutput:
        path = folder_paths.get_full_path_or_raise("loras", lora_name)
        if strength_model == 0:
            mf.check_safetensors_name(path, "lora_name")
            mf.read_header(path, "lora_name")  # still refuse a broken or pickle file
            return io.NodeOutput(model)
        return io.NodeOutput(fm.apply_lora(model, path, strength_model, "lora_name"))


NODES = (ACEPlusLoader, ACEPlusModelPatch, ACEPlusLoraLoader)
