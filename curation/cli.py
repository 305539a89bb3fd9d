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

from curation import __version__
from curation.commands import (
    cmd_config,
    cmd_demo,
    cmd_export,
    cmd_inspect,
    cmd_plan,
    cmd_report,
    cmd_run,
    cmd_status,
    cmd_train,
    cmd_verify,
    pipeline_keys,
    train_keys,
)
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
            pipeline_keys,
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
            pipeline_keys,
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
            pipeline_keys,
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
            pipeline_keys,
        ),
        Command(
            "train",
            cmd_train,
            "train a ViT on a shard manifest (see docs/train.md)",
            "manifest=PATH [config=NAME|PATH] [dotted.key=value ...]",
            (("config", "a YAML file of base values (a path, or a file of pipelines/ such as train_demo)"),),
            train_keys,
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
