"""Drop-in replacements for the official ACE++ processors (ids, inputs in order, outputs unchanged).

Their canvases equal the official ones for every input the official code accepts, so the released models see
what they were trained on; what the official nodes got wrong is fixed (see ace_plus_core/canvas.py): SLICE_W is
the exact first column of the edit area, aspect ratios above 4:1 are cropped instead of crashing, a mask of
another size is never silently replaced by "edit everything", every batch item gets its own canvas.
"""

from __future__ import annotations

from comfy_api.v0_0_2 import io

from ..ace_plus_core import canvas as core
from ..ace_plus_core import limits
from .common import ADVANCED, CATEGORY, TASK_TOOLTIP, aliases, check_widgets


def _common_inputs(with_keep_pixels: bool) -> list:
    inputs = [
        io.Boolean.Input("use_reference", default=True,
                         tooltip="Put reference_image left of the edit image (ignored without an edit image: "
                                 "reference-only generation always uses the reference)."),
        io.Int.Input("height", **limits.PROCESSOR_SIDE.widget(),
                     tooltip="Height of the generated image when there is no edit_image (reference-only)."),
        io.Int.Input("width", **limits.PROCESSOR_SIDE.widget(),
                     tooltip="Width of the generated image when there is no edit_image (reference-only)."),
        io.Combo.Input("task_type", options=list(core.TASKS), tooltip=TASK_TOOLTIP),
    ]
    if with_keep_pixels:
        inputs.append(io.Float.Input(
            "keep_pixels_rate", **limits.KEEP_PIXELS_RATE.widget(), **ADVANCED,
            tooltip="A reference taller than this fraction of the edit height is shrunk to it (never enlarged), "
                    "then padded to the edit height. Must be in (0, 1]."))
    inputs += [
        io.Int.Input("max_seq_length", **limits.MAX_SEQ_LENGTH.widget(),
                     tooltip="Token budget as in the official node (16x16 px per token; the LoRA processor "
                             "officially allows twice this many canvas tokens)."),
        io.Image.Input("reference_image", optional=True,
                       tooltip="Reference (face, object, logo, garment) placed left of the edit area."),
        io.Image.Input("edit_image", optional=True,
                       tooltip="Image to edit. Leave empty for reference-only generation."),
        io.Mask.Input("edit_mask", optional=True,
                      tooltip="1 where the edit image changes. Empty or LoadImage's 64x64 placeholder: edit all."),
        # Not in the official node; optional and last, so saved workflows still load.
        io.Image.Input("control_image", optional=True,
                       tooltip="Guidance under the mask (a line drawing, depth map ..., e.g. from a preprocessor "
                               "node). Required by contour_repainting and depth_repainting; recolorizing derives "
                               "its own when it is not connected; no_preprocess uses it if connected."),
    ]
    return inputs


_INT_OUTPUTS = [
    io.Int.Output(display_name="OUT_H", tooltip="Edit image height before budget resizing (after any 4:1 crop)."),
    io.Int.Output(display_name="OUT_W", tooltip="Edit image width before budget resizing (after any 4:1 crop)."),
    io.Int.Output(display_name="SLICE_W",
                  tooltip="Exact first column of the edit area in the canvas: crop the decoded image from here "
                          "(ImageCrop x) to drop the reference strip."),
]


class ACEPlusLoraProcessor(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ACEPlusLoraProcessor",
            **aliases("face swap", "try on", "logo paste", "in-context"),
            display_name="ACE++ LoRA Processor (drop-in)",
            category=f"{CATEGORY}/legacy",
            description=(
                "Builds the ACE++ canvas for FLUX.1-Fill + an ACE++ LoRA exactly as the official node does "
                "(reference resized to the edit height, budget 2 x max_seq_length, nearest-exact resampling), "
                "with its crashes and the SLICE_W offset fixed. For new graphs prefer 'ACE++ Canvas'."
            ),
            inputs=_common_inputs(with_keep_pixels=False),
            outputs=[
                io.Image.Output(display_name="IMAGE", tooltip="The canvas: reference | edit image."),
                io.Mask.Output(display_name="MASK", tooltip="1 where the canvas is generated, 0 over the reference."),
                *_INT_OUTPUTS,
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, use_reference, height, width, task_type, max_seq_length, reference_image=None,
                edit_image=None, edit_mask=None, control_image=None) -> io.NodeOutput:
        check_widgets(cls, height=height, width=width, task_type=task_type, max_seq_length=max_seq_length)
        r = core.official_processor("lora", reference_image, edit_image, edit_mask, use_reference, task_type,
                                    height, width, max_seq_length, control_image=control_image)
        return io.NodeOutput(r.image, r.mask, r.out_h, r.out_w, r.slice_w)


class ACEPlusFFTProcessor(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ACEPlusFFTProcessor",
            **aliases("face swap", "try on", "logo paste", "in-context"),
            display_name="ACE++ FFT Processor (drop-in)",
            category=f"{CATEGORY}/legacy",
            description=(
                "Builds the ACE++ canvas pair (UC, C) for the ACE++ FFT model exactly as the official node does "
                "(reference kept at pixel size up to keep_pixels_rate, padded; budget max_seq_length), with its "
                "crashes and the SLICE_W offset fixed. For new graphs prefer 'ACE++ Canvas'."
            ),
            inputs=_common_inputs(with_keep_pixels=True),
            outputs=[
                io.Image.Output(display_name="UC_IMAGE", tooltip="The canvas with the masked area gray."),
                io.Image.Output(display_name="C_IMAGE", tooltip="Gray except under the mask: the guidance pixels."),
                io.Mask.Output(display_name="MASK", tooltip="1 where the canvas is generated, 0 over the reference."),
                *_INT_OUTPUTS,
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, use_reference, height, width, task_type, keep_pixels_rate, max_seq_length,
                reference_image=None, edit_image=None, edit_mask=None, control_image=None) -> io.NodeOutput:
        check_widgets(cls, height=height, width=width, task_type=task_type, keep_pixels_rate=keep_pixels_rate,
                      max_seq_length=max_seq_length)
        r = core.official_processor("fft", reference_image, edit_image, edit_mask, use_reference, task_type,
                                    height, width, max_seq_length, keep_pixels_rate, control_image=control_image)
        return io.NodeOutput(r.uc_image, r.c_image, r.mask, r.out_h, r.out_w, r.slice_w)


NODES = (ACEPlusLoraProcessor, ACEPlusFFTProcessor)
