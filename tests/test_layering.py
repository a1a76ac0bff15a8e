"""Imports point one way: app -> annotate, training -> db; annotate stays free of torch and gradio;
the judges know nothing of SLiC-HF; the app calls only public names of the other packages."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

FORBIDDEN = {
    "db": {"annotate", "training", "app", "gradio", "torch", "transformers"},
    "annotate": {"training", "app", "gradio", "torch", "transformers", "peft"},
    "training": {"app", "gradio"},
}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_point_one_way(package: str) -> None:
    for path in (ROOT / package).rglob("*.py"):
        bad = imported_roots(path) & FORBIDDEN[package]
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_training_reads_annotate_only_through_its_export() -> None:
    for path in (ROOT / "training").rglob("*.py"):
        tree = ast.parse(path.read_text())
        modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert all(m == "annotate.export" for m in modules if m.startswith("annotate")), path


def imports_from(path: Path) -> list[tuple[str, str]]:
    """(module, name) of every `from module import name` in a file, relative imports left out."""
    tree = ast.parse(path.read_text())
    return [(node.module, alias.name) for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module and not node.level for alias in node.names]


def test_judges_never_import_slic() -> None:
    for path in (ROOT / "training" / "judges").rglob("*.py"):
        bad = [m for m, _ in imports_from(path) if m.startswith("training.slic")]
        tree = ast.parse(path.read_text())
        bad += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
                if a.name.startswith("training.slic")]
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_app_calls_only_public_names_of_other_packages() -> None:
    for path in (ROOT / "app").rglob("*.py"):
        private = [f"{m}.{n}" for m, n in imports_from(path)
                   if m.split(".")[0] in {"annotate", "training", "db"} and (n.startswith("_") or
                                                                          any(p.startswith("_") for p in m.split(".")))]
        assert not private, f"{path.relative_to(ROOT)} imports private names {private}"


def test_no_queries_in_the_app() -> None:
    """Queries belong to the domain packages; the app parses, calls and shows."""
    for path in (ROOT / "app").rglob("*.py"):
        roots = imported_roots(path)
        assert "sqlalchemy" not in roots or path.name == "context.py", f"{path.relative_to(ROOT)} imports sqlalchemy"
        assert "select(" not in path.read_text(), f"{path.relative_to(ROOT)} builds a query"
