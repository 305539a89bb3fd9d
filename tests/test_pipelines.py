"""The shipped YAML files of ``pipelines/``: overrides of the code defaults, resolving to a known config.

Defaults live in the config models with their descriptions; a shipped file
holds what differs from them, plus the values the paper fixes. The resolved
configs are snapshots in ``tests/fixtures/pipelines/``: after a deliberate
change of a default or of a shipped file, rewrite them with
``python -m tests.test_pipelines`` and review the diff.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from curation import cli
from curation import config as cfg
from curation.confighelp import restated_defaults
from curation.demo.run import substitute

FIXTURES = Path(__file__).parent / "fixtures" / "pipelines"
SHIPPED = sorted(p.stem for p in cfg.PIPELINES_DIR.glob("*.yaml"))

# Keys a shipped file may set to the value the code default has: values the paper
# fixes (DINOv2, arXiv 2304.07193, Section 3 and Appendix A; Table 15), kept so that
# a changed default never changes the recipe. Any other key equal to its default
# is left out of the file, so that a changed default is never silently pinned.
PAPER_FIXED: dict[str, set[str]] = {
    "demo": set(),
    "train_demo": set(),
    "lvd142m": {
        "dedup.hashing.method",  # A.2: PCA hash deduplication before copy detection
        "dedup.descriptor.backbone",  # A.3: the SSCD copy-detection model (sscd_disc_mixup, a ResNet-50 ...
        "dedup.descriptor.dims",  # ... with 512-d descriptors)
        "dedup.descriptor.center",  # A.3: plain cosine similarity of the descriptors, no centering
        "dedup.copy_dedup.k",  # A.3: self-deduplication on a k-NN graph with k = 64 ...
        "dedup.copy_dedup.threshold",  # ... and cosine similarity above 0.6
        "dedup.relative.k",  # A.3: relative deduplication on the same k-NN search ...
        "dedup.relative.threshold",  # ... with threshold 0.45
        "embed.model.image_size",  # Section 3: ViT-H/16 embeddings at 224 px
        "cluster.mode",  # Section 3: flat k-means of the pool ...
        "cluster.k",  # ... into 100,000 clusters
        "retrieve.datasets[].k",  # Table 15: k = 4 neighbours per query (32 for ImageNet-1k)
        "retrieve.datasets[].per_cluster",  # Section 3: M = 10,000 images per qualifying cluster ...
        "retrieve.datasets[].min_queries",  # ... that holds more than 3 query images
    },
}


def _resolved(name: str) -> tuple[dict[str, Any], BaseModel]:
    """The file's plain data, and its validated config (placeholders left in, `{corpus}` filled)."""
    raw = cfg.read_yaml(cfg.resolve_pipeline_path(name))
    data = substitute(raw, {"corpus": "CORPUS", "run_dir": "RUN_DIR"})
    if "stages" in data:
        return raw, cfg.validate(data)
    from curation.train.config import validate_train_config

    return raw, validate_train_config(data)


def _snapshot(config: BaseModel) -> dict[str, Any]:
    return json.loads(json.dumps(cfg.to_dict(config)))


def test_every_shipped_file_has_an_allow_list_entry():
    assert sorted(PAPER_FIXED) == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_file_resolves_to_its_snapshot(name):
    _, config = _resolved(name)
    want = json.loads((FIXTURES / f"{name}.json").read_text())
    assert cfg.diff(want, _snapshot(config)) == []


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_file_restates_no_default_but_the_papers(name):
    raw, config = _resolved(name)
    restated = set(restated_defaults(raw, type(config)))
    unexpected = sorted(restated - PAPER_FIXED[name])
    assert not unexpected, (
        f"{name}.yaml sets these keys to their code default: remove them, or list them as "
        f"paper-fixed in PAPER_FIXED: {unexpected}"
    )
    moved = sorted(PAPER_FIXED[name] - restated)
    assert not moved, (
        f"paper-fixed keys of {name}.yaml missing, or no longer equal to the code default "
        f"(drop them from PAPER_FIXED if the default moved on purpose): {moved}"
    )


@pytest.mark.parametrize("name", SHIPPED)
def test_config_defaults_prints_every_key_with_its_description(name, capsys):
    assert cli.main(["config", f"pipeline={name}", "defaults=true"]) == 0
    text = capsys.readouterr().out
    key_lines = [line for line in text.splitlines() if re.match(r"^\s*(- )?[A-Za-z_]\w*:", line)]
    undocumented = [line for line in key_lines if not re.search(r"\s#\s\S", line)]
    assert not undocumented, f"keys without a description (give their Field one): {undocumented}"
    # the output is the resolved config, every key of it (demo: `{corpus}` left as written)
    _, config = _resolved(name)
    printed = substitute(yaml.safe_load(text), {"corpus": "CORPUS", "run_dir": "RUN_DIR"})
    assert printed == _snapshot(config)
    assert len(key_lines) > len(cfg.read_yaml(cfg.resolve_pipeline_path(name)))


def _write_snapshots() -> None:
    FIXTURES.mkdir(parents=True, exist_ok=True)
    for name in SHIPPED:
        path = FIXTURES / f"{name}.json"
        path.write_text(json.dumps(_snapshot(_resolved(name)[1]), indent=1, sort_keys=True) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    _write_snapshots()
    sys.exit(0)
