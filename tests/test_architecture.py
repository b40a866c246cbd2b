"""The house's arrows (docs/ARCHITECTURE.md): the import-linter contracts of pyproject.toml hold, and
they do catch a wrong-way import (so a green run means something)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONTRACTS = (
    "layers",
    "http-knows-nothing-above",
    "accounting-is-pure",
    "analytics-off-the-hot-path",
    "dashboard-reaches-analytics-and-store",
)
LINT = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    # `python -c` puts the working directory first on sys.path: the packages under `root` are read.
    return subprocess.run(
        [sys.executable, "-c", LINT, "--no-cache"], cwd=root, capture_output=True, text=True, timeout=300
    )


def test_every_contract_is_kept() -> None:
    done = _lint(ROOT)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "5 kept, 0 broken" in done.stdout


def test_pyproject_declares_the_contracts_the_docs_name() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    for contract in CONTRACTS:
        assert f'id = "{contract}"' in text


def _copy_tree(dest: Path) -> None:
    for package in ("proxy", "analytics", "dashboard"):
        shutil.copytree(ROOT / package, dest / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")


def test_an_http_module_importing_the_pipeline_breaks_the_layers(tmp_path: Path) -> None:
    _copy_tree(tmp_path)
    (tmp_path / "proxy" / "http" / "wrong_way.py").write_text("from proxy.pipeline import relay  # noqa\n")
    done = _lint(tmp_path)
    assert done.returncode != 0
    assert "proxy.http.wrong_way -> proxy.pipeline.relay" in done.stdout
    assert "proxy.http (our HTTP/1.1) knows nothing" in done.stdout


def test_io_in_accounting_and_the_dashboard_reaching_the_pipeline_are_caught(tmp_path: Path) -> None:
    _copy_tree(tmp_path)
    (tmp_path / "proxy" / "accounting" / "wrong_way.py").write_text("import socket  # noqa\n")
    (tmp_path / "dashboard" / "wrong_way.py").write_text("from proxy.pipeline import relay  # noqa\n")
    done = _lint(tmp_path)
    assert done.returncode != 0
    assert "proxy.accounting.wrong_way -> socket" in done.stdout
    assert "dashboard.wrong_way -> proxy.pipeline.relay" in done.stdout
