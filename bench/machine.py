"""What machine a benchmark ran on (for the figures in docs/)."""

from __future__ import annotations

import platform
import re
from pathlib import Path


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def find_section(doc: Path, heading: str) -> tuple[str, re.Match | None]:
    """The text of ``doc`` (a new "# Benchmarks" page if absent) and the match of its section ``heading`` (the
    heading line up to the next "## " heading), None when it has none."""
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    return text, re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M).search(text)


def replace_section(doc: Path, text: str, match: re.Match | None, body: str) -> None:
    """Write ``text`` with the matched section replaced by ``body`` (appended when there was none)."""
    if match:
        text = text[: match.start()] + body + "\n" + text[match.end() :]
    else:
        text = text.rstrip("\n") + "\n\n" + body
    doc.write_text(text.rstrip("\n") + "\n")
