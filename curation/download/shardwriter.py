"""Deterministic tar shards: members in the order written, fixed metadata.

Two runs over the same inputs give byte-identical tars: every member has
mtime 0, uid/gid 0, no user or group names and mode 0644.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any


class ShardWriter:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._tar = tarfile.open(self.path, "w", format=tarfile.PAX_FORMAT)
        self.samples = 0
        self.bytes = 0

    def add(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = 0
        info.mode = 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        self._tar.addfile(info, io.BytesIO(data))
        self.bytes += len(data)

    def write_sample(self, key: str, image: bytes, meta: dict[str, Any], ext: str = "jpg") -> None:
        """``{key}.{ext}`` then ``{key}.json`` (sorted keys, values not JSON-typed as strings)."""
        self.add(f"{key}.{ext}", image)
        self.add(f"{key}.json", json.dumps(meta, sort_keys=True, default=str).encode())
        self.samples += 1

    def close(self) -> None:
        self._tar.close()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
