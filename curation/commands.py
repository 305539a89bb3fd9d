"""What each ``curate`` command does: its arguments in, an exit status out.

:mod:`curation.cli` declares the commands (names, usage, help) and parses the
command line; each ``cmd_*`` here gets the command's ``key=value`` arguments.
"""

from __future__ import annotations

import sys
from pathlib import Path

from curation.cliargs import flag, only, split
from curation.errors import ConfigError


def cmd_run(args: list[str]) -> int:
    from curation import config as cfg
    from curation.runner import run_pipeline

    picked, overrides = split(args, ("pipeline", "stage", "force", "backend"))
    only("run", picked, [], ("pipeline",))
    config = cfg.load(picked["pipeline"], overrides)
    stages = [s for s in picked.get("stage", "").split(",") if s] or None
    report = run_pipeline(config, stages, flag(picked.get("force"), "force"), _backend(picked))
    _print_report(report)
    return 0


def _backend(picked: dict[str, str]) -> str:
    backend = picked.get("backend", "ray")
    if backend not in ("ray", "local"):
        raise ConfigError(f"backend: expected ray or local, got '{backend}'")
    return backend


def _print_report(report) -> None:
    print(f"run directory: {report.run_dir}")
    for name, summary in report.stages.items():
        counts = ", ".join(f"{k}={v}" for k, v in summary.get("counts", {}).items())
        print(f"  {name:<9} {summary.get('rows', 0):>8} rows  {counts}")


def cmd_demo(args: list[str]) -> int:
    from curation.demo.run import run_demo

    picked, overrides = split(args, ("run_dir", "size", "backend"))
    if picked.get("size", "small") not in ("small", "tiny"):
        raise ConfigError(f"size: expected small or tiny, got '{picked['size']}'")
    backend = _backend(picked)
    return run_demo(
        Path(picked.get("run_dir", "runs/demo")), size=picked.get("size", "small"), overrides=overrides, backend=backend
    )


def cmd_status(args: list[str]) -> int:
    from curation.status import format_status

    picked, rest = split(args, ("run_dir",))
    only("status", picked, rest, ("run_dir",))
    run_dir = Path(picked["run_dir"])
    if not run_dir.is_dir():
        raise ConfigError(f"run_dir: {run_dir} is not a directory")
    print(format_status(run_dir))
    return 0


def cmd_verify(args: list[str]) -> int:
    from curation.runner.verify import verify_run_dir

    picked, rest = split(args, ("run_dir", "checksums"))
    only("verify", picked, rest, ("run_dir",))
    report, intact = verify_run_dir(Path(picked["run_dir"]), flag(picked.get("checksums")))
    print(report)
    return 0 if intact else 1


def cmd_report(args: list[str]) -> int:
    from curation.report import write_report

    picked, rest = split(args, ("run_dir", "out", "seed"))
    only("report", picked, rest, ("run_dir",))
    try:
        seed = int(picked.get("seed", 0))
    except ValueError:
        raise ConfigError(f"seed: expected an integer, got '{picked['seed']}'") from None
    print(write_report(Path(picked["run_dir"]), picked.get("out"), seed))
    return 0


def cmd_inspect(args: list[str]) -> int:
    from curation.manifest import read_manifest, verify

    positional = [a for a in args if "=" not in a]
    picked, rest = split([a for a in args if "=" in a], ("checksums", "manifest"))
    location = picked.get("manifest") or (positional[0] if positional else None)
    only("inspect", picked, rest + positional[1:])
    if not location:
        raise ConfigError("inspect: a manifest is required: curate inspect MANIFEST [checksums=true]")
    if Path(location).is_dir():
        hint = Path(location) / "shards" / "manifest.json"
        raise ConfigError(
            f"inspect: {location} is a directory, not a manifest" + (f"; did you mean {hint}?" if hint.exists() else "")
        )
    checksums = flag(picked.get("checksums"), "checksums")
    manifest = read_manifest(location)
    print(f"manifest {location}: valid (format version 1)")
    print(f"  pipeline {manifest.pipeline}, config {manifest.config_hash}, created {manifest.created}")
    print(f"  {len(manifest.shards)} shards, {manifest.num_samples} samples, {manifest.num_bytes} bytes")
    for source, n in manifest.composition.items():
        print(f"  {source:<24} {n:>10}")
    problems = verify(manifest, check_checksums=checksums)
    for problem in problems:
        print(f"  problem: {problem}", file=sys.stderr)
    if problems:
        return 1
    print("  shards: all present" + (", checksums verified" if checksums else ""))
    return 0


def cmd_plan(args: list[str]) -> int:
    from curation import config as cfg
    from curation.plan import plan_command

    picked, overrides = split(args, ("pipeline", "cluster_file"))
    only("plan", picked, [], ("pipeline",))
    data = cfg.apply_overrides(
        cfg.read_yaml(cfg.resolve_pipeline_path(picked["pipeline"])), cfg.parse_overrides(overrides)
    )
    print(plan_command(data, cluster_path=picked.get("cluster_file")))
    return 0


def cmd_config(args: list[str]) -> int:
    import yaml
    from pydantic import BaseModel

    from curation import config as cfg
    from curation.confighelp import commented_yaml

    picked, overrides = split(args, ("pipeline", "defaults"))
    only("config", picked, [], ("pipeline",))
    defaults = flag(picked.get("defaults"), "defaults")
    path = cfg.resolve_pipeline_path(picked["pipeline"])
    config: BaseModel  # a pipeline's config, or a trainer's
    if "stages" in cfg.read_yaml(path):
        config = cfg.load(str(path), overrides, allow_placeholders=defaults)
        print(f"# hash {cfg.content_hash(config)}")
    else:  # a trainer config
        from curation.train.config import load_train_config

        config = load_train_config([f"config={path}", *overrides])
    data = cfg.to_dict(config)
    if defaults:
        unfilled = cfg.placeholders(data)
        if unfilled:
            print(f"# {len(unfilled)} unfilled <PLACEHOLDER> values: `curate run` refuses them until filled in")
        print(commented_yaml(config, data), end="")
    else:
        print(yaml.safe_dump(data, sort_keys=False), end="")
    return 0


def cmd_train(args: list[str]) -> int:
    from curation.train.cli import train_main

    split(args, ())  # every argument is key=value
    return train_main(args)


def cmd_export(args: list[str]) -> int:
    from curation.export import export_img2dataset

    picked, rest = split(args, ("run_dir", "manifest", "out", "copy"))
    only("export", picked, rest, ("out",))
    if ("run_dir" in picked) == ("manifest" in picked):
        raise ConfigError("export: give exactly one of run_dir=DIR or manifest=PATH")
    manifest = picked.get("manifest") or str(Path(picked["run_dir"]) / "shards" / "manifest.json")
    result = export_img2dataset(manifest, Path(picked["out"]), copy=flag(picked.get("copy"), "copy"))
    print(f"exported {result['shards']} shards, {result['samples']} samples to {picked['out']} (img2dataset layout)")
    return 0


def pipeline_keys() -> str:
    from curation.confighelp import pipeline_keys_help

    return pipeline_keys_help()


def train_keys() -> str:
    from curation.confighelp import train_keys_help

    return train_keys_help()
