"""The example workflows' input pictures, made available in ComfyUI's input folder at start-up.

The templates (example_workflows/) and the workflows in workflow_example_*/ load their pictures as
``ace_plus/<name>`` (LoadImage takes "subfolder/name"); this copies ``workflow_example_*/inputs/*`` there once,
when ComfyUI loads the pack, so that a template opens with its images and runs.

Rules: only ``<input folder>/ace_plus/`` is written; a file already there is never replaced (the same bytes: nothing
to do; other bytes: the user's, left alone; files are created exclusively, never opened over an existing one); a
read-only input folder (or any other failure to write) costs only the example pictures,
said in one log line.
"""

from __future__ import annotations

import logging
from pathlib import Path

import folder_paths

logger = logging.getLogger(__name__)

#: The subfolder of ComfyUI's input folder that holds the example pictures (the workflows name it).
SUBFOLDER = "ace_plus"
PACK = Path(__file__).resolve().parent.parent
PICTURES = (".png", ".jpg", ".jpeg", ".webp")


def example_files(pack: Path = PACK) -> dict[str, Path]:
    """{file name: source} of every example input picture (a name in both example folders: the first, by folder
    name; the test suite checks that same-named files are identical)."""
    files: dict[str, Path] = {}
    for path in sorted(pack.glob("workflow_example_*/inputs/*")):
        if path.is_file() and path.suffix.lower() in PICTURES:
            files.setdefault(path.name, path)
    return files


def _write_new(src: Path, dst: Path) -> None:
    """``src``'s bytes at ``dst``, created here (exclusive: a file that appeared meanwhile is never replaced); a
    partial file is removed."""
    data = src.read_bytes()
    with open(dst, "xb") as f:
        try:
            f.write(data)
        except BaseException:
            f.close()
            dst.unlink()
            raise


def install(input_dir: str | Path | None = None, pack: Path = PACK) -> list[str]:
    """Copy the example pictures into ``<input_dir>/ace_plus/`` (default: ComfyUI's input folder) where missing.
    Returns the names written; never raises for a folder it cannot write (one log line says what was skipped)."""
    root = Path(input_dir if input_dir is not None else folder_paths.get_input_directory())
    target = root / SUBFOLDER
    written: list[str] = []
    try:
        if target.is_symlink() or (target.exists() and not target.is_dir()):
            raise OSError(f"{target} is not a folder of its own")
        target.mkdir(parents=True, exist_ok=True)
        for name, src in example_files(pack).items():
            dst = target / name
            if dst.exists() or dst.is_symlink():
                continue  # ours from an earlier start, or the user's: left alone either way
            _write_new(src, dst)
            written.append(name)
    except OSError as e:
        logger.warning("ACE++: the example images were not copied into %s (%s); the templates' image nodes stay "
                       "empty until you copy custom_nodes/<this pack>/workflow_example_*/inputs/ there or load "
                       "your own images.", target, e.strerror or e)
        return written
    if written:
        logger.info("ACE++: %d example image(s) copied into %s for the templates", len(written), target)
    return written
