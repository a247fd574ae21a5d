"""MkDocs hooks (mkdocs.yml ``hooks:``): put the committed benchmark tables into the pages.

A page may contain ``<!-- results:NAME -->`` where NAME is one of benchmarks.report.SECTIONS
(machine, hashmap, snapshot, snapshot_cost, pool); the build replaces it with the table
rendered from benchmarks/results/NAME.json, so docs/performance.md always shows the
committed results and cannot go stale. An unknown NAME fails the build.
"""
from __future__ import annotations

import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARK = re.compile(r"<!--\s*results:(\w+)\s*-->")


def on_page_markdown(markdown, page, config, files, **kwargs):
    if "<!--" not in markdown:
        return markdown
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
