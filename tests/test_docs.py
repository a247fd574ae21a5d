"""Every tutorial in docs/tutorials/ runs as a test: its ```python blocks are executed in
order, in one namespace (so later blocks can use what earlier ones defined)."""
import pathlib
import re

import pytest

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs" / "tutorials"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
TUTORIALS = sorted(DOCS.glob("*.md"))


def test_tutorials_exist():
    assert TUTORIALS, f"no tutorials found in {DOCS}"


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.name)
def test_tutorial_runs(path):
    text = path.read_text()
    blocks = BLOCK.findall(text)
    assert blocks, f"{path.name} has no ```python blocks"
    namespace = {"__name__": f"tutorial_{path.stem}"}
    for i, code in enumerate(blocks):
        lineno = text[: text.index(code)].count("\n") + 1
        compiled = compile("\n" * (lineno - 1) + code, str(path), "exec")
        try:
            exec(compiled, namespace)
        except Exception as e:
            raise AssertionError(f"{path.name}: block {i + 1} (line {lineno}) failed: {e!r}") from e
