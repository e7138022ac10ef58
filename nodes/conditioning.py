"""Drop-in ACE++ conditioning nodes (official ids, inputs and outputs), fixed to encode consistent latents."""

from __future__ import annotations

import node_helpers
import torch
from comfy_api.v0_0_2 import io

from ..ace_plus_core import inpaint, validate
from ..ace_plus_core import model_files as mf
from ..ace_plus_core.geometry import check_canvas_images, check_geometries
from .common import CATEGORY, Geometry, aliases
from .flux_models import LAYOUT_OPTION, prepare_flux

_NOISE_MASK_TOOLTIP = (
    "Add the mask to the latent as a noise mask so sampling only changes the masked area (recommended: "
    "the reference strip and unmasked pixels stay as they are)."
)


def _conditioning_with(positive, negative, values: dict):
    return (
        node_helpers.conditioning_set_values(positive, values),
        node_helpers.conditioning_set_values(negative, values),
    )


def _latent(samples: torch.Tensor, mask: torch.Tensor, noise_mask: bool) -> dict:
    out = {"samples": samples}
    if noise_mask:
        out["noise_mask"] = mask
    return out


def encode_fft(vae, ucpixels, cpixels, mask, names=("ucpixels", "cpixels", "mask")) -> tuple[dict, torch.Tensor,
                                                                                             torch.Tensor]:
    """FFT layout: concat_latent_image = latent(UC) then latent(C), concat_mask = the mask (448 after patching).
    Every input is checked before the first encode (``names``: how messages call them)."""
    uc_name, c_name, mask_name = names
    inpaint.check_same_size(ucpixels, uc_name, cpixels, c_name)
    uc, mask4 = inpaint.prepare_pixels_and_mask(ucpixels, mask, pixels_name=uc_name, mask_name=mask_name)
    c, _ = inpaint.prepare_pixels_and_mask(cpixels, mask, pixels_name=c_name, mask_name=mask_name)
    uc_latent = vae.encode(uc)
    values = {"concat_latent_image": torch.cat([uc_latent, vae.encode(c)], dim=1), "concat_mask": mask4}
    return values, uc_latent, mask4


def encode_fill(vae, pixels, mask, names=("pixels", "mask")) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """Fill layout: concat_latent_image = latent(canvas), concat_mask = the mask (384); inputs checked first."""
    pixels, mask4 = inpaint.prepare_pixels_and_mask(pixels, mask, pixels_name=names[0], mask_name=names[1])
    latent = vae.encode(pixels)
    return {"concat_latent_image": latent, "concat_mask": mask4}, latent, mask4


class ACEPlusConditioning(io.ComfyNode):
    """FFT layout: the model input is noise | latent(UC) | latent(C) | mask (16+16+16+64 = 112 channels)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ACEPlusConditioning",
            display_name="ACE++ FFT Conditioning (drop-in)",
            category=f"{CATEGORY}/legacy",
            description=(
                "Conditioning for the ACE++ FFT model (448-channel img_in): encodes the UC image (canvas with the "
                "masked area gray) and the C image (guidance under the mask) and attaches both latents and the "
                "mask to the prompts. Same id and inputs as the official node; unlike it, the starting latent is "
                "encoded from the same cropped pixels as the conditioning."
            ),
            inputs=[
                io.Conditioning.Input("positive", tooltip="Prompt conditioning (e.g. from CLIPTextEncode)."),
                io.Conditioning.Input("negative", tooltip="Negative conditioning (ignored by Flux at cfg 1)."),
                io.Vae.Input("vae", tooltip="The FLUX VAE (ae.safetensors)."),
                io.Image.Input("ucpixels", tooltip="UC_IMAGE from ACE++ FFT Processor: the canvas, masked area gray."),
                io.Image.Input("cpixels", tooltip="C_IMAGE from ACE++ FFT Processor: gray except the guidance."),
                io.Mask.Input("mask", tooltip="MASK from ACE++ FFT Processor: 1 where the canvas is generated."),
                io.Boolean.Input("noise_mask", default=True, tooltip=_NOISE_MASK_TOOLTIP),
            ],
            outputs=[
                io.Conditioning.Output(display_name="positive", tooltip="Positive conditioning with the FFT latents."),
                io.Conditioning.Output(display_name="negative", tooltip="Negative conditioning with the FFT latents."),
                io.Latent.Output(display_name="latent", tooltip="Latent of the canvas to sample from."),
            ],
        )

    @classmethod
    def execute(cls, positive, negative, vae, ucpixels, cpixels, mask, noise_mask=True) -> io.NodeOutput:
        values, latent, mask4 = encode_fft(vae, ucpixels, cpixels, mask)
        pos, neg = _conditioning_with(positive, negative, values)
        return io.NodeOutput(pos, neg, _latent(latent, mask4, noise_mask))


class ACEPlusLoraConditioning(io.ComfyNode):
    """Fill layout: the model input is noise | latent(canvas) | mask (16+16+64 = 96 channels)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ACEPlusLoraConditioning",
            display_name="ACE++ LoRA Conditioning (drop-in)",
            category=f"{CATEGORY}/legacy",
            description=(
                "Conditioning for FLUX.1-Fill with an ACE++ LoRA (384-channel img_in): encodes the canvas and "
                "attaches its latent and the mask to the prompts. Same id and inputs as the official node; unlike "
                "it, the starting latent is encoded from the same cropped pixels as the conditioning."
            ),
            inputs=[
                io.Conditioning.Input("positive", tooltip="Prompt conditioning (e.g. from CLIPTextEncode)."),
                io.Conditioning.Input("negative", tooltip="Negative conditioning (ignored by Flux at cfg 1)."),
                io.Vae.Input("vae", tooltip="The FLUX VAE (ae.safetensors)."),
                io.Image.Input("pixels", tooltip="IMAGE from ACE++ LoRA Processor: the canvas."),
                io.Mask.Input("mask", tooltip="MASK from ACE++ LoRA Processor: 1 where the canvas is generated."),
                io.Boolean.Input("noise_mask", default=True, tooltip=_NOISE_MASK_TOOLTIP),
            ],
            outputs=[
                io.Conditioning.Output(display_name="positive", tooltip="Positive conditioning with the canvas latent."),
                io.Conditioning.Output(display_name="negative", tooltip="Negative conditioning with the canvas latent."),
                io.Latent.Output(display_name="latent", tooltip="Latent of the canvas to sample from."),
            ],
        )

    @classmethod
    def execute(cls, positive, negative, vae, pixels, mask, noise_mask=True) -> io.NodeOutput:
        values, latent, mask4 = encode_fill(vae, pixels, mask)
        pos, neg = _conditioning_with(positive, negative, values)
        return io.NodeOutput(pos, neg, _latent(latent, mask4, noise_mask))


class ACEPlusCanvasConditioning(io.ComfyNode):
    """Builds the conditioning layout the connected model needs from an ACE++ Canvas, and refuses a mismatch."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ACEPlusCanvasConditioning",
            **aliases("in-context", "inpaint conditioning"),
            display_name="ACE++ Conditioning",
            category=CATEGORY,
            description=(
                "Encodes an ACE++ Canvas for the model it is given: FLUX.1-Fill (+ ACE++ LoRA, img_in 384) gets the "
                "canvas latent and the mask; the ACE++ FFT model (img_in 448) gets the UC latent, the C latent and "
                "the mask. A canvas built for the other layout is refused with a message saying which model and "
                "which canvas were connected. Also returns the model prepared for ACE++ (never computing in fp16)."
            ),
            inputs=[
                io.Model.Input("model", tooltip="FLUX.1-Fill (with an ACE++ LoRA) or the ACE++ FFT model."),
                io.Conditioning.Input("positive", tooltip="Prompt conditioning (e.g. CLIPTextEncode + FluxGuidance)."),
                io.Conditioning.Input("negative", tooltip="Negative conditioning (ignored by Flux at cfg 1)."),
                io.Vae.Input("vae", tooltip="The FLUX VAE (ae.safetensors)."),
                io.Image.Input("uc_image", tooltip="ACE++ Canvas uc_image (for the LoRA layout it is the canvas)."),
                io.Image.Input("c_image", tooltip="ACE++ Canvas c_image (used by the FFT layout)."),
                io.Mask.Input("mask", tooltip="ACE++ Canvas mask."),
                Geometry.Input("geometry", tooltip="ACE++ Canvas geometry: tells which layout the canvas was built for."),
                io.Boolean.Input("noise_mask", default=True, tooltip=_NOISE_MASK_TOOLTIP),
                io.Mask.Input("sampling_mask", optional=True,
                              tooltip="Optional noise mask for the sampler instead of mask, e.g. ACE++ Canvas's "
                                      "soft_mask (soft seams with Differential Diffusion); the model still sees "
                                      "mask. Used only with noise_mask on."),
            ],
            outputs=[
                io.Model.Output(display_name="model",
                                tooltip="The model prepared for ACE++ (a clone; bf16/fp32 compute, never fp16)."),
                io.Conditioning.Output(display_name="positive", tooltip="Positive conditioning with the canvas latents."),
                io.Conditioning.Output(display_name="negative", tooltip="Negative conditioning with the canvas latents."),
                io.Latent.Output(display_name="latent", tooltip="Latent of the canvas to sample from."),
            ],
        )

    @classmethod
    def execute(cls, model, positive, negative, vae, uc_image, c_image, mask, geometry, noise_mask=True,
                sampling_mask=None) -> io.NodeOutput:
        # Cheap checks of every tensor first (no VAE work, no model clone before they pass).
        geometry = check_geometries(geometry, "geometry")
        check_canvas_images(geometry, uc_image=uc_image, c_image=c_image)
        validate.check_mask(mask, "mask")
        if sampling_mask is not None:  # cropped like the canvas; the model's mask stays ``mask``
            _, sampling_mask = inpaint.prepare_pixels_and_mask(uc_image, sampling_mask, pixels_name="uc_image",
                                                               mask_name="sampling_mask")
        prepared = prepare_flux(model, "model")
        wanted = mf.check_canvas_fits_model(prepared.model_options[LAYOUT_OPTION], (g.layout for g in geometry))
        if wanted == "fft":
            values, latent, mask4 = encode_fft(vae, uc_image, c_image, mask, ("uc_image", "c_image", "mask"))
        else:
            values, latent, mask4 = encode_fill(vae, uc_image, mask, ("uc_image", "mask"))
        pos, neg = _conditioning_with(positive, negative, values)
        noise = mask4 if sampling_mask is None else sampling_mask
        return io.NodeOutput(prepared, pos, neg, _latent(latent, noise, noise_mask))


NODES = (ACEPlusCanvasConditioning, ACEPlusConditioning, ACEPlusLoraConditioning)
