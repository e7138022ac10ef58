"""Old workflows give the same canvases, bit for bit.

tests/data/golden_canvases.json holds, for the nine official ACE++ workflows and the 13 examples, the SHA-256 and
shape of every IMAGE/MASK output and the value of every INT output of their canvas-building nodes (ACE++ Canvas,
ACE++ LoRA Processor, ACE++ FFT Processor), computed by tests/golden_canvases.py with the pack of a frozen commit.
Each test converts one workflow file with the working tree's node definitions (new widgets and sockets take
their defaults), runs its canvas sub-graph on the real executor with the working tree's pack and compares.

A deliberate change to what old workflows produce needs a new golden file:
``python tests/golden_canvases.py --pack <checkout of the new reference> --out tests/data/golden_canvases.json``.
"""

from __future__ import annotations

import json

import golden_canvases as gc
import pytest
from paths import OFFICIAL_WORKFLOWS

DOC = json.loads(gc.GOLDEN.read_text())
GOLDEN = DOC["workflows"]
# The workflows that existed at the reference commit (workflows added since have no golden canvases).
FILES = [p for p in gc.workflow_files() if any(k.split("+")[0] == gc.workflow_key(p) for k in GOLDEN)]


@pytest.fixture(scope="module", autouse=True)
def same_platform():
    if gc.platform() != DOC["platform"]:
        pytest.skip(f"the golden digests hold for {DOC['platform']}, this is {gc.platform()}: resampled floats "
                    "differ in their last bits; regenerate the file on this platform from the reference commit")


@pytest.mark.parametrize("path", FILES, ids=gc.workflow_key)
def test_old_workflow_gives_the_golden_canvases(comfy_host, path):
    current = gc.compute(comfy_host, [path])
    assert len(current) == 1, f"{gc.workflow_key(path)}: no canvas node ran"
    ((key, got),) = current.items()
    assert key in GOLDEN, f"{key}: not in {gc.GOLDEN.name}; regenerate it from the reference commit"
    want = GOLDEN[key]
    problems = []
    for name in sorted(want):  # outputs added since the reference are new sockets: not compared
        node, output = name.rsplit(".", 1)
        if got.get(name) != want.get(name):
            problems.append(f"{key}: node {node}, output {output}: {_show(got.get(name))} "
                            f"!= golden {_show(want.get(name))}")
    assert not problems, "\n".join(problems)


def _show(record: dict | None) -> str:
    if record is None:
        return "missing"
    if "value" in record:
        return f"value {record['value']}"
    return f"shape {record['shape']} sha256 {record['sha256'][:16]}"


def test_every_golden_workflow_is_checked():
    if not OFFICIAL_WORKFLOWS.is_dir():
        pytest.skip(f"the official ACE++ workflows are not in {OFFICIAL_WORKFLOWS} (set ACE_OFFICIAL_WORKFLOWS)")
    keys = {gc.workflow_key(p) for p in FILES}
    unchecked = [k for k in GOLDEN if k.split("+")[0] not in keys]
    assert not unchecked, f"workflows in {gc.GOLDEN.name} whose file is gone: {unchecked}"
    assert len(GOLDEN) == 22
