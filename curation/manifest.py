"""The shard manifest: what a training job reads.

A versioned JSON file listing the shards (relative path, sample count, bytes,
sha256), totals, the composition per source dataset and the producing run's
config hash. The JSON Schema is ``manifests/manifest.schema.json``. A
manifest is written atomically and last, after every shard it lists exists.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import posixpath
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from curation.atomic import write_json
from curation.errors import ManifestError

FORMAT = "curation.shards"
VERSION = 1


@dataclass(frozen=True)
class ShardEntry:
    path: str  # relative to the manifest's directory
    samples: int
    bytes: int
    sha256: str


@dataclass
class Manifest:
    pipeline: str
    config_hash: str
    shards: list[ShardEntry]
    composition: dict[str, int]
    created: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    location: str = ""  # where it was read from; not serialised

    @property
    def num_samples(self) -> int:
        return sum(s.samples for s in self.shards)

    @property
    def num_bytes(self) -> int:
        return sum(s.bytes for s in self.shards)

    def shard_urls(self) -> list[str]:
        """Absolute paths or URLs of the shards, resolved against the manifest."""
        base = posixpath.dirname(self.location) if self.location else ""
        return [posixpath.join(base, s.path) if base else s.path for s in self.shards]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "created": self.created,
            "pipeline": self.pipeline,
            "config_hash": self.config_hash,
            "shards": [asdict(s) for s in self.shards],
            "totals": {"shards": len(self.shards), "samples": self.num_samples, "bytes": self.num_bytes},
            "composition": dict(sorted(self.composition.items())),
            "extra": self.extra,
        }


def schema() -> dict[str, Any]:
    return json.loads(resources.files("curation.resources").joinpath("manifest.schema.json").read_text())


def validate_json(data: Any, where: str = "manifest") -> None:
    import jsonschema

    if isinstance(data, dict) and data.get("format") == FORMAT and data.get("version") != VERSION:
        raise ManifestError(f"{where}: version {data.get('version')} is not supported (this reader: {VERSION})")
    try:
        jsonschema.validate(data, schema())
    except jsonschema.ValidationError as err:
        at = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        raise ManifestError(f"{where}: invalid at {at}: {err.message}") from None
    totals = data["totals"]
    shards = data["shards"]
    expected = {
        "shards": len(shards),
        "samples": sum(s["samples"] for s in shards),
        "bytes": sum(s["bytes"] for s in shards),
    }
    if totals != expected:
        raise ManifestError(f"{where}: totals {totals} do not match the shards {expected}")
    if sum(data["composition"].values()) != expected["samples"]:
        raise ManifestError(f"{where}: composition does not add up to {expected['samples']} samples")


def sha256_stream(f, chunk: int = 1 << 20) -> str:
    """sha256 of a binary file object, read in chunks."""
    digest = hashlib.sha256()
    while block := f.read(chunk):
        digest.update(block)
    return digest.hexdigest()


def shard_entry(path: Path, root: Path, samples: int) -> ShardEntry:
    """Describe an existing shard file for the manifest at ``root``."""
    return ShardEntry(
        path=Path(path).relative_to(root).as_posix(),
        samples=samples,
        bytes=Path(path).stat().st_size,
        sha256=_sha256_path(path),
    )


def _sha256_path(path: Path) -> str:
    with open(path, "rb") as f:
        return sha256_stream(f)


def write_manifest(
    path: Path,
    shards: list[ShardEntry],
    composition: dict[str, int],
    config_hash: str,
    pipeline: str,
    extra: dict[str, Any] | None = None,
) -> Manifest:
    """Validate and write a manifest atomically; every shard must exist."""
    path = Path(path)
    missing = [s.path for s in shards if not (path.parent / s.path).is_file()]
    if missing:
        raise ManifestError(f"{path}: refusing to write a manifest with missing shards: {missing[:5]}")
    manifest = Manifest(
        pipeline=pipeline,
        config_hash=config_hash,
        shards=list(shards),
        composition=dict(composition),
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        extra=extra or {},
    )
    data = manifest.to_json()
    validate_json(data, str(path))
    write_json(path, data)
    manifest.location = str(path)
    return manifest


def read_manifest(location: str | Path) -> Manifest:
    """Read and validate a manifest from a local path or an fsspec URL."""
    location = str(location)
    try:
        import fsspec

        with fsspec.open(location, "rt") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ManifestError(f"{location}: no such manifest") from None
    except json.JSONDecodeError as err:
        raise ManifestError(f"{location}: not JSON: {err}") from None
    validate_json(data, location)
    return Manifest(
        pipeline=data["pipeline"],
        config_hash=data["config_hash"],
        shards=[ShardEntry(**s) for s in data["shards"]],
        composition=data["composition"],
        created=data["created"],
        extra=data.get("extra", {}),
        location=location,
    )


def verify(manifest: Manifest, check_checksums: bool = False) -> list[str]:
    """Problems found with the shards on disk (empty when all is well)."""
    import fsspec

    problems = []
    for entry, url in zip(manifest.shards, manifest.shard_urls(), strict=False):
        fs, fpath = fsspec.core.url_to_fs(url)
        if not fs.exists(fpath):
            problems.append(f"{entry.path}: missing")
            continue
        size = fs.size(fpath)
        if size != entry.bytes:
            problems.append(f"{entry.path}: {size} bytes, manifest says {entry.bytes}")
        elif check_checksums:
            with fs.open(fpath, "rb") as f:
                actual = sha256_stream(f)
            if actual != entry.sha256:
                problems.append(f"{entry.path}: sha256 mismatch")
    return problems
