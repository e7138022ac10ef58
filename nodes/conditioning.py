"""Drop-in ACE++ conditioning nodes (official ids, inputs and outputs), fixed to encode consistent latents."""

from __future__ import annotations

import node_helpers
import torch
from comfy_api.v0_0_2 import io

from ..ace_plus_core import inpaint
from .common import CATEGORY

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
        inpaint.check_same_size(ucpixels, "ucpixels", cpixels, "cpixels")
        uc, mask4 = inpaint.prepare_pixels_and_mask(ucpixels, mask, pixels_name="ucpixels")
        c, _ = inpaint.prepare_pixels_and_mask(cpixels, mask, pixels_name="cpixels")
        uc_latent = vae.encode(uc)
        c_latent = vae.encode(c)
        values = {"concat_latent_image": torch.cat([uc_latent, c_latent], dim=1), "concat_mask": mask4}
        pos, neg = _conditioning_with(positive, negative, values)
        return io.NodeOutput(pos, neg, _latent(uc_latent, mask4, noise_mask))


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
        pixels, mask4 = inpaint.prepare_pixels_and_mask(pixels, mask, pixels_name="pixels")
        latent = vae.encode(pixels)
        pos, neg = _conditioning_with(positive, negative, {"concat_latent_image": latent, "concat_mask": mask4})
        return io.NodeOutput(pos, neg, _latent(latent, mask4, noise_mask))


NODES = (ACEPlusConditioning, ACEPlusLoraConditioning)
