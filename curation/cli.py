"""``curate``: run pipelines, watch them, inspect and export their outputs.

Every command takes dotted ``key=value`` arguments: a few of its own
(``pipeline=NAME``, ``stage=a,b``, ...) and, for the commands that load a
pipeline or a trainer config, any config key (``dedup.copy_dedup.threshold=0.6``).
``curate COMMAND --help`` lists them all, with defaults and descriptions
generated from the config models. ``python -m curation`` is the same program.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from curation import __version__
from curation.cliargs import flag, only, split
from curation.errors import ConfigError

LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class Command:
    name: str
    run: Callable[[list[str]], int]
    summary: str
    usage: str
    own_keys: tuple[tuple[str, str], ...] = ()  # (key, description) of the command's own arguments
    config_keys: Callable[[], str] | None = None  # help text of the config keys it accepts


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


def _pipeline_keys() -> str:
    from curation.confighelp import pipeline_keys_help

    return pipeline_keys_help()


def _train_keys() -> str:
    from curation.confighelp import train_keys_help

    return train_keys_help()


PIPELINE = ("pipeline", "a file of pipelines/ (demo, lvd142m) or a YAML path, e.g. a run's config.yaml")
COMMANDS = {
    c.name: c
    for c in (
        Command(
            "run",
            cmd_run,
            "run a pipeline's stages (all, in order, or those named), resumably",
            "pipeline=NAME [stage=a,b] [force=true] [backend=ray|local] [dotted.key=value ...]",
            (
                PIPELINE,
                ("stage", "comma-separated stages to run (default: all); their inputs must be complete"),
                ("force", "true: redo the stages whose config section changed, and those after them [default: false]"),
                ("backend", "ray (default) or local: in-process, for debugging"),
            ),
            _pipeline_keys,
        ),
        Command(
            "demo",
            cmd_demo,
            "build a small offline corpus, serve it on loopback and run the demo pipeline",
            "[run_dir=runs/demo] [size=small|tiny] [backend=ray|local] [dotted.key=value ...]",
            (
                ("run_dir", "where the corpus and the run go [default: runs/demo]"),
                ("size", "small or tiny [default: small]"),
                ("backend", "ray (default) or local"),
            ),
            _pipeline_keys,
        ),
        Command(
            "status",
            cmd_status,
            "per-stage progress of a run directory",
            "run_dir=DIR",
            (("run_dir", "the run directory"),),
        ),
        Command(
            "verify",
            cmd_verify,
            "check every stage's files against its markers; changes nothing",
            "run_dir=DIR [checksums=true]",
            (
                ("run_dir", "the run directory"),
                ("checksums", "true: also verify every file's sha256, not only its size [default: false]"),
            ),
        ),
        Command(
            "report",
            cmd_report,
            "a self-contained HTML report of a run (see docs/report.md)",
            "run_dir=DIR [out=FILE] [seed=N]",
            (
                ("run_dir", "the run directory"),
                ("out", "the HTML file to write [default: RUN_DIR/report.html]"),
                ("seed", "seed of the sampled example images [default: 0]"),
            ),
        ),
        Command(
            "inspect",
            cmd_inspect,
            "validate a shard manifest (and verify its shards' sha256)",
            "MANIFEST [checksums=true]",
            (
                ("MANIFEST", "path of a manifest.json (or manifest=PATH)"),
                ("checksums", "true: also verify every shard's sha256 [default: false]"),
            ),
        ),
        Command(
            "export",
            cmd_export,
            "copy or link the final shards into an img2dataset-compatible folder",
            "run_dir=DIR|manifest=PATH out=DIR [copy=false]",
            (
                ("run_dir", "a finished run (its shards/manifest.json is exported)"),
                ("manifest", "or the manifest to export"),
                ("out", "output folder: NNNNN.tar, NNNNN.parquet and NNNNN_stats.json per shard"),
                ("copy", "true: copy the tars; false: hard-link them where possible [default: false]"),
            ),
        ),
        Command(
            "plan",
            cmd_plan,
            "the expected composition of a pipeline, like the paper's Table 15; with a pool "
            "size, the resources, memory and time of every step on the cluster",
            "pipeline=NAME [pool_size=N] [cluster_file=ray_cluster.yaml] [dotted.key=value ...]",
            (
                PIPELINE,
                ("pool_size", "number of images in the pool: plans resources, memory and time per step"),
                ("cluster_file", "a Ray cluster YAML to plan against, instead of the config's compute: section"),
            ),
            _pipeline_keys,
        ),
        Command(
            "config",
            cmd_config,
            "print the resolved, validated config of a pipeline (or of a trainer config)",
            "pipeline=NAME [defaults=true] [dotted.key=value ...]",
            (
                PIPELINE,
                (
                    "defaults",
                    "true: every key, defaults included, each with its description as a YAML "
                    "comment; placeholders may be left unfilled [default: false]",
                ),
            ),
            _pipeline_keys,
        ),
        Command(
            "train",
            cmd_train,
            "train a ViT on a shard manifest (see docs/train.md)",
            "manifest=PATH [config=NAME|PATH] [dotted.key=value ...]",
            (("config", "a YAML file of base values (a path, or a file of pipelines/ such as train_demo)"),),
            _train_keys,
        ),
    )
}


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as ConfigError (one ``curate:`` line, exit 2)."""

    def error(self, message: str):
        raise ConfigError(f"{self.prog}: {message}; see {self.prog} --help")


def _global_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """The output options, accepted before and after the command.

    A subcommand's copy has no defaults (``suppress``): argparse would
    otherwise overwrite what was given before the command.
    """

    def default(value):
        return argparse.SUPPRESS if suppress else value

    group = parser.add_argument_group("output")
    group.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default=default("info"),
        help="log messages from this level up [default: info]",
    )
    group.add_argument(
        "--quiet", "-q", action="store_true", default=default(False), help="warnings and errors only, no progress bars"
    )
    group.add_argument(
        "--debug", action="store_true", default=default(False), help="debug logging, and a traceback with every error"
    )


def _epilog(command: Command) -> str:
    lines = []
    if command.own_keys:
        width = max(len(k) for k, _ in command.own_keys) + 2
        lines += ["arguments:"] + [f"  {k:<{width}}{d}" for k, d in command.own_keys]
    if command.config_keys is not None:
        lines += [
            "",
            "config keys (dotted.key=value; defaults from the code, values in YAML syntax):",
            command.config_keys(),
        ]
    return "\n".join(lines)


def build_parser(help_for: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``help_for``'s config keys are generated (they import every stage)."""
    parser = _Parser(
        prog="curate",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Curate web-scale image URL lists into LVD-style pretraining shards.",
        epilog="commands take key=value arguments; curate COMMAND --help lists them.\n"
        "python -m curation ... is the same program (for Ray Jobs).",
    )
    parser.add_argument("--version", action="version", version=f"curate {__version__}")
    _global_options(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser, title="commands")
    for command in COMMANDS.values():
        child = sub.add_parser(
            command.name,
            help=command.summary,
            description=command.summary,
            usage=f"curate {command.name} {command.usage}",
            epilog=_epilog(command) if command.name == help_for else None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _global_options(child, suppress=True)
        child.add_argument("args", nargs="*", metavar="key=value", help=argparse.SUPPRESS)
    return parser


def _help_target(argv: list[str]) -> str | None:
    wants_help = any(a in ("-h", "--help") for a in argv)
    return next((a for a in argv if a in COMMANDS), None) if wants_help else None


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S", force=True
    )
    if level != "debug":
        logging.getLogger("faiss").setLevel(logging.WARNING)  # its CPU-feature probing is noise to users


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = build_parser(_help_target(argv))
    options, extra = parser.parse_known_args(argv)
    for arg in extra:  # key=value arguments after an option land here, in order
        if arg.startswith("-"):
            prog = " ".join(["curate"] + ([options.command] if options.command else []))
            raise ConfigError(f"{prog}: unknown option '{arg}'; see {prog} --help")
    options.args = list(getattr(options, "args", None) or []) + extra
    if options.command is None:
        parser.print_help()
        raise SystemExit(0 if not argv else 2)
    if (
        options.quiet
        and options.command in ("run", "demo")
        and not any(a.startswith("runner.progress=") for a in options.args)
    ):
        options.args.append("runner.progress=false")
    return options


def main(argv: list[str] | None = None) -> int:
    from curation.exits import run_command

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["help"]:  # `curate help [COMMAND]`
        argv = argv[1:2] + ["--help"]
    try:
        options = _parse(argv)
    except SystemExit as done:  # --help, --version
        return int(done.code or 0)
    except ConfigError as err:
        print(f"curate: {_unknown_command_hint(argv, err)}", file=sys.stderr)
        return 2
    level = "debug" if options.debug else "warning" if options.quiet else options.log_level
    _configure_logging(level)
    return run_command(lambda: COMMANDS[options.command].run(options.args), debug=options.debug)


def _unknown_command_hint(argv: list[str], err: ConfigError) -> str:
    import difflib

    text = str(err)
    if "argument COMMAND: invalid choice" not in text:
        return f"usage error: {text}"
    word = next((a for a in argv if not a.startswith("-") and a not in COMMANDS), "")
    close = difflib.get_close_matches(word, list(COMMANDS), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown command '{word}'{hint}; commands: {', '.join(COMMANDS)}"


if __name__ == "__main__":
    sys.exit(main())
