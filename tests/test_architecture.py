"""docs/architecture.md matches the code: its import layers, and its walk-through of adding a stage."""

from __future__ import annotations

import ast
import re
import typing
from pathlib import Path

import yaml

from curation import config as cfg
from curation.runner.local import run_stages

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "architecture.md").read_text()
PACKAGE = ROOT / "curation"


def _section(title: str) -> str:
    start = DOC.index(f"\n## {title}\n")
    end = DOC.find("\n## ", start + 1)
    return DOC[start : end if end > 0 else None]


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", text, re.M | re.S)


def _layers() -> dict[str, int]:
    """Top-level module or package of ``curation`` -> its layer, from the doc's table."""
    layers: dict[str, int] = {}
    for number, modules in re.findall(r"^\| (\d+) \| ([^|]+) \|", _section("Layers"), re.M):
        for unit in re.findall(r"`(\w+)`", modules):
            assert unit not in layers, f"{unit} is in two layers"
            layers[unit] = int(number)
    return layers


def _unit(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def _imports() -> set[tuple[str, str, str]]:
    """``(unit, imported unit or "ray", file)`` for every import, module-level or inside a function."""
    units = {_unit(p) for p in PACKAGE.rglob("*.py")}
    found = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        source = _unit(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
                if node.module == "curation":  # `from curation import config`
                    modules = [f"curation.{a.name}" if a.name in units else "curation" for a in node.names]
            else:
                continue
            for module in modules:
                parts = module.split(".")
                if parts[0] == "ray":
                    found.add((source, "ray", str(path.relative_to(ROOT))))
                elif parts[0] == "curation":
                    target = parts[1] if len(parts) > 1 else "__init__"
                    if target != source:
                        found.add((source, target, str(path.relative_to(ROOT))))
    return found


def test_layers_name_every_module_once():
    layers = _layers()
    units = {_unit(p) for p in PACKAGE.rglob("*.py")}
    assert units == set(layers), (
        f"missing from the table: {sorted(units - set(layers))}; not in the package: {sorted(set(layers) - units)}"
    )


def test_imports_point_down_the_layers():
    layers = _layers()
    ray_users = set(re.findall(r"`(\w+)`", re.search(r"Ray is imported only in (.*?);", DOC).group(1)))
    wrong = []
    for source, target, path in sorted(_imports()):
        if target == "ray":
            if source not in ray_users:
                wrong.append(f"{path}: imports ray outside {sorted(ray_users)}")
        elif layers[target] > layers[source]:
            wrong.append(f"{path}: {source} (layer {layers[source]}) imports {target} (layer {layers[target]})")
    assert not wrong, "imports that point up (move the code, or fix the layer table):\n" + "\n".join(wrong)


def test_walkthrough_code_is_the_sample_stages():
    sample = (ROOT / "tests" / "runner" / "sample_stages.py").read_text()
    blocks = _blocks(_section("How to add a stage"), "python")
    assert len(blocks) == 4
    for block in blocks:
        assert block in sample, f"not a verbatim excerpt of tests/runner/sample_stages.py:\n{block}"


def test_walkthrough_pipeline_runs_and_leaves_the_listed_files(tmp_path):
    section = _section("How to add a stage")
    [pipeline] = _blocks(section, "yaml")
    data = {**yaml.safe_load(pipeline), "run_dir": str(tmp_path)}
    assert cfg.validate(data).parity.drop_odd is True
    run_stages(tmp_path, data)
    [listing] = _blocks(section, "text")
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert files == listing.split()


def test_the_run_directory_is_spelt_in_layout_only():
    """Paths under a run directory come from ``curation.layout``: no other module joins its folder names."""
    spelt = re.compile(r"""/ ["'](stages|\.files)["']|["']stages/""")
    found = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "layout.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if spelt.search(line)
    ]
    assert not found, "run-directory names spelt outside curation/layout.py:\n" + "\n".join(found)


def test_modules_stay_small():
    """A module past 400 lines is split by concern (see "Where a stage's code lives")."""
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long


def _step_config(step: type) -> object:
    """The config model a step class is parametrized with (``MapStep[DedupConfig]`` -> ``DedupConfig``)."""
    from curation.stages.base import GlobalStep, MapStep

    for klass in step.__mro__:
        for base in getattr(klass, "__orig_bases__", ()):
            if typing.get_origin(base) in (MapStep, GlobalStep):
                [arg] = typing.get_args(base)
                return arg.__forward_arg__ if isinstance(arg, typing.ForwardRef) else arg
    return None


def test_steps_are_typed_by_their_stage_config():
    """Every step names its stage's config model, so that its ``self.cfg`` is typed as that model."""
    from curation.stages.registry import all_stages
    from tests.runner import sample_stages

    stages = [*all_stages().values(), sample_stages.NumbersStage, sample_stages.ParityStage]
    wrong = [
        f"{stage.name}.{step.__name__}: {_step_config(step)!r}, not {stage.config_model.__name__}"
        for stage in stages
        for step in stage.steps
        if _step_config(step) not in (stage.config_model, stage.config_model.__name__)
    ]
    assert not wrong, "\n".join(wrong)
