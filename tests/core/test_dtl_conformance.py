"""The DTL conformance vectors (``shared/conformance/dtl``, 557 vectors from Sesam's docs) run
through their own runner, unchanged, against :mod:`runtime.dtl.conformance`.

A ratchet: the pass count may only go up. ``MEASURED`` is what passed at the last commit that
changed it: all 557, since the compiler and the function library were merged. Never lower it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

MEASURED = 557
# shared/ sits beside the repo (CI clones it there); a git worktree elsewhere names it with
# SLUICE_SHARED_DIR (e.g. SLUICE_SHARED_DIR=/work/shared).
VECTORS = Path(os.environ.get("SLUICE_SHARED_DIR") or REPO.parent / "shared") / "conformance" / "dtl"


def test_conformance_vectors_pass_count_never_drops() -> None:
    runner = VECTORS / "run_vectors.py"
    if not runner.exists():
        pytest.skip(f"no conformance vectors at {VECTORS} (shared/ is cloned beside the repo in CI)")
    # Captured, not echoed: the runner's "N passed, M failed" must never pass for pytest's summary.
    done = subprocess.run(
        [sys.executable, str(runner), "runtime.dtl.conformance:evaluate",
         "runtime.dtl.conformance:apply"],
        cwd=REPO, capture_output=True, text=True, check=False)
    lines = done.stdout.strip().splitlines()
    last = lines[-1] if lines else ""
    m = re.fullmatch(r"(\d+) passed, (\d+) failed", last)
    assert m, f"runner output did not end with 'N passed, M failed': {last!r}\n{done.stderr[-2000:]}"
    passed = int(m[1])
    assert passed >= MEASURED, (
        f"DTL conformance dropped: {passed} pass, {MEASURED} did; failing functions:\n"
        + "\n".join(line for line in lines if line.endswith("<-")))
