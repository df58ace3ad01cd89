"""The files a newcomer looks for: LICENSE (the license pyproject declares), CHANGELOG.md,
``deepoptim --version``."""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

import deepoptim
from deepoptim.__main__ import main

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_license_is_the_mit_license_pyproject_declares():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n")
    assert "Copyright (c) 2026 the deepoptim authors" in text
    assert 'THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND' in text
    assert re.search(r'^license = \{ text = "MIT" \}$', (ROOT / "pyproject.toml").read_text(), re.M)


def test_changelog_follows_keep_a_changelog():
    text = (ROOT / "CHANGELOG.md").read_text()
    assert text.startswith("# Changelog\n")
    assert "keepachangelog.com" in text
    assert "## [Unreleased]" in text
    sections = re.findall(r"^### (\w+)$", text, re.M)
    assert sections and set(sections) <= {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}
    # Every release heading is "## [x.y.z] - YYYY-MM-DD" (or Unreleased).
    for heading in re.findall(r"^## (.+)$", text, re.M):
        assert heading == "[Unreleased]" or re.fullmatch(r"\[\d+\.\d+\.\d+\] - \d{4}-\d{2}-\d{2}", heading)


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_flag(flag, capsys):
    assert main([flag]) == 0
    assert capsys.readouterr().out == f"deepoptim {deepoptim.__version__}\n"


def test_version_from_the_command_line():
    # An editable install reports its rebuild check on import; keep it quiet here.
    env = dict(os.environ, SKBUILD_EDITABLE_VERBOSE="0")
    run = dict(capture_output=True, text=True, check=True, env=env)
    out = subprocess.run([sys.executable, "-m", "deepoptim", "--version"], **run)
    assert out.stdout == f"deepoptim {deepoptim.__version__}\n" and out.stderr == ""
    script = shutil.which("deepoptim")
    if script is None:
        pytest.skip("the deepoptim console script is not on PATH")
    out = subprocess.run([script, "--version"], **run)
    assert out.stdout == f"deepoptim {deepoptim.__version__}\n"


def test_help_mentions_version(capsys):
    assert main(["--help"]) == 0
    assert "--version" in capsys.readouterr().out


def _repo_text_files():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout")
    for name in tracked.stdout.splitlines():
        path = ROOT / name
        if path.suffix in {".py", ".md", ".txt", ".toml", ".cpp", ".hpp", ".pyi", ".cfg", ".yml"} or path.name == "CMakeLists.txt":
            if path.is_file():
                yield name, path.read_text(errors="replace")


def test_the_repository_explains_itself():
    # No pointer to notes that live outside the repository.
    outside = "shared/" + "BUILD-NOTES"  # spelled in two parts so this file does not match
    # The articles the project started from are not published with it: a text names the
    # technique and its paper, not the article's number among them.
    unpublished = re.compile(r"\bseeds? 0\d\d\b|source (?:articles|documents)", re.IGNORECASE)
    for name, text in _repo_text_files():
        assert outside not in text, f"{name} points outside the repository"
        hit = unpublished.search(text)
        assert not hit, f"{name}: {hit.group(0) if hit else ''!r}"
    notes = (ROOT / "docs" / "build-notes.md").read_text()
    for fact in ("cmeel.prefix", "-fno-math-errno", "target_clones", "noconvert", "Philox4x32-10"):
        assert fact in notes
    assert "docs/build-notes.md" in (ROOT / "CMakeLists.txt").read_text()


def test_build_notes_philox_vectors_are_what_the_generator_computes():
    from deepoptim import _core

    notes = (ROOT / "docs" / "build-notes.md").read_text()
    rows = re.findall(r"^\| ([0-9a-f ×]+) \| ([0-9a-f ×]+) \| ([0-9a-f ]+) \|$", notes, re.M)
    assert len(rows) == 3

    def words(cell):
        m = re.fullmatch(r"([0-9a-f]+) ×(\d)", cell.strip())
        return [int(m.group(1), 16)] * int(m.group(2)) if m else [int(w, 16) for w in cell.split()]

    for counter, key, out in rows:
        assert list(_core.philox4x32_10(words(counter), words(key))) == words(out)
