import re

import pytest

from curation import __version__
from curation.cli import COMMANDS, main
from tests.runner.helpers import PLUGIN


@pytest.fixture()
def pipeline(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(f"""
name: cli
run_dir: {tmp_path / "run"}
stages: [numbers, parity]
plugins: [{PLUGIN}]
runner: {{progress: false}}
numbers: {{partitions: 2, rows: 3}}
parity: {{}}
""")
    return path


def test_run_stage_status_and_config(pipeline, tmp_path, capsys):
    assert main(["run", f"pipeline={pipeline}", "stage=numbers", "backend=local"]) == 0
    assert main(["status", f"run_dir={tmp_path / 'run'}"]) == 0
    out = capsys.readouterr().out
    assert "numbers: complete" in out and re.search(r"make +map +done +2/2 partitions  6 rows .*success=6", out)
    assert "parity: pending" in out
    assert main(["run", f"pipeline={pipeline}", "backend=local"]) == 0
    assert re.search(r"parity +6 rows  odd=2, success=4", capsys.readouterr().out)
    assert main(["config", f"pipeline={pipeline}", "numbers.rows=4"]) == 0
    assert "rows: 4" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["stage=dedupe"], "unknown stage 'dedupe'"),
        (["numbers.rowz=3"], "numbers.rowz: unknown key; did you mean 'numbers.rows'?"),
        (["numbers.rows=-1"], "numbers.rows: Input should be greater than or equal to 0"),
        (["backend=spark"], "backend: expected ray or local"),
        (["force=maybe"], "expected true or false"),
    ],
)
def test_config_errors_exit_2_before_any_work(pipeline, tmp_path, capsys, args, message):
    assert main(["run", f"pipeline={pipeline}", "backend=local", *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run" / "stages").exists()


def test_usage_and_unknown_command(capsys):
    assert main([]) == 0 and "usage: curate" in capsys.readouterr().out
    assert main(["rnu"]) == 2 and "did you mean 'run'" in capsys.readouterr().err
    assert main(["status"]) == 2


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_has_help(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: curate {command}") and "--log-level" in out
    for key, _ in COMMANDS[command].own_keys:
        assert f"  {key} " in out


def test_help_lists_config_keys_with_defaults_and_descriptions(capsys):
    assert main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"dedup\.copy_dedup\.threshold +\S.*\[default: [0-9.]+\]", out.replace("\n  ", " "))
    assert re.search(r"runner\.max_partition_retries +retries of a failing partition", out)
    assert main(["train", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "optim.batch_size images per rank per iteration [default: 64]" in out


def test_help_command(capsys):
    assert main(["help"]) == 0 and capsys.readouterr().out.startswith("usage: curate")
    assert main(["help", "status"]) == 0 and capsys.readouterr().out.startswith("usage: curate status")


def test_version_and_log_level(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"curate {__version__}"
    assert main(["--log-level", "loud", "status"]) == 2
    assert "invalid choice: 'loud'" in capsys.readouterr().err


def test_options_and_overrides_mix_in_any_order(pipeline, tmp_path, capsys):
    assert main(["run", f"pipeline={pipeline}", "--quiet", "backend=local", "stage=numbers"]) == 0
    assert "numbers" in capsys.readouterr().out
    assert main(["run", f"pipeline={pipeline}", "--verbose"]) == 2
    assert "unknown option '--verbose'" in capsys.readouterr().err


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards/manifest.json").write_text("{}")
    cases = [
        (["inspect", str(tmp_path)], f"did you mean {tmp_path / 'shards/manifest.json'}?"),
        (["inspect"], "a manifest is required"),
        (["inspect", "a.json", "b.json"], "unknown argument 'b.json'"),
        (["status", f"run_dir={tmp_path / 'nowhere'}"], "is not a directory"),
        (["status", "run_dir=x", "extra=1"], "unknown argument 'extra=1'"),
        (["plan"], "pipeline=... is required"),
        (["demo", "size=huge"], "size: expected small or tiny"),
        (["demo", "backend=spark"], "backend: expected ray or local"),
        (["export", "out=x"], "exactly one of run_dir=DIR or manifest=PATH"),
        (["train", "model"], "argument 'model' is not of the form key=value"),
    ]
    for args, message in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and err.startswith("curate: "), (args, err)


def test_os_errors_name_the_path_and_debug_shows_the_traceback(pipeline, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    # a run directory that cannot be one is a config error, found before any work
    assert main(["run", f"pipeline={pipeline}", "backend=local", f"run_dir={blocker / 'run'}"]) == 2
    assert capsys.readouterr().err.startswith(f"curate: config error: run_dir: {blocker} is not a directory")
    args = ["inspect", str(blocker / "manifest.json")]  # an OS error met while working
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("curate: Not a directory: ") and str(blocker) in err and "Traceback" not in err
    assert main(["--debug", *args]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.splitlines()[-1].startswith("curate: Not a directory")


def test_python_m_curation_needs_no_script_on_path(tmp_path):
    """What a Ray job runs on a head node whose PATH lacks the venv's bin/."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root), "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "curation", "--version"], env=env, capture_output=True, cwd=tmp_path, check=False
    )
    assert done.returncode == 0 and done.stdout.decode().strip() == f"curate {__version__}"
    done = subprocess.run(
        [sys.executable, "-m", "curation", "status"], env=env, capture_output=True, cwd=tmp_path, check=False
    )
    assert done.returncode == 2 and done.stderr.decode().startswith("curate: config error: status: run_dir=")
