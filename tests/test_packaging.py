"""The install is lean: required dependencies are exactly what the package imports at run time."""

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
# Imported only on an optional path, each behind its extra (and an install hint where it is imported).
OPTIONAL = {"timm": "models", "open_clip": "models", "nudenet": "nsfw", "skimage": "demo", "sklearn": "demo"}


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=~! ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _imported_modules() -> set[str]:
    modules = set()
    for path in (ROOT / "curation").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                modules.add(node.module.split(".")[0])
    return {m for m in modules if m not in sys.stdlib_module_names and m != "curation"}


def test_required_dependencies_are_the_run_time_imports():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    required = {_name(r) for r in project["dependencies"]}
    extras = {name: {_name(r) for r in reqs} for name, reqs in project["optional-dependencies"].items()}
    dists = packages_distributions()
    used = set()
    for module in _imported_modules():
        names = {_name(d) for d in dists.get(module, [])}
        assert names, f"'{module}' is imported but no installed distribution provides it"
        if module in OPTIONAL:
            assert names & extras[OPTIONAL[module]], f"'{module}' belongs in the '{OPTIONAL[module]}' extra"
            assert not names & required, f"'{module}' is optional: not a required dependency"
        else:
            assert names & required, f"'{module}' is imported at run time but not a required dependency"
            used |= names & required
    assert required - used == set(), "required but never imported"
    for optional in ("onnxruntime", "imagehash", "pandas"):  # only for optional paths, tests or benchmarks
        assert optional not in required
    assert "ray" in required and not any("data" in r for r in project["dependencies"] if _name(r) == "ray")
