"""MkDocs hooks (mkdocs.yml ``hooks:``): put generated content into the pages.

* ``<!-- results:NAME -->``, NAME one of benchmarks.report.SECTIONS (machine, hashmap,
  snapshot, snapshot_cost, pool): replaced by the table rendered from
  benchmarks/results/NAME.json, so docs/performance.md always shows the committed results.
* ``<!-- essay:MODULE -->``, MODULE a module under src/fastmaps (``_hashmap``,
  ``_snapshot``, ``_pool``, ...): replaced by that module's design essay, its top
  docstring, shown as written. The essays live once, beside the code they describe; the
  docs show them and never retell them.

An unknown NAME or MODULE fails the build.
"""
from __future__ import annotations

import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARK = re.compile(r"<!--\s*results:(\w+)\s*-->")
ESSAY = re.compile(r"<!--\s*essay:(\w+)\s*-->")
SRC = os.path.join(ROOT, "src", "fastmaps")


def module_essay(module):
    """The top docstring of src/fastmaps/MODULE.pyx, as a fenced text block."""
    path = os.path.join(SRC, module + ".pyx")
    if not os.path.isfile(path):
        raise ValueError(f"essay:{module}: no such module {path}")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if not text.startswith('"""'):
        raise ValueError(f"{path} does not open with its design essay (a docstring)")
    body = text[3:text.index('"""', 3)]
    return f"Source: `src/fastmaps/{module}.pyx` (module docstring).\n\n```text\n{body.strip()}\n```\n"


def on_page_markdown(markdown, page, config, files, **kwargs):
    if "<!--" not in markdown:
        return markdown
    markdown = ESSAY.sub(lambda m: module_essay(m.group(1)), markdown)
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from benchmarks import report

    def sub(m):
        name = m.group(1)
        if name not in report.SECTIONS:
            raise ValueError(f"{page.file.src_path}: unknown results section {name!r}; "
                             f"choose from {sorted(report.SECTIONS)}")
        return report.SECTIONS[name]()

    return MARK.sub(sub, markdown)
