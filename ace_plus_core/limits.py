"""Numeric widget ranges, each written once: the node schemas are built from them, and the checks of values that
arrive through links (which ComfyUI does not range-check) use the same ones."""

from __future__ import annotations

from dataclasses import dataclass

from . import validate
from .control import DEFAULT_CANNY_HIGH, DEFAULT_CANNY_LOW, DEFAULT_MOSAIC_RATIO


@dataclass(frozen=True)
class Range:
    lo: int | float
    hi: int | float
    step: int | float
    default: int | float

    def widget(self) -> dict:
        """Keyword arguments of ``io.Int.Input`` / ``io.Float.Input``."""
        return dict(default=self.default, min=self.lo, max=self.hi, step=self.step)

    def check(self, value, name: str) -> int | float:
        """``value`` in range (an integer for an integer range), else a ``ValueError`` naming ``name``."""
        return validate.check_number(value, name, self.lo, self.hi, integer=isinstance(self.step, int))


#: Largest height/width of a generated area (ComfyUI's own ``MAX_RESOLUTION``): the ACE++ Canvas widgets and the
#: core's check of values from links and direct calls.
MAX_SIDE = 16384

# ACE++ Canvas
CANVAS_TOKENS = Range(64, 65536, 16, 4096)
KEEP_PIXELS_RATE = Range(0.01, 1.0, 0.01, 0.8)
CANVAS_SIDE = Range(16, MAX_SIDE, 16, 1024)
CANNY_LOW = Range(0, 2040, 1, DEFAULT_CANNY_LOW)
CANNY_HIGH = Range(0, 2040, 1, DEFAULT_CANNY_HIGH)
MOSAIC_RATIO = Range(1, 1024, 1, DEFAULT_MOSAIC_RATIO)
CONTEXT_MARGIN = Range(0.0, 4.0, 0.05, 0.25)
CONTEXT_PIXELS = Range(0, 4096, 8, 32)
MIN_CROP_SIZE = Range(16, 8192, 16, 384)
REPAINTING_SCALE = Range(0.0, 1.0, 0.05, 1.0)
OUTPAINT_PX = Range(0, 4096, 8, 0)
SOFT_SEAM_PX = Range(0, 256, 1, 0)
# ACE++ Stitch
GROW_MASK_PX = Range(0, 1024, 1, 8)
FEATHER_PX = Range(0, 1024, 1, 16)
# Drop-in processors: as official, with the official defects fixed (step 16 for max_seq_length, a max that is a
# multiple of 16 and still admits the official 1436 saved in old workflows).
PROCESSOR_SIDE = Range(256, 1440, 16, 1024)
MAX_SEQ_LENGTH = Range(1024, 5120, 16, 3072)
# ACE++ LoRA Loader
LORA_STRENGTH = Range(-100.0, 100.0, 0.01, 1.0)
