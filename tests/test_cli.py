import re

import pytest

from curation.cli import main
from tests.runner.helpers import PLUGIN


@pytest.fixture()
def pipeline(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(f"""
name: cli
run_dir: {tmp_path / 'run'}
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


@pytest.mark.parametrize("args, message", [
    (["stage=dedupe"], "unknown stage 'dedupe'"),
    (["numbers.rowz=3"], "numbers.rowz: unknown key; did you mean 'numbers.rows'?"),
    (["numbers.rows=-1"], "numbers.rows: Input should be greater than or equal to 0"),
    (["backend=spark"], "backend: expected ray or local"),
    (["force=maybe"], "expected true or false"),
])
def test_config_errors_exit_2_before_any_work(pipeline, tmp_path, capsys, args, message):
    assert main(["run", f"pipeline={pipeline}", "backend=local", *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run" / "stages").exists()


def test_usage_and_unknown_command(capsys):
    assert main([]) == 0 and "usage: curate" in capsys.readouterr().out
    assert main(["rnu"]) == 2 and "did you mean 'run'" in capsys.readouterr().err
    assert main(["status"]) == 2
