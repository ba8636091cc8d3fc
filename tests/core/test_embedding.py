"""The README's embedding example runs as written (in a copy of the repository's demo config)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

from tests.conftest import REPO


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    match = re.search(r"<!-- embedding-example -->\n```python\n(.*?)```", text, re.S)
    assert match, "README has no embedding example"
    return match.group(1)


def test_readme_embedding_example_runs(tmp_path):
    shutil.copytree(REPO / "config" / "demo", tmp_path / "config" / "demo")
    script = tmp_path / "example.py"
    script.write_text(readme_example())
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("iso-countries: completed, ") and "new" in lines[0]
    names = eval(lines[-2])  # the printed list of three country names
    assert len(names) == 3 and all(isinstance(n, str) and n for n in names)
    assert lines[-1] == "last run: completed"
    assert (tmp_path / ".sluice-embedded" / "sluice.db").exists()
