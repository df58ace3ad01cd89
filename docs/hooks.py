"""mkdocs hooks for the deepoptim site (listed in mkdocs.yml).

- The benchmark chart lives in bench/results/ beside the run it comes from; it is added
  to the site from there, so the page always shows the committed chart (no copy to drift).
- The docstrings are written for Sphinx-style readers (``:math:`x```, ``:func:`f```,
  a ``::`` before a literal block); the roles are reduced to plain code here, and an
  argument description that starts with ``>=`` (Markdown reads the ``>`` as a quote)
  gets its ``>`` back.
- ``ExampleSections`` (a griffe extension, listed under mkdocstrings' options): an
  ``Example:`` heading in a docstring is read as the Google-style ``Examples:`` section,
  so its ``>>>`` lines render as code instead of Markdown.
"""

from __future__ import annotations

import os
import re

import griffe
from mkdocs.structure.files import File

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH_FILES = ["bench/results/results.png"]

_ROLE = re.compile(r":(?:math|func|class|meth|mod|attr|data):(<code>)")
_LITERAL_COLON = re.compile(r"::(\s*</p>)")
_LONE_COLONS = re.compile(r"<p>::</p>\s*")
# An argument description can only start with ">" as a comparison ("> 0", ">= 0").
_QUOTED_GE = re.compile(r'(<div class="doc-md-description">\s*)<blockquote>\s*<p>(.*?)</p>\s*</blockquote>', re.S)


def on_files(files, config):
    for rel in BENCH_FILES:
        files.append(File.generated(config, rel, abs_src_path=os.path.join(ROOT, rel)))
    return files


def on_page_content(html, page, config, files):
    html = _ROLE.sub(r"\1", html)
    html = _QUOTED_GE.sub(lambda m: f"{m.group(1)}<p>&gt;{'' if m.group(2).startswith('=') else ' '}{m.group(2)}</p>", html)
    html = _LONE_COLONS.sub("", html)
    return _LITERAL_COLON.sub(r":\1", html)


_EXAMPLE_HEADING = re.compile(r"^(\s*)Example:\s*$", re.M)


class ExampleSections(griffe.Extension):
    def on_instance(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _EXAMPLE_HEADING.sub(r"\1Examples:", obj.docstring.value)
