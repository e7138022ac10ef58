"""The example pictures reach ComfyUI's input folder at start-up (nodes/example_inputs.py), so that a template opens
with its images: only ``input/ace_plus/`` is written, a file already there is never replaced, a read-only input
folder costs only the pictures (one log line), and every workflow loads its pictures from there."""

from __future__ import annotations

import errno
import json
import logging
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SOURCES = sorted(p for p in REPO.glob("workflow_example_*/inputs/*") if p.suffix in (".png", ".jpg"))


@pytest.fixture(scope="module")
def example_inputs(comfy_host):
    """The pack's module as ComfyUI imported it."""
    return next(m for k, m in sys.modules.items() if k.endswith("ace_plus.nodes.example_inputs"))


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _expected() -> dict[str, bytes]:
    return {f"ace_plus/{p.name}": p.read_bytes() for p in SOURCES}


def test_the_running_comfyui_got_the_pictures_at_start_up(comfy_host):
    assert SOURCES
    for src in SOURCES:
        assert (comfy_host.input_dir / "ace_plus" / src.name).read_bytes() == src.read_bytes(), src.name


def test_every_workflow_loads_its_pictures_from_the_subfolder(example_inputs):
    files = sorted(REPO.glob("workflow_example_*/*.json")) + sorted(REPO.glob("example_workflows/*.json"))
    seen = 0
    for f in files:
        doc = json.loads(f.read_text())
        nodes = doc["nodes"] if "nodes" in doc else [{"type": v["class_type"], "widgets_values": [v["inputs"]["image"]]}
                                                     for v in doc.values() if v["class_type"].startswith("LoadImage")]
        for node in nodes:
            if node["type"] in ("LoadImage", "LoadImageMask"):
                sub, _, name = node["widgets_values"][0].partition("/")
                assert sub == example_inputs.SUBFOLDER and name in {p.name for p in SOURCES}, \
                    f"{f.name}: {node['widgets_values']}"
                seen += 1
    assert seen > 30


def test_copies_into_its_subfolder_only_and_once(example_inputs, tmp_path):
    assert sorted(example_inputs.install(tmp_path)) == sorted({p.name for p in SOURCES})
    assert _tree(tmp_path) == _expected()  # nothing outside input/ace_plus/
    assert example_inputs.install(tmp_path) == []  # the next start: nothing to do
    assert _tree(tmp_path) == _expected()


def test_never_replaces_a_file_that_is_there(example_inputs, tmp_path):
    mine = tmp_path / "ace_plus" / "coffee.jpg"
    mine.parent.mkdir()
    mine.write_bytes(b"the user's own picture")
    written = example_inputs.install(tmp_path)
    assert "coffee.jpg" not in written and mine.read_bytes() == b"the user's own picture"
    assert _tree(tmp_path) == {**_expected(), "ace_plus/coffee.jpg": b"the user's own picture"}


def test_a_subfolder_that_is_a_link_elsewhere_is_not_written_through(example_inputs, tmp_path, caplog):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "input").mkdir()
    (tmp_path / "input" / "ace_plus").symlink_to(elsewhere, target_is_directory=True)
    with caplog.at_level(logging.INFO):
        assert example_inputs.install(tmp_path / "input") == []
    assert list(elsewhere.iterdir()) == []
    assert len([r for r in caplog.records if "example images were not copied" in r.getMessage()]) == 1


@pytest.mark.parametrize("where", ["folder", "files"])
def test_a_read_only_input_folder_costs_only_the_pictures_and_one_line(example_inputs, tmp_path, monkeypatch, caplog,
                                                                        where):
    """The input folder refuses writes (EROFS; as root, file modes are not enforced, so the refusal is injected at
    the two calls that write: creating the subfolder, creating a file)."""
    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    if where == "folder":
        monkeypatch.setattr(Path, "mkdir", refuse)
    else:
        (tmp_path / "ace_plus").mkdir()
        monkeypatch.setattr(example_inputs, "open", refuse, raising=False)
    with caplog.at_level(logging.DEBUG):
        assert example_inputs.install(tmp_path) == []
    lines = [r for r in caplog.records if r.name.endswith("example_inputs")]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert "Read-only file system" in lines[0].getMessage() and "workflow_example_" in lines[0].getMessage()
    assert _tree(tmp_path) == {}
