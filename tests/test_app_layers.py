"""Apps in layers: core imports no feature app, and pricing answers what a call costs without
importing the apps that record calls (ingestion) or fold them (metrics)."""
import ast
from pathlib import Path

import pytest

APPS = Path(__file__).resolve().parent.parent / "apps"


def imported_apps(app: str) -> dict[str, list[str]]:
    """Every other app a module of `app` imports (at module level or inside a function), with the
    modules that import it."""
    found: dict[str, list[str]] = {}
    for path in sorted((APPS / app).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else (
                [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])  # fmt: skip
            for name in names:
                parts = name.split(".")
                if parts[0] == "apps" and len(parts) > 1 and parts[1] != app:
                    found.setdefault(parts[1], []).append(str(path.relative_to(APPS)))
    return found


@pytest.mark.parametrize(("app", "allowed"), [("core", set()), ("pricing", {"accounts", "core"})])
def test_lower_layer_imports_no_feature_app_above_it(app, allowed):
    assert {name: paths for name, paths in imported_apps(app).items() if name not in allowed} == {}
