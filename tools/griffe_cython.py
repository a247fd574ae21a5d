"""Griffe extension for the docs build (mkdocs.yml): tidy docstrings of compiled classes.

Cython's ``embedsignature`` directive puts the C-level signature on the first docstring line
(``HashMap.get(self, key, default=None)``) so that ``help()`` shows it. The API page already
shows the signature (from the ``.pyi`` stubs), so this drops that first line (and a
hand-written signature line right after it, which some docstrings repeat).
"""
from __future__ import annotations

import re

import griffe

_SIG = re.compile(r"^\s*[A-Za-z_][\w.]*\(.*\)(\s*->\s*.+)?\s*$")


class StripEmbeddedSignature(griffe.Extension):
    def on_object(self, *, obj, **kwargs) -> None:
        doc = obj.docstring
        if doc is None or not doc.value:
            return
        value = doc.value
        for _ in range(2):      # the embedded signature, then a hand-written one if any
            first, _, rest = value.partition("\n")
            if not (_SIG.match(first) and first.strip().split("(")[0].endswith(obj.name)):
                break
            value = rest.strip("\n")
        doc.value = value
