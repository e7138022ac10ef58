"""Search aliases and advanced (folded) widgets: passed to ComfyUI only where the running release knows them.

ComfyUI 0.3.75 and 0.3.52 know neither (``io.Schema`` has no ``search_aliases``, inputs no ``advanced``): the pack
must load there exactly as before. A release that knows them must receive them in ``/object_info``.
"""

from __future__ import annotations

import dataclasses
import inspect

ALIASES = {"ACEPlusCanvas": "face swap", "ACEPlusStitch": "inpaint crop stitch", "ACEPlusLoraProcessor": "try on",
           "ACEPlusFFTProcessor": "logo paste", "ACEPlusCanvasConditioning": "in-context"}
ADVANCED = {"ACEPlusCanvas": ("keep_pixels_rate", "canny_low_threshold", "canny_high_threshold", "mosaic_ratio",
                              "context_margin", "context_pixels", "min_crop_size", "upscale_crop"),
            "ACEPlusFFTProcessor": ("keep_pixels_rate",)}
COMMON = {"ACEPlusCanvas": ("layout", "task", "max_image_tokens", "crop_to_mask")}


def _inputs(info: dict) -> dict:
    return {**info["input"].get("required", {}), **info["input"].get("optional", {})}


def test_aliases_and_advanced_flags_follow_what_the_release_supports(comfy_host):
    from comfy_api.v0_0_2 import io

    knows_aliases = "search_aliases" in {f.name for f in dataclasses.fields(io.Schema)}
    knows_advanced = "advanced" in inspect.signature(io.Int.Input.__init__).parameters
    info = comfy_host.object_info()
    for node, alias in ALIASES.items():
        got = info[node].get("search_aliases")
        assert (alias in (got or [])) if knows_aliases else got is None, (node, got)
    for node, names in ADVANCED.items():
        inputs = _inputs(info[node])
        for name in names:
            options = inputs[name][1] if len(inputs[name]) > 1 else {}
            assert bool(options.get("advanced")) == knows_advanced, (node, name, options)
    for node, names in COMMON.items():  # the widgets people change stay in view
        inputs = _inputs(info[node])
        assert not any((inputs[n][1] if len(inputs[n]) > 1 else {}).get("advanced") for n in names)
