"""What users install: the version flag, `python -m ipt_edge`, and (in CI) that the tests import
the installed package rather than the source tree."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import ipt_edge
from ipt_edge.cli import app


def test_version_flag_prints_the_installed_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"ipt-edge {importlib.metadata.version('ipt-edge')}\n"
    assert ipt_edge.__version__ == importlib.metadata.version("ipt-edge")


def test_python_dash_m_runs_the_command_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "ipt_edge", "--help"], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    for command in ("train", "export", "predict", "score", "info"):
        assert command in result.stdout


@pytest.mark.skipif(
    os.environ.get("IPT_EDGE_TEST_INSTALLED") != "1",
    reason="CI sets IPT_EDGE_TEST_INSTALLED=1 where it installed the built wheel",
)
def test_the_tests_import_the_installed_package():
    assert "site-packages" in Path(ipt_edge.__file__).parts, ipt_edge.__file__
