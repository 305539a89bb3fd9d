"""Compare the outputs of two runs: tables by content, arrays, shards and JSON outputs byte for byte.

What may differ between two runs of the same pipeline on the same corpus, and is
normalised before comparing: the loopback port the corpus was served on (it is
in every URL, so in the shards' JSON members), the run directory's absolute path
(in the resolved config, so in its hash), and the manifest's creation time. So
the manifest is compared without ``created``, ``config_hash`` and the shards'
``sha256`` (the shards themselves are compared member by member, and the
resolved configs line by line but for their hash). Completion markers (``_SUCCESS.json``, ``*.stats.json``) hold timings,
hosts and memory; only their ``counts`` and ``rows`` are compared.

    python -m tests.demo.compare RUN_A RUN_B     # prints each difference; exit 1 if any
"""

from __future__ import annotations

import json
import re
import sys
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

MARKERS = ("_SUCCESS.json", ".stats.json", "_PROGRESS.json")
SKIPPED = (".lock",)
HASH_LINE = re.compile(rb"^# resolved config, hash \w+", re.M)
PORT = re.compile(rb"(127\.0\.0\.1|localhost):\d+")


def outputs(root: Path) -> dict[str, Path]:
    """Every file a run wrote, by path relative to the run directory (its input corpus aside)."""
    files = {str(p.relative_to(root)): p for p in root.rglob("*") if p.is_file()}
    return {k: p for k, p in files.items() if not k.startswith("corpus/") and k not in SKIPPED}


def _normal(data: bytes, root: Path) -> bytes:
    data = HASH_LINE.sub(b"# resolved config", data.replace(str(root.resolve()).encode(), b"RUN"))
    return PORT.sub(rb"\1:PORT", data)


def _table(path: Path, root: Path) -> pa.Table:
    """The table with every string column normalised (URLs carry the port)."""
    t = pq.read_table(path)
    for i, field in enumerate(t.schema):
        if pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
            values = [None if v is None else _normal(v.encode(), root).decode() for v in t.column(i).to_pylist()]
            t = t.set_column(i, field, pa.array(values, field.type))
    return t


def _members(path: Path, root: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(path) as tar:
        return [(m.name, _normal(tar.extractfile(m).read(), root)) for m in tar.getmembers() if m.isfile()]


def _json(path: Path, root: Path, keep: tuple[str, ...] | None = None) -> object:
    data = json.loads(_normal(path.read_bytes(), root))
    if isinstance(data, dict):
        for key in ("created", "config_hash"):
            data.pop(key, None)
        for shard in data.get("shards", []) if isinstance(data.get("shards"), list) else []:
            if isinstance(shard, dict):
                shard.pop("sha256", None)
        if keep is not None:
            data = {k: data.get(k) for k in keep}
    return data


def same(name: str, a: Path, b: Path, root_a: Path, root_b: Path) -> bool:
    if name.endswith(MARKERS):
        return _json(a, root_a, ("counts", "rows")) == _json(b, root_b, ("counts", "rows"))
    if name.endswith(".parquet"):
        return _table(a, root_a).equals(_table(b, root_b), check_metadata=True)
    if name.endswith(".tar"):
        return _members(a, root_a) == _members(b, root_b)
    if name.endswith(".json"):
        return _json(a, root_a) == _json(b, root_b)
    return _normal(a.read_bytes(), root_a) == _normal(b.read_bytes(), root_b)


def differences(root_a: Path, root_b: Path) -> list[str]:
    """One line per file that only one run has or whose content differs; empty when the runs agree."""
    a, b = outputs(root_a), outputs(root_b)
    lines = [f"only in {root_a}: {k}" for k in sorted(a.keys() - b.keys())]
    lines += [f"only in {root_b}: {k}" for k in sorted(b.keys() - a.keys())]
    lines += [f"differs: {k}" for k in sorted(a.keys() & b.keys()) if not same(k, a[k], b[k], root_a, root_b)]
    return lines


def main(argv: list[str]) -> int:
    root_a, root_b = (Path(p) for p in argv)
    lines = differences(root_a, root_b)
    print("\n".join(lines) if lines else f"identical: {len(outputs(root_a))} files")
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
