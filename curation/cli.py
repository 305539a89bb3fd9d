"""``curate``: run pipelines, watch them, inspect their manifests.

Every command takes dotted ``key=value`` arguments. Besides config keys,
``pipeline=NAME|PATH``, ``stage=a,b``, ``force=true`` and ``backend=ray|local``
are understood by ``run``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from curation.errors import ConfigError, CurationError

USAGE = """usage: curate COMMAND [key=value ...]

commands:
  run      pipeline=NAME [stage=a,b] [force=true] [backend=ray|local] [dotted.key=value ...]
           run a pipeline's stages (all, in order, or just those named), resumably
  demo     [run_dir=runs/demo] [size=small|tiny] [dotted.key=value ...]
           build a small offline corpus, serve it on loopback and run the demo pipeline
  status   run_dir=DIR            per-step state of a run directory: done/running/pending, durations, ETA
  verify   run_dir=DIR [checksums=true]   check every stage's files against its markers; changes nothing
  report   run_dir=DIR [out=FILE] [seed=N]   a self-contained HTML report of a run (see docs/report.md)
  inspect  MANIFEST [checksums=true]   validate a shard manifest (and verify sha256)
  plan     pipeline=NAME [pool_size=N] [cluster_file=ray_cluster.yaml]
           the expected composition of a pipeline, like Table 15; with a pool size, the
           resources, memory and time of every step on the cluster (cluster: section or YAML)
  config   pipeline=NAME [dotted.key=value ...]   print the resolved, validated config
  train    manifest=PATH [dotted.key=value ...]   train a ViT on a shard manifest (see docs/train.md)
"""

RUN_KEYS = ("pipeline", "stage", "force", "backend")


def _split(args: list[str], reserved: tuple[str, ...]) -> tuple[dict[str, str], list[str]]:
    """Reserved ``key=value`` arguments, and the rest (config overrides)."""
    picked: dict[str, str] = {}
    rest: list[str] = []
    for arg in args:
        if "=" not in arg:
            raise ConfigError(f"argument '{arg}' is not of the form key=value")
        key, _, value = arg.partition("=")
        if key in reserved:
            picked[key] = value
        else:
            rest.append(arg)
    return picked, rest


def _flag(value: str | None) -> bool:
    if value is None:
        return False
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise ConfigError(f"expected true or false, got '{value}'")


def cmd_run(args: list[str]) -> int:
    from curation import config as cfg
    from curation.runner import run_pipeline

    picked, overrides = _split(args, RUN_KEYS)
    if "pipeline" not in picked:
        raise ConfigError("run: pipeline=NAME is required (a file in pipelines/ or a YAML path)")
    config = cfg.load(picked["pipeline"], overrides)
    stages = [s for s in picked.get("stage", "").split(",") if s] or None
    backend = picked.get("backend", "ray")
    if backend not in ("ray", "local"):
        raise ConfigError(f"backend: expected ray or local, got '{backend}'")
    report = run_pipeline(config, stages, _flag(picked.get("force")), backend)
    _print_report(report)
    return 0


def _print_report(report) -> None:
    print(f"run directory: {report.run_dir}")
    for name, summary in report.stages.items():
        counts = ", ".join(f"{k}={v}" for k, v in summary.get("counts", {}).items())
        print(f"  {name:<9} {summary.get('rows', 0):>8} rows  {counts}")


def cmd_demo(args: list[str]) -> int:
    from curation.demo.run import run_demo

    picked, overrides = _split(args, ("run_dir", "size", "backend"))
    return run_demo(
        Path(picked.get("run_dir", "runs/demo")),
        size=picked.get("size", "small"),
        overrides=overrides,
        backend=picked.get("backend", "ray"),
    )


def cmd_status(args: list[str]) -> int:
    from curation.status import format_status

    picked, rest = _split(args, ("run_dir",))
    if rest or "run_dir" not in picked:
        raise ConfigError("status: usage: curate status run_dir=DIR")
    print(format_status(Path(picked["run_dir"])))
    return 0


def cmd_verify(args: list[str]) -> int:
    from curation.runner.verify import verify_run_dir

    picked, rest = _split(args, ("run_dir", "checksums"))
    if rest or "run_dir" not in picked:
        raise ConfigError("verify: usage: curate verify run_dir=DIR [checksums=true]")
    report, intact = verify_run_dir(Path(picked["run_dir"]), _flag(picked.get("checksums")))
    print(report)
    return 0 if intact else 1


def cmd_report(args: list[str]) -> int:
    from curation.report import write_report

    picked, rest = _split(args, ("run_dir", "out", "seed"))
    if rest or "run_dir" not in picked:
        raise ConfigError("report: usage: curate report run_dir=DIR [out=FILE] [seed=N]")
    try:
        seed = int(picked.get("seed", 0))
    except ValueError:
        raise ConfigError(f"seed: expected an integer, got '{picked['seed']}'") from None
    print(write_report(Path(picked["run_dir"]), picked.get("out"), seed))
    return 0


def cmd_inspect(args: list[str]) -> int:
    from curation.manifest import read_manifest, verify

    positional = [a for a in args if "=" not in a]
    picked, rest = _split([a for a in args if "=" in a], ("checksums", "manifest"))
    location = picked.get("manifest") or (positional[0] if positional else None)
    if not location or rest or len(positional) > 1:
        raise ConfigError("inspect: usage: curate inspect MANIFEST [checksums=true]")
    manifest = read_manifest(location)
    print(f"manifest {location}: valid (format version 1)")
    print(f"  pipeline {manifest.pipeline}, config {manifest.config_hash}, created {manifest.created}")
    print(f"  {len(manifest.shards)} shards, {manifest.num_samples} samples, {manifest.num_bytes} bytes")
    for source, n in manifest.composition.items():
        print(f"  {source:<24} {n:>10}")
    problems = verify(manifest, check_checksums=_flag(picked.get("checksums")))
    for problem in problems:
        print(f"  problem: {problem}", file=sys.stderr)
    if problems:
        return 1
    print("  shards: all present" + (", checksums verified" if _flag(picked.get("checksums")) else ""))
    return 0


def cmd_plan(args: list[str]) -> int:
    from curation import config as cfg
    from curation.plan import plan_command

    picked, overrides = _split(args, ("pipeline", "cluster_file"))
    if "pipeline" not in picked:
        raise ConfigError("plan: pipeline=NAME is required")
    data = cfg.apply_overrides(cfg.read_yaml(cfg.resolve_pipeline_path(picked["pipeline"])),
                               cfg.parse_overrides(overrides))
    print(plan_command(data, cluster_path=picked.get("cluster_file")))
    return 0


def cmd_config(args: list[str]) -> int:
    import yaml

    from curation import config as cfg

    picked, overrides = _split(args, ("pipeline",))
    if "pipeline" not in picked:
        raise ConfigError("config: pipeline=NAME is required")
    config = cfg.load(picked["pipeline"], overrides)
    print(f"# hash {cfg.content_hash(config)}")
    print(yaml.safe_dump(cfg.to_dict(config), sort_keys=False), end="")
    return 0


def cmd_train(args: list[str]) -> int:
    from curation.train.cli import train_main

    return train_main(args)


COMMANDS = {
    "run": cmd_run,
    "demo": cmd_demo,
    "status": cmd_status,
    "verify": cmd_verify,
    "report": cmd_report,
    "inspect": cmd_inspect,
    "plan": cmd_plan,
    "config": cmd_config,
    "train": cmd_train,
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    command, args = argv[0], argv[1:]
    if command not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(command, list(COMMANDS), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        print(f"curate: unknown command '{command}'{hint}\n\n{USAGE}", file=sys.stderr, end="")
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("faiss").setLevel(logging.WARNING)  # its CPU-feature probing is noise to users
    try:
        return COMMANDS[command](args)
    except ConfigError as err:
        print(f"curate: config error: {err}", file=sys.stderr)
        return 2
    except CurationError as err:
        print(f"curate: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
