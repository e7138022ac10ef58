"""Control tasks inside real ComfyUI graphs: every task offline, an external control image (as any preprocessor
node would give) driving contour_repainting end to end, and the errors a user sees without one."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from graphs import Graph, sampler, tiny_loaders
from PIL import Image

from ace_plus_core import control
from ace_plus_core.canvas import ALL_TASKS, TASKS

W, H = 128, 96
HOLE = (20, 30, 40, 50)  # top, left, h, w


@pytest.fixture
def probe(comfy_host):
    return comfy_host.node_class_mappings["ACEPlusTestOnlyProbe"].RECORDED.__getitem__


@pytest.fixture
def images(comfy_host, input_image):
    """An edit image with a hole (LoadImage's MASK = 1 there) and a line drawing standing in for a preprocessor's
    output; returns their names and the pixels as the graph sees them."""
    edit = input_image("ctl_edit.png", W, H, hole=HOLE, seed=3)
    drawing = np.zeros((H, W, 3), np.uint8)
    drawing[10::12, :] = 255
    drawing[:, 7::16] = 255
    Image.fromarray(drawing, "RGB").save(comfy_host.input_dir / "ctl_lines.png")
    edit_px = torch.from_numpy(np.asarray(Image.open(comfy_host.input_dir / edit))[..., :3] / 255.0).float()
    mask = torch.zeros((H, W), dtype=torch.bool)
    mask[HOLE[0] : HOLE[0] + HOLE[2], HOLE[1] : HOLE[1] + HOLE[3]] = True
    return {"edit": edit, "lines": "ctl_lines.png", "edit_px": edit_px[None], "lines_px": torch.from_numpy(
        drawing / 255.0).float()[None], "mask": mask}


def _options(schema, name: str) -> list:
    return next(i for i in schema.inputs if i.id == name).options


def test_task_lists_and_the_new_optional_input(comfy_host):
    nodes = comfy_host.node_class_mappings
    for node_id in ("ACEPlusLoraProcessor", "ACEPlusFFTProcessor"):
        schema = nodes[node_id].GET_SCHEMA()
        assert _options(schema, "task_type") == list(TASKS)  # the official names, in the official order
        assert schema.inputs[-1].id == "control_image" and schema.inputs[-1].optional
    canvas = nodes["ACEPlusCanvas"].GET_SCHEMA()
    assert _options(canvas, "task") == list(ALL_TASKS)
    ids = [i.id for i in canvas.inputs]
    assert ids[ids.index("height") + 1 : ids.index("height") + 4] == [
        "canny_low_threshold", "canny_high_threshold", "mosaic_ratio"]


def test_every_task_runs_in_a_graph_with_sockets_blocked(comfy_host, images, probe, no_network):
    g = Graph()
    edit = g.add("LoadImage", image=images["edit"])
    lines = g.add("LoadImage", image=images["lines"])
    for task in ALL_TASKS:
        ctl = {"control_image": lines[0]} if task in control.EXTERNAL_TASKS else {}
        cv = g.add("ACEPlusCanvas", layout="fft", task=task, reference_mode="auto", max_image_tokens=4096,
                   keep_pixels_rate=0.8, width=1024, height=1024, canny_low_threshold=50, canny_high_threshold=150,
                   mosaic_ratio=16, crop_to_mask=False, edit_image=edit[0], edit_mask=edit[1], **ctl)
        g.add("ACEPlusTestOnlyProbe", label=f"canvas_{task}", image=cv[2])  # C: the guidance under the mask
    for task in TASKS:
        ctl = {"control_image": lines[0]} if task in control.EXTERNAL_TASKS else {}
        lora = g.add("ACEPlusLoraProcessor", use_reference=True, height=1024, width=1024, task_type=task,
                     max_seq_length=1024, edit_image=edit[0], edit_mask=edit[1], **ctl)
        fft = g.add("ACEPlusFFTProcessor", use_reference=True, height=1024, width=1024, task_type=task,
                    keep_pixels_rate=0.8, max_seq_length=1024, edit_image=edit[0], edit_mask=edit[1], **ctl)
        g.add("ACEPlusTestOnlyProbe", label=f"lora_{task}", image=lora[0])
        g.add("ACEPlusTestOnlyProbe", label=f"fft_{task}", image=fft[1])
    comfy_host.run(g.prompt())

    edit_px, mask = images["edit_px"], images["mask"]
    expected = {
        "recolorizing": control.recolorizing(edit_px),
        "canny_repainting": control.canny_repainting(edit_px, 50, 150),
        "mosaic_repainting": control.mosaic_repainting(edit_px, 16),
        "contour_repainting": images["lines_px"],
        "depth_repainting": images["lines_px"],
        "no_preprocess": edit_px,
    }
    for task, guide in expected.items():  # 96 x 128 fits every budget here: no resampling, the pixels themselves
        for label in [f"canvas_{task}"] + ([f"lora_{task}", f"fft_{task}"] if task in TASKS else []):
            out = probe(label)
            assert out.shape == (1, H, W, 3), label
            torch.testing.assert_close(out[0][mask], guide[0][mask], rtol=0, atol=2.0**-25, msg=label)
            if label.startswith("lora"):
                torch.testing.assert_close(out[0][~mask], edit_px[0][~mask], rtol=0, atol=2.0**-25, msg=label)
    assert (probe("lora_repainting")[0][mask] == 0.5).all()


def test_contour_with_an_external_control_image_runs_end_to_end(comfy_host, tiny_models, images, probe,
                                                                 no_network):
    g = Graph()
    model, text, vae = tiny_loaders(g, "tiny_flux_fill.safetensors", "a house drawn from these lines")
    edit = g.add("LoadImage", image=images["edit"])
    lines = g.add("LoadImage", image=images["lines"])  # stands in for any lineart preprocessor node
    cv = g.add("ACEPlusCanvas", layout="lora", task="contour_repainting", reference_mode="auto",
               max_image_tokens=4096, keep_pixels_rate=0.8, width=1024, height=1024, crop_to_mask=False,
               edit_image=edit[0], edit_mask=edit[1], control_image=lines[0])
    cond = g.add("ACEPlusLoraConditioning", positive=text[0], negative=text[0], vae=vae[0], pixels=cv[0],
                 mask=cv[3], noise_mask=True)
    samples = sampler(g, model[0], cond[0], cond[1], cond[2])
    decoded = g.add("VAEDecode", samples=samples[0], vae=vae[0])
    back = g.add("ACEPlusCutBack", image=decoded[0], geometry=cv[4])
    g.add("ACEPlusTestOnlyProbe", label="contour_canvas", image=cv[0])
    g.add("ACEPlusTestOnlyProbe", label="contour_back", image=back[0])
    comfy_host.run(g.prompt())

    canvas, mask = probe("contour_canvas"), images["mask"]
    torch.testing.assert_close(canvas[0][mask], images["lines_px"][0][mask], rtol=0, atol=2.0**-25)
    torch.testing.assert_close(canvas[0][~mask], images["edit_px"][0][~mask], rtol=0, atol=2.0**-25)
    out = probe("contour_back")
    assert out.shape == (1, H, W, 3) and torch.isfinite(out).all()


@pytest.mark.parametrize(
    ("node", "widgets", "task"),
    [
        ("ACEPlusCanvas", dict(layout="lora", task="contour_repainting", reference_mode="auto",
                               max_image_tokens=4096, keep_pixels_rate=0.8, width=1024, height=1024),
         "contour_repainting"),
        ("ACEPlusFFTProcessor", dict(use_reference=True, height=1024, width=1024, task_type="depth_repainting",
                                     keep_pixels_rate=0.8, max_seq_length=1024), "depth_repainting"),
        ("ACEPlusLoraProcessor", dict(use_reference=True, height=1024, width=1024, task_type="contour_repainting",
                                      max_seq_length=1024), "contour_repainting"),
    ],
)
def test_neural_tasks_without_a_control_image_say_what_to_connect(comfy_host, images, node, widgets, task):
    from comfy_host import GraphError

    g = Graph()
    edit = g.add("LoadImage", image=images["edit"])
    n = g.add(node, edit_image=edit[0], edit_mask=edit[1], **widgets)
    g.add("ACEPlusTestOnlyProbe", label="unused", image=n[0])
    with pytest.raises(GraphError) as err:
        comfy_host.run(g.prompt())
    message = str(err.value)
    assert "ValueError" in message
    assert f"task '{task}' needs a control image" in message
    assert "connect one to control_image" in message


def test_canny_thresholds_in_the_wrong_order_fail_validation(comfy_host):
    from comfy_host import GraphError

    g = Graph()
    n = g.add("ACEPlusCanvas", layout="lora", task="canny_repainting", reference_mode="auto", max_image_tokens=1024,
              keep_pixels_rate=0.8, width=512, height=512, canny_low_threshold=200, canny_high_threshold=100)
    g.add("ACEPlusTestOnlyProbe", label="unused", image=n[0])
    with pytest.raises(GraphError, match="canny_low_threshold"):
        comfy_host.validate(g.prompt())
