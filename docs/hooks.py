"""mkdocs hooks for the deepoptim site (listed in mkdocs.yml).

- The benchmark chart lives in bench/results/ beside the run it comes from; it is added
  to the site from there, so the page always shows the committed chart (no copy to drift).
- The docstrings are written for Sphinx-style readers (``:math:`x```, ``:func:`f```,
  a ``::`` before a literal block). ``:math:`` is rendered at build time to MathML
  (latex2mathml), which browsers display natively: no JavaScript, no CDN, so the math
  shows offline too. The other roles are reduced to plain code, and an argument
  description that starts with ``>=`` (Markdown reads the ``>`` as a quote) gets its
  ``>`` back.
- ``DecoratedTwins`` (a griffe extension): a twin wrapped by a module-level
  ``name = _checks.with_flag_checks(name)`` keeps its function's signature and docstring
  (griffe would otherwise document it as an attribute holding a call).
- ``--8<-- "bench/results/README.md"`` (docs/benchmarks.md) is included here, before
  pymdownx.snippets runs, with its headings one level down: the run's README starts with
  its own ``#`` title, which would be a second page title (and drop out of the table of
  contents).
- ``ExampleSections`` (a griffe extension, listed under mkdocstrings' options): an
  ``Example:`` heading in a docstring is read as the Google-style ``Examples:`` section,
  so its ``>>>`` lines render as code instead of Markdown.
"""

from __future__ import annotations

import html as _html
import os
import re

import griffe
from latex2mathml.converter import convert as _tex_to_mathml
from mkdocs.structure.files import File

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH_FILES = ["bench/results/results.png"]

_MATH = re.compile(r":math:<code>(.*?)</code>", re.S)
_ROLE = re.compile(r":(?:math|func|class|meth|mod|attr|data):(<code>)")
_LITERAL_COLON = re.compile(r"::(\s*</p>)")
_LONE_COLONS = re.compile(r"<p>::</p>\s*")
# An argument description can only start with ">" as a comparison ("> 0", ">= 0").
_QUOTED_GE = re.compile(r'(<div class="doc-md-description">\s*)<blockquote>\s*<p>(.*?)</p>\s*</blockquote>', re.S)


_DEMOTED_INCLUDE = re.compile(r'^--8<-- "(bench/results/README\.md)"$', re.M)


def _demoted(match):
    out, fenced = [], False
    with open(os.path.join(ROOT, match.group(1)), encoding="utf-8") as f:
        for line in f.read().splitlines():
            if line.startswith("```"):
                fenced = not fenced
            out.append("#" + line if line.startswith("#") and not fenced else line)
    return "\n".join(out)


def on_page_markdown(markdown, page, config, files):
    return _DEMOTED_INCLUDE.sub(_demoted, markdown)


def on_files(files, config):
    for rel in BENCH_FILES:
        files.append(File.generated(config, rel, abs_src_path=os.path.join(ROOT, rel)))
    return files


def _mathml(match):
    return _tex_to_mathml(_html.unescape(match.group(1)))


def on_page_content(html, page, config, files):
    html = _MATH.sub(_mathml, html)
    html = _ROLE.sub(r"\1", html)
    html = _QUOTED_GE.sub(lambda m: f"{m.group(1)}<p>&gt;{'' if m.group(2).startswith('=') else ' '}{m.group(2)}</p>", html)
    html = _LONE_COLONS.sub("", html)
    return _LITERAL_COLON.sub(r":\1", html)


_EXAMPLE_HEADING = re.compile(r"^(\s*)Example:\s*$", re.M)


class ExampleSections(griffe.Extension):
    def on_instance(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _EXAMPLE_HEADING.sub(r"\1Examples:", obj.docstring.value)


# A module-level `name = <module>.with_flag_checks(name)` (reference/norm.py).
_WRAPPERS = ("with_flag_checks",)


class DecoratedTwins(griffe.Extension):
    def __init__(self) -> None:
        self._functions: dict[str, griffe.Function] = {}

    def on_function_instance(self, *, func, **kwargs) -> None:
        self._functions[func.path] = func

    def on_attribute_instance(self, *, attr, **kwargs) -> None:
        value = attr.value
        if not isinstance(value, griffe.ExprCall) or len(value.arguments) != 1:
            return
        if str(value.function).rsplit(".", 1)[-1] not in _WRAPPERS or str(value.arguments[0]) != attr.name:
            return
        func = self._functions.get(attr.path)
        if func is not None and attr.parent is not None:
            if func.docstring is not None:  # the attribute took it over (and its parent)
                func.docstring.parent = func
            attr.parent.set_member(attr.name, func)
