"""Run the ```python code blocks of every docs/tutorials/*.md, in order, in one namespace
per file (one test per tutorial), so the tutorials cannot drift from the code."""
import pathlib
import re

import pytest

TUTORIALS = pathlib.Path(__file__).resolve().parent.parent / "docs" / "tutorials"
FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)


def python_blocks(path):
    return FENCE.findall(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    "path", sorted(TUTORIALS.glob("*.md")), ids=lambda p: p.name)
def test_tutorial_runs(path):
    blocks = python_blocks(path)
    assert blocks, f"{path.name} has no ```python blocks"
    namespace = {"__name__": f"tutorial_{path.stem}"}
    for i, code in enumerate(blocks, 1):
        exec(compile(code, f"{path.name} (block {i})", "exec"), namespace)
