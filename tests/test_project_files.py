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
