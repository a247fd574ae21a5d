"""Griffe extension for the docs build (mkdocs.yml): tidy docstrings of compiled classes.

Cython's ``embedsignature`` directive puts the C-level signature on the first docstring line
(``HashMap.get(self, key, default=None)``) so that ``help()`` shows it. The API page already
shows the signature (from the ``.pyi`` stubs), so this drops that first line.
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
        first, _, rest = doc.value.partition("\n")
        if _SIG.match(first) and first.strip().split("(")[0].endswith(obj.name):
            doc.value = rest.strip("\n")
