"""The ACE++ canvas node (new graphs) and the node that cuts the generated area back out of the decoded canvas."""

from __future__ import annotations

from comfy_api.v0_0_2 import io

from ..ace_plus_core import canvas as core
from ..ace_plus_core import control, limits, masks, stitch, validate
from ..ace_plus_core.crop import ContextSpec
from .common import ADVANCED, CANVAS_TASK_TOOLTIP, CATEGORY, Geometry, aliases, check_widgets, warning_ui

REFERENCE_MODES = ("auto", "resize_to_height", "keep_pixels_pad")
_AUTO_REFERENCE_MODE = {"lora": "resize_to_height", "fft": "keep_pixels_pad"}


class ACEPlusCanvas(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ACEPlusCanvas",
            display_name="ACE++ Canvas",
            category=CATEGORY,
            **aliases("face swap", "try on", "virtual try-on", "logo paste", "inpaint crop stitch", "in-context",
                      "outpaint", "reference generation"),
            description=(
                "Lays out the ACE++ canvas: optional reference on the left, the edit image (or a blank area for "
                "reference-only generation) on the right, one mask, fitted to a budget of image tokens (16x16 px "
                "each). With crop_to_mask the canvas holds only the region around the mask (plus context), so the "
                "whole budget renders the part that changes; 'ACE++ Stitch' then puts the result back into the "
                "full-resolution photo. When nothing needs downscaling the edit pixels are kept as they are (padded "
                "to a multiple of 16, never resampled)."
            ),
            inputs=[
                io.Combo.Input("layout", options=["lora", "fft"], default="lora",
                               tooltip="lora: FLUX.1-Fill + an ACE++ LoRA (one canvas image). fft: the ACE++ FFT "
                                       "model (UC and C images)."),
                io.Combo.Input("task", options=list(core.ALL_TASKS), tooltip=CANVAS_TASK_TOOLTIP),
                io.Combo.Input("reference_mode", options=list(REFERENCE_MODES), default="auto",
                               tooltip="How the reference is sized: resize_to_height (what the LoRA models were "
                                       "trained on), keep_pixels_pad (FFT: shrink only above keep_pixels_rate, pad), "
                                       "auto: the layout's own."),
                io.Int.Input("max_image_tokens", **limits.CANVAS_TOKENS.widget(),
                             tooltip="Image tokens of the whole canvas (reference + edit area), one per 16x16 "
                                     "pixels; sampling time grows with it. 4096 is a 1024x1024 canvas."),
                io.Float.Input("keep_pixels_rate", **limits.KEEP_PIXELS_RATE.widget(), **ADVANCED,
                               tooltip="keep_pixels_pad only: largest reference height as a fraction of the edit "
                                       "height."),
                io.Int.Input("width", **limits.CANVAS_SIDE.widget(),
                             tooltip="Width of the generated area when there is no edit_image."),
                io.Int.Input("height", **limits.CANVAS_SIDE.widget(),
                             tooltip="Height of the generated area when there is no edit_image."),
                io.Int.Input("canny_low_threshold", **limits.CANNY_LOW.widget(), **ADVANCED, optional=True,
                             tooltip="canny_repainting only: weak-edge threshold on OpenCV's scale (L1 Sobel "
                                     "magnitude of 0-255 values). Official: 100."),
                io.Int.Input("canny_high_threshold", **limits.CANNY_HIGH.widget(), **ADVANCED, optional=True,
                             tooltip="canny_repainting only: strong-edge threshold (edges start here and follow "
                                     "weak edges). Official: 200. Must be >= canny_low_threshold."),
                io.Int.Input("mosaic_ratio", **limits.MOSAIC_RATIO.widget(), **ADVANCED, optional=True,
                             tooltip="mosaic_repainting only: downscale factor; the mosaic cells are about this many "
                                     "pixels wide (image size // ratio cells per side). Official: 64."),
                io.Boolean.Input("crop_to_mask", default=True, optional=True,
                                 tooltip="Build the canvas from the region around the mask only (local edits: face "
                                         "swap, try-on, logo paste); connect ACE++ Stitch to return the full photo. "
                                         "An empty mask uses the whole image."),
                io.Float.Input("context_margin", **limits.CONTEXT_MARGIN.widget(), **ADVANCED, optional=True,
                               tooltip="crop_to_mask: context kept around the mask's box on each side, as a fraction "
                                       "of the box's own size."),
                io.Int.Input("context_pixels", **limits.CONTEXT_PIXELS.widget(), **ADVANCED, optional=True,
                             tooltip="crop_to_mask: extra context in pixels on each side."),
                io.Int.Input("min_crop_size", **limits.MIN_CROP_SIZE.widget(), **ADVANCED, optional=True,
                             tooltip="crop_to_mask: the crop is at least this many pixels on each side (when the "
                                     "image is that large), so small masks keep enough surroundings."),
                io.Boolean.Input("upscale_crop", default=True, optional=True, **ADVANCED,
                                 tooltip="crop_to_mask: enlarge a small crop (up to 4x) so the canvas uses the token "
                                         "budget; the model then renders the masked region with more pixels."),
                io.Float.Input("repainting_scale", **limits.REPAINTING_SCALE.widget(), optional=True,
                               tooltip="Task repainting: how much of the masked content is blanked before sampling. "
                                       "1 (default) blanks it, as repainting always did; lower values keep a faint "
                                       "version (0.5 + (x - 0.5) x (1 - scale)) for edits that should follow its "
                                       "shape or colours, e.g. a garment's folds. Ignored by the other tasks."),
                io.Int.Input("soft_seam_px", **limits.SOFT_SEAM_PX.widget(), optional=True,
                             tooltip="Soft seams: the soft_mask output is the mask grown by half this and feathered "
                                     "outward over this many pixels, for the sampler's noise mask (connect it to ACE++ "
                                     "Conditioning's sampling_mask; with Differential Diffusion the edit fades into "
                                     "its surroundings). The mask the model sees stays binary. 0 (default): off."),
                io.Int.Input("outpaint_top", **limits.OUTPAINT_PX.widget(), optional=True,
                             tooltip="Outpainting: pixels of new image added above the edit image (generated; "
                                     "ACE++ Stitch returns the enlarged photo with the original pixels in place)."),
                io.Int.Input("outpaint_bottom", **limits.OUTPAINT_PX.widget(), optional=True,
                             tooltip="Outpainting: pixels added below the edit image."),
                io.Int.Input("outpaint_left", **limits.OUTPAINT_PX.widget(), optional=True,
                             tooltip="Outpainting: pixels added left of the edit image."),
                io.Int.Input("outpaint_right", **limits.OUTPAINT_PX.widget(), optional=True,
                             tooltip="Outpainting: pixels added right of the edit image. With outpainting an empty "
                                     "edit_mask marks only the new area."),
                io.Image.Input("reference_image", optional=True,
                               tooltip="Reference (face, object, logo, garment) placed left of the edit area."),
                io.Image.Input("edit_image", optional=True,
                               tooltip="Image to edit. Leave empty for reference-only generation."),
                io.Mask.Input("edit_mask", optional=True,
                              tooltip="1 where the edit image changes. Empty or LoadImage's 64x64 placeholder: "
                                      "edit everything."),
                io.Image.Input("control_image", optional=True,
                               tooltip="Guidance under the mask for no_preprocess and the control tasks (a line "
                                       "drawing, depth map, grayscale image, e.g. from a preprocessor node). "
                                       "Required by contour_repainting and depth_repainting; the other control "
                                       "tasks derive it from the edit image when it is not connected."),
                io.Image.Input("reference_image_2", optional=True,
                               tooltip="Experimental (the released models were trained with one reference): a second "
                                       "reference, right of reference_image (e.g. a garment's back). The references "
                                       "share the token budget."),
                io.Image.Input("reference_image_3", optional=True,
                               tooltip="Experimental: a third reference, right of reference_image_2."),
            ],
            outputs=[
                io.Image.Output(display_name="canvas",
                                tooltip="LoRA layout: the conditioning image. FFT: the canvas before the UC/C split."),
                io.Image.Output(display_name="uc_image", tooltip="FFT: canvas with the masked area gray."),
                io.Image.Output(display_name="c_image", tooltip="FFT: gray except the guidance under the mask."),
                io.Mask.Output(display_name="mask", tooltip="1 where the canvas is generated, 0 over the reference."),
                Geometry.Output(display_name="geometry",
                                tooltip="Where the edit area lies in the canvas and the photo, per batch item: "
                                        "connect to ACE++ Stitch (or ACE++ Cut Back)."),
                io.Mask.Output(display_name="soft_mask",
                               tooltip="The mask with soft seams (soft_seam_px; equal to mask when it is 0), for "
                                       "ACE++ Conditioning's sampling_mask."),
            ],
            hidden=[io.Hidden.unique_id],  # where warning_ui shows its text
        )

    @classmethod
    def _check_canny(cls, low, high) -> None:
        check_widgets(cls, canny_low_threshold=low, canny_high_threshold=high)
        control.check_canny_thresholds(low, high, ("canny_low_threshold", "canny_high_threshold"))

    @classmethod
    def validate_inputs(cls, canny_low_threshold=None, canny_high_threshold=None) -> bool | str:
        """low <= high spans two inputs; ComfyUI then skips its own range check of both, so this one makes it.
        None (unset or linked) counts as the default here; execute checks the values it gets."""
        return validate.message_of(
            cls._check_canny, limits.CANNY_LOW.default if canny_low_threshold is None else canny_low_threshold,
            limits.CANNY_HIGH.default if canny_high_threshold is None else canny_high_threshold)

    @classmethod
    def execute(cls, layout, task, reference_mode, max_image_tokens, keep_pixels_rate, width, height,
                canny_low_threshold=limits.CANNY_LOW.default, canny_high_threshold=limits.CANNY_HIGH.default,
                mosaic_ratio=limits.MOSAIC_RATIO.default, crop_to_mask=True,
                context_margin=limits.CONTEXT_MARGIN.default, context_pixels=limits.CONTEXT_PIXELS.default,
                min_crop_size=limits.MIN_CROP_SIZE.default, upscale_crop=True,
                repainting_scale=limits.REPAINTING_SCALE.default, soft_seam_px=0, outpaint_top=0, outpaint_bottom=0,
                outpaint_left=0, outpaint_right=0, reference_image=None, edit_image=None, edit_mask=None,
                control_image=None, reference_image_2=None, reference_image_3=None) -> io.NodeOutput:
        check_widgets(cls, layout=layout, task=task, reference_mode=reference_mode, max_image_tokens=max_image_tokens,
                      keep_pixels_rate=keep_pixels_rate, width=width, height=height, mosaic_ratio=mosaic_ratio,
                      context_margin=context_margin, context_pixels=context_pixels, min_crop_size=min_crop_size,
                      repainting_scale=repainting_scale, soft_seam_px=soft_seam_px, outpaint_top=outpaint_top,
                      outpaint_bottom=outpaint_bottom, outpaint_left=outpaint_left, outpaint_right=outpaint_right)
        cls._check_canny(canny_low_threshold, canny_high_threshold)
        mode = _AUTO_REFERENCE_MODE[layout] if reference_mode == "auto" else reference_mode
        options = dict(low_threshold=canny_low_threshold, high_threshold=canny_high_threshold, ratio=mosaic_ratio)
        context = None
        if crop_to_mask and edit_image is not None:
            context = ContextSpec(margin_rel=context_margin, margin_px=context_pixels, min_size=min_crop_size,
                                  upscale=upscale_crop)
        refs = [reference_image, reference_image_2, reference_image_3]
        r = core.build_canvas(layout, task, mode, refs, edit_image, edit_mask, max_image_tokens, keep_pixels_rate,
                              height, width, control_image=control_image, control_options=options, context=context,
                              repainting_scale=repainting_scale,
                              outpaint=(outpaint_top, outpaint_bottom, outpaint_left, outpaint_right))
        uc = r.uc_image if r.uc_image is not None else r.image
        c = r.c_image if r.c_image is not None else r.image
        soft = core.soft_mask(r.mask, r.geometry, soft_seam_px) if soft_seam_px else r.mask
        # A connected but empty mask edits everything (outpainting: only the new area); say so, it is rarely meant.
        empty = masks.empty_mask_warning(edit_mask) if edit_image is not None and not any(
            (outpaint_top, outpaint_bottom, outpaint_left, outpaint_right)) else None
        return io.NodeOutput(r.image, uc, c, r.mask, r.geometry, soft, ui=warning_ui(cls, empty))


class ACEPlusCutBack(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ACEPlusCutBack",
            display_name="ACE++ Cut Back",
            category=CATEGORY,
            description=(
                "Cuts the generated edit area out of the decoded canvas at its exact boundary (no reference strip, "
                "no lost columns) and scales it back to the size it had in the edit image."
            ),
            inputs=[
                io.Image.Input("image", tooltip="The decoded canvas (VAE Decode of the sampled latent): one image per "
                                                "canvas, or any number of variations of a canvas made from one "
                                                "photo (e.g. the latent through RepeatLatentBatch)."),
                Geometry.Input("geometry", tooltip="The geometry output of the ACE++ Canvas that made this canvas."),
            ],
            outputs=[
                io.Image.Output(display_name="image",
                                tooltip="The generated area at the edit image's size (its box: the whole image, the region around the mask, or the centre 4:1 window of a very wide photo that cannot be padded within the budget)."),
            ],
        )

    @classmethod
    def execute(cls, image, geometry) -> io.NodeOutput:
        return io.NodeOutput(stitch.cut_back(image, geometry))


class ACEPlusStitch(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ACEPlusStitch",
            display_name="ACE++ Stitch",
            category=CATEGORY,
            **aliases("inpaint crop stitch", "paste back", "composite"),
            description=(
                "Puts the generated area back into the original full-resolution edit image: cuts it out of the "
                "decoded canvas at the exact boundary, scales it back to its box in the photo and blends it in "
                "through the mask, grown and feathered. Pixels outside the grown + feathered mask are the original "
                "ones, unchanged. For reference-only generation it returns the generated image; for outpainting the "
                "enlarged photo, the original pixels in place."
            ),
            inputs=[
                io.Image.Input("image", tooltip="The decoded canvas (VAE Decode of the sampled latent): one image per "
                                                "canvas, or any number of variations of a canvas made from one "
                                                "photo (e.g. the latent through RepeatLatentBatch)."),
                Geometry.Input("geometry", tooltip="The geometry output of the ACE++ Canvas that made this canvas."),
                io.Image.Input("original_image", optional=True,
                               tooltip="The edit image that went into ACE++ Canvas (full resolution)."),
                io.Mask.Input("mask", optional=True,
                              tooltip="The edit mask that went into ACE++ Canvas; where the result is blended in. "
                                      "Not connected: the whole crop is replaced."),
                io.Int.Input("grow_mask_px", **limits.GROW_MASK_PX.widget(),
                             tooltip="Grow the mask by this many pixels before blending (covers seams at its edge)."),
                io.Int.Input("feather_px", **limits.FEATHER_PX.widget(),
                             tooltip="Blend over this many pixels outside the grown mask (soft transition; an odd value reaches one pixel further, as the next even one)."),
                io.Boolean.Input("color_match", default=False,
                                 tooltip="Match the generated area's colour statistics to the untouched context "
                                         "around it before blending (removes colour shifts at the seam)."),
            ],
            outputs=[
                io.Image.Output(display_name="image", tooltip="The original image with the edit stitched in."),
            ],
        )

    @classmethod
    def execute(cls, image, geometry, grow_mask_px, feather_px, color_match, original_image=None,
                mask=None) -> io.NodeOutput:
        return io.NodeOutput(stitch.stitch(image, geometry, original_image, mask, grow_mask_px, feather_px,
                                           color_match))


NODES = (ACEPlusCanvas, ACEPlusStitch, ACEPlusCutBack)
