import tarfile

from curation.download.shardwriter import ShardWriter
from curation.imagestore import TarImages


def _write(path):
    with ShardWriter(path) as writer:
        writer.write_sample("000000000001", b"jpeg-1", {"key": "000000000001", "width": 3})
        writer.write_sample("000000000000", b"jpeg-0", {"key": "000000000000", "caption": "a cat"})
    return writer


def test_round_trip_order_and_metadata(tmp_path):
    writer = _write(tmp_path / "a.tar")
    assert (writer.samples, writer.bytes) == (
        2,
        12 + len(b'{"key": "000000000001", "width": 3}') + len(b'{"caption": "a cat", "key": "000000000000"}'),
    )
    with tarfile.open(tmp_path / "a.tar") as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == [
            "000000000001.jpg",
            "000000000001.json",
            "000000000000.jpg",
            "000000000000.json",
        ]
        assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {(0, 0, 0, "", "", 0o644)}
    images = TarImages(tmp_path / "a.tar")
    assert images.get("000000000000") == b"jpeg-0"
    assert images.meta("000000000000") == {"key": "000000000000", "caption": "a cat"}
    assert images.meta("000000000001")["width"] == 3


def test_deterministic_bytes(tmp_path):
    _write(tmp_path / "a.tar")
    _write(tmp_path / "b.tar")
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
