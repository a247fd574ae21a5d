"""Run the ```python blocks of every docs/tutorials/*.md, in order, in one namespace per file."""
import re
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parent.parent / "docs" / "tutorials"
FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```", re.S | re.M)


def python_blocks(path):
    return FENCE.findall(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", sorted(p.name for p in TUTORIALS.glob("*.md")))
def test_tutorial_runs(name):
    path = TUTORIALS / name
    blocks = python_blocks(path)
    assert blocks, f"{name} has no python blocks"
    namespace = {"__name__": f"tutorial_{path.stem}"}
    for i, code in enumerate(blocks, 1):
        exec(compile(code, f"{path}:block{i}", "exec"), namespace)
