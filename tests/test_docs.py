"""The documentation site builds in strict mode (a broken reference or a docstring that
mkdocstrings cannot render fails), and its pages carry what they promise."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    for module in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python", "latex2mathml"):
        pytest.importorskip(module, reason="the docs extra is not installed (pip install '.[docs]')")
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", SKBUILD_EDITABLE_VERBOSE="0")
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                       cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "WARNING" not in r.stderr, r.stderr
    return out


def page(site, name):
    return (site / name / "index.html").read_text()


def test_every_page_is_built(site):
    for name in ("numpy", "optimizers", "pytorch", "distributed", "schedules", "layers", "clipping",
                 "low-precision", "checkpoints", "benchmarks", "build-notes"):
        assert (site / name / "index.html").is_file(), name
    assert (site / "index.html").is_file()


def test_optimizer_page_carries_the_math_of_every_update(site):
    html = page(site, "optimizers")
    for cls in ("SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "LAMB", "LARS"):
        assert f'id="deepoptim.optim.{cls}"' in html, cls
    for twin in ("sgd", "adagrad", "rmsprop", "adam", "adamw", "lamb", "lars"):
        assert f'id="deepoptim.reference.optim.{twin}"' in html, twin
    assert "m = b1 * m + (1 - b1) * g" in html  # Adam's rule, from the twin's docstring


def test_sphinx_roles_and_doctests_render_cleanly(site):
    for html_file in site.rglob("*.html"):
        html = html_file.read_text()
        assert ":math:" not in html and ":func:" not in html, html_file
        assert "<blockquote>\n<blockquote>" not in html, f"{html_file}: a >>> example rendered as quotes"
        assert "<p>:</p>" not in html and "<p>::</p>" not in html, html_file
        assert "<blockquote>" not in html, f"{html_file}: a '> 0' description rendered as a quote"


def test_math_is_rendered_as_mathml(site):
    # The docstrings' :math: roles become MathML at build time (docs/hooks.py): no raw
    # LaTeX is left for the reader, and no script or CDN is needed to show it.
    html = page(site, "optimizers")
    assert html.count("<math") > 20
    assert "<mo>&#x02190;</mo>" in html  # g <- -g
    for html_file in site.rglob("*.html"):
        text = html_file.read_text()
        for tex in ("\\leftarrow", "\\lambda", "\\sqrt{"):
            assert tex not in text, f"{html_file}: raw {tex}"


def test_wrapped_twins_are_documented_as_functions(site):
    # reference/norm.py wraps batch_norm by `batch_norm = _checks.with_flag_checks(batch_norm)`:
    # the page still shows the function's signature and parameters, not an attribute.
    html = page(site, "numpy")
    assert "module-attribute" not in html and "with_flag_checks" not in html
    assert re.search(r'id="deepoptim\.reference\.norm\.batch_norm"[^<]*>.*?running_mean', html, re.S)


def test_benchmark_page_shows_the_committed_chart(site):
    html = page(site, "benchmarks")
    assert re.search(r'<img[^>]+src="\.\./bench/results/results\.png"', html)
    assert (site / "bench" / "results" / "results.png").read_bytes() == (ROOT / "bench/results/results.png").read_bytes()
    assert "Reference benchmark run" in html
    assert html.count("<h1") == 1, "the included run README's title is a second page title"
    assert re.search(r'<a href="\.\./bench/results/results\.png"><img', html), "the chart links to its full size"


def test_schedules_page_documents_warmup_against_torch(site):
    html = page(site, "schedules")
    assert 'id="deepoptim.schedules.warmup"' in html and "LinearLR" in html


def test_docs_snippets_are_the_readmes_examples():
    # The site includes these files; they must stay what the README shows (and the README
    # examples are executed and type-checked by the tests).
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    for snippet in ("quick_start.py", "training_loop.py"):
        assert (ROOT / "docs" / "snippets" / snippet).read_text() in blocks, snippet


def test_every_optimizer_and_kernel_has_its_docs_entry():
    """The optimizers page lists each class and each update rule: a new optimizer that
    forgets its two doc lines fails here rather than silently missing from the site."""
    import pathlib

    from deepoptim import optim
    from deepoptim.reference import optim as ref

    page = (pathlib.Path(__file__).resolve().parent.parent / "docs" / "optimizers.md").read_text()
    for name in optim.REGISTRY:
        assert f"::: deepoptim.optim.{name}\n" in page, name
    for name in ("LBFGS", "Muon", "Adafactor"):  # not in the registry (not elementwise kernels)
        assert f"::: deepoptim.optim.{name}\n" in page, name
    assert "::: deepoptim.reference.muon.muon\n" in page
    assert "::: deepoptim.reference.adafactor.adafactor\n" in page
    for name in ref.KERNELS:
        if name not in ("add_penalty", "soft_threshold", "decay"):
            assert f"::: deepoptim.reference.optim.{name}\n" in page, name
    from deepoptim.reference import reduce

    numpy_page = (pathlib.Path(__file__).resolve().parent.parent / "docs" / "numpy.md").read_text()
    for name in reduce.KERNELS:  # the reductions on the NumPy API page
        assert f"::: deepoptim.reference.reduce.{name}\n" in numpy_page, name


def test_pages_load_nothing_from_another_host(site):
    """No web fonts, scripts, styles or API calls from elsewhere: the site reads the same
    offline (mkdocs.yml sets ``font: false`` and names no repository for the theme to query)."""
    loads = re.compile(r'<(?:script|img|link|iframe)\b[^>]*\b(?:src|href)="(?:https?:)?//[^"]*"')
    for f in site.rglob("*.html"):
        text = f.read_text()
        assert not loads.findall(text), (f, loads.findall(text)[:3])
        assert "fonts.googleapis" not in text and "api.github.com" not in text, f
