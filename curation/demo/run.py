"""``curate demo``: the whole pipeline on a small offline corpus, on local Ray."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from curation import config as cfg
from curation.demo.corpus import build_corpus, write_urls
from curation.demo.server import LoopbackServer

DEMO_PIPELINE = "demo"


def substitute(data: Any, values: dict[str, str]) -> Any:
    """Replace ``{corpus}`` / ``{run_dir}`` in every string of a config tree."""
    if isinstance(data, dict):
        return {k: substitute(v, values) for k, v in data.items()}
    if isinstance(data, list):
        return [substitute(v, values) for v in data]
    if isinstance(data, str):
        for name, value in values.items():
            data = data.replace("{" + name + "}", value)
    return data


def demo_config(run_dir: Path, overrides: list[str]) -> cfg.PipelineBase:
    raw = cfg.read_yaml(cfg.resolve_pipeline_path(DEMO_PIPELINE))
    raw = substitute(raw, {"corpus": str(run_dir / "corpus"), "run_dir": str(run_dir)})
    raw["run_dir"] = str(run_dir)
    return cfg.validate(cfg.apply_overrides(raw, cfg.parse_overrides(overrides)))


def run_demo(run_dir: Path, size: str = "small", overrides: list[str] | None = None, backend: str = "ray") -> int:
    from curation.runner import run_pipeline

    run_dir = run_dir.resolve()
    config = demo_config(run_dir, overrides or [])  # config errors before any work
    corpus_dir = run_dir / "corpus"
    corpus = build_corpus(corpus_dir, size=size, seed=config.seed)
    port_file = corpus_dir / "port"
    port = int(port_file.read_text()) if port_file.exists() else 0
    with _server(corpus_dir, port) as server:
        port_file.write_text(server.base_url.rsplit(":", 1)[1])
        write_urls(corpus, server.base_url)
        print(f"demo corpus: {corpus_dir} served at {server.base_url}")
        report = run_pipeline(config, None, force=False, backend=backend)
    _print_outputs(report, run_dir)
    return 0


def _server(root: Path, port: int) -> LoopbackServer:
    try:
        return LoopbackServer(root, port)
    except OSError:  # the port of an earlier run is taken: any port will do
        return LoopbackServer(root, 0)


def _print_outputs(report, run_dir: Path) -> None:
    print(f"\ndemo finished. run directory: {run_dir}")
    from curation.layout import step_dir
    from curation.stages.registry import get_stage

    for name, summary in report.stages.items():
        counts = ", ".join(f"{k}={v}" for k, v in summary.get("counts", {}).items())
        print(f"  {name:<9} {summary.get('rows', 0):>6} rows  {counts}")
        print(f"            table: {step_dir(run_dir, name, get_stage(name).table_step)}")
    manifest = run_dir / "shards" / "manifest.json"
    if manifest.exists():
        data = json.loads(manifest.read_text())
        print(f"  shards:   {data['totals']['shards']} shards, {data['totals']['samples']} samples")
        print(f"  manifest: {manifest}   (curate inspect {manifest})")
    print(f"  status:   curate status run_dir={run_dir}")
    print(
        "  note: the demo's models (copy-detection descriptor, ViT) have random or locally trained weights;"
        " their similarities are not those of pretrained models."
    )
