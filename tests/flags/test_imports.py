"""The local evaluator depends on the standard library only."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

FLAGS = Path(__file__).resolve().parents[2] / "core" / "posthog" / "flags"
MODULES = ["_base", "errors", "hashing", "jsontext", "regex_compat", "dates", "semver",
           "operators", "cohorts", "result", "compiled", "local"]


@pytest.mark.parametrize("name", MODULES)
def test_module_imports_only_stdlib_and_its_package(name: str) -> None:
    tree = ast.parse((FLAGS / f"{name}.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules = [node.module or ""]
        else:
            continue
        for module in modules:
            top = module.split(".")[0]
            assert top in sys.stdlib_module_names or top == "__future__" or (
                module.startswith("posthog.flags.")), (name, module)
