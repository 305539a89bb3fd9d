"""A hostile server puts a marker in bodies, headers, reason phrases and redirect targets: no output holds it."""

import json
import re
import tarfile

import pyarrow.parquet as pq

from curation.runner.local import run_stages
from tests.download import images
from tests.download.server import MARKER, LoopbackServer

EXPECTED = {  # kind -> (status, error): errors describe, they never quote
    "body": ("failed_decode:not_image", "html, 113 bytes"),
    "json": ("failed_decode:not_image", "json, 23 bytes"),
    "png": ("failed_decode:corrupt", "png, 48 bytes: OSError"),
    "headers": ("success", None),
    "retry": ("failed_download:http_503", None),
    "private": ("filtered_url:private_address", "redirect hop 1"),
    "dns": ("failed_download:dns_error", "ClientConnectorDNSError: gaierror: errno"),  # the number is the OS's
    "malformed": ("filtered_url:malformed", "redirect hop 1"),
    "scheme": ("filtered_url:scheme", "redirect hop 1"),
    "loop": ("failed_download:redirect_loop", "redirect hop 2"),
}
# Broken framing: aiohttp's versions and parsers classify it differently; the error names types only.
RAW = ("status_line", "header_line", "chunks", "encoding")
RAW_STATUSES = ("failed_download:bad_response", "failed_download:connection_error")


def _run(tmp_path, srv):
    (tmp_path / "urls.txt").write_text("".join(srv.url(f"hostile/{kind}") + "\n" for kind in [*EXPECTED, *RAW]))
    config = {
        "name": "hostile",
        "run_dir": str(tmp_path / "run"),
        "stages": ["download"],
        "download": {
            "input": {"paths": [str(tmp_path / "urls.txt")], "partition_size": 8},
            "urls": {"allowed_addresses": ["127.0.0.1"]},
            "http": {
                "connect_timeout": 1,
                "read_timeout": 1,
                "total_timeout": 2,
                "retries": 1,
                "backoff": 0.01,
                "retry_after_max": 0.1,
            },
        },
    }
    run_stages(tmp_path / "run", config, ["download"])
    return tmp_path / "run"


def _texts(run_dir):
    """Every output of the run as text: Parquet decoded (it may be compressed), tar members, other files raw."""
    for path in sorted(p for p in run_dir.rglob("*") if p.is_file()):
        if path.suffix == ".parquet":
            yield path, json.dumps(pq.read_table(path).to_pylist(), default=str)
        elif path.suffix == ".tar":
            with tarfile.open(path) as tar:
                for member in tar.getmembers():
                    yield path, tar.extractfile(member).read().decode("latin-1")
        else:
            yield path, path.read_bytes().decode("latin-1")


def test_nothing_the_server_sent_reaches_any_output(tmp_path):
    srv = LoopbackServer().start()
    try:
        srv.add("hostile.jpg", images.jpeg(64, 48))
        run_dir = _run(tmp_path, srv)
    finally:
        srv.stop()
    marker = MARKER.decode()[:4]  # a PNG chunk name would carry only four bytes of it
    leaks = [str(path.relative_to(run_dir)) for path, text in _texts(run_dir) if marker in text.lower()]
    assert leaks == []
    rows = [
        r for p in sorted(run_dir.glob("stages/download/fetch/part-*.parquet")) for r in pq.read_table(p).to_pylist()
    ]
    got = {r["url"].rsplit("/", 1)[1]: (r["status"], r["error"]) for r in rows}
    assert got.pop("dns")[1].startswith(EXPECTED["dns"][1])
    for status, error in (got.pop(kind) for kind in RAW):
        assert status in RAW_STATUSES and (error is None or re.fullmatch(r"\w+(: \w+)*", error)), (status, error)
    assert got == {kind: value for kind, value in EXPECTED.items() if kind != "dns"}
