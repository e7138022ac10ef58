"""Old workflows give the same canvases, bit for bit.

tests/data/golden_canvases.json holds, for the nine official ACE++ workflows and the 13 examples, the SHA-256 and
shape of every IMAGE/MASK output and the value of every INT output of their canvas-building nodes (ACE++ Canvas,
ACE++ LoRA Processor, ACE++ FFT Processor), computed by tests/golden_canvases.py with the pack of a frozen commit.
Each test converts one workflow file with the working tree's node definitions (new widgets and sockets take
their defaults), runs its canvas sub-graph on the real executor with the working tree's pack and compares.

Resampled floats are bit-exact only within one family of CPU kernels, so there is one file per family, made from
the same reference commit: tests/data/golden_canvases.json (AVX2 and AVX-512 give the same bits) and
tests/data/golden_canvases_default.json (``ATEN_CPU_CAPABILITY=default``, the plain kernels every x86-64 CPU runs).
The test takes the file of the kernels it runs on; both hold the same shapes and INT values.

A deliberate change to what old workflows produce needs new golden files (run once as is and once under
``ATEN_CPU_CAPABILITY=default``, with ``--out tests/data/golden_canvases_default.json``):
``python tests/golden_canvases.py --pack <checkout of the new reference> --out tests/data/golden_canvases.json``.
"""

from __future__ import annotations

import json

import golden_canvases as gc
import pytest
from paths import OFFICIAL_WORKFLOWS

pytestmark = pytest.mark.numeric

DOCS = {path: json.loads(path.read_text()) for path in gc.GOLDEN_FILES}
MATCHING = [doc for doc in DOCS.values() if doc["platform"] == gc.platform()]
DOC = MATCHING[0] if MATCHING else DOCS[gc.GOLDEN]
GOLDEN = DOC["workflows"]
# The workflows that existed at the reference commit (workflows added since have no golden canvases).
FILES = [p for p in gc.workflow_files() if any(k.split("+")[0] == gc.workflow_key(p) for k in GOLDEN)]


@pytest.fixture(scope="module")
def same_platform():
    if not MATCHING:
        pytest.skip(f"the golden digests hold for {[d['platform'] for d in DOCS.values()]}, this is "
                    f"{gc.platform()}: resampled floats differ in their last bits; add a file for this platform, "
                    "made from the reference commit")


@pytest.mark.parametrize("path", FILES, ids=gc.workflow_key)
def test_old_workflow_gives_the_golden_canvases(comfy_host, same_platform, path):
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


def _without_digests(doc: dict) -> dict:
    return {key: {name: {k: v for k, v in record.items() if k != "sha256"} for name, record in outputs.items()}
            for key, outputs in doc["workflows"].items()}


def test_the_golden_files_of_each_kernel_family_come_from_one_reference():
    """Same commit, same outputs, same shapes and INT values: only the bits of resampled floats may differ."""
    assert len(DOCS) == 2, sorted(DOCS)
    docs = list(DOCS.values())
    assert len({d["reference_commit"] for d in docs}) == 1
    assert len({d["platform"]["cpu_kernels"] for d in docs}) == len(docs)
    first = _without_digests(docs[0])
    assert all(_without_digests(d) == first for d in docs[1:])
