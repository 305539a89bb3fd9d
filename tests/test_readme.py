"""The README's commands are accepted as written: every command line parses, and every key it sets exists."""

import re
import shlex
from pathlib import Path

import pytest

from curation.cli import COMMANDS, _parse
from curation.confighelp import model_keys

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "docs" / "train.md"]


def _code_lines(path: Path) -> list[str]:
    blocks = re.findall(r"```[a-z]*\n(.*?)```", path.read_text(), flags=re.DOTALL)
    return [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]


def _commands() -> list[tuple[str, list[str]]]:
    out = []
    for path in DOCS:
        for line in _code_lines(path):
            words = shlex.split(line)
            if words[:1] == ["curate"]:
                out.append((line, words[1:]))
            elif "python" in line and "-m curation " in line + " " and "curation.train" not in line:
                out.append((line, words[words.index("curation") + 1 :]))
    return out


def _valid_keys(command: str) -> set[str]:
    from curation.config import pipeline_model
    from curation.train.config import TrainConfig

    own = {key for key, _ in COMMANDS[command].own_keys}
    if command == "train":
        return own | {k for k, _, _ in model_keys(TrainConfig)} | {"manifest"}
    if COMMANDS[command].config_keys is not None:
        return own | {k for k, _, _ in model_keys(pipeline_model()) if "[]" not in k}
    return own | {"manifest"}


def test_readme_shows_commands():
    names = {words[0] for _, words in _commands() if words and not words[0].startswith("-")}
    assert {"run", "status", "inspect", "export", "plan", "config", "train"} <= names


@pytest.mark.parametrize("line, words", _commands(), ids=lambda v: v if isinstance(v, str) else "")
def test_documented_command_parses_and_its_keys_exist(line, words):
    from curation import config as cfg  # noqa: F401 - registers the stages' config sections

    if words in (["--help"], ["--version"]):
        return
    options = _parse(words)
    keys = {arg.partition("=")[0] for arg in options.args if "=" in arg}
    unknown = keys - _valid_keys(options.command)
    assert not unknown, f"{line}: unknown keys {unknown}"


def test_ray_jobs_run_the_module_not_the_script():
    for path in DOCS:
        text = path.read_text()
        assert "-- curate " not in text, f"{path.name}: a Ray job needs `python -m curation`, not `curate`"
        assert "ray job submit" not in text or re.search(r"-- python3? -m curation", text)
