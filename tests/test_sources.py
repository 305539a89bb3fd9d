import io
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curation.demo.server import LoopbackServer
from curation.errors import ConfigError
from curation.sources import ImageSetConfig, check_exists, iter_images


def _jpeg(colour) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(buf, format="JPEG")
    return buf.getvalue()


def test_folder_with_classes(tmp_path):
    for cls, colour in (("cat", "red"), ("dog", "blue")):
        (tmp_path / cls).mkdir()
        for i in range(2):
            (tmp_path / cls / f"{i}.jpg").write_bytes(_jpeg(colour))
    (tmp_path / "notes.txt").write_text("not an image")
    items = list(iter_images(ImageSetConfig(name="pets", path=str(tmp_path))))
    assert [k for k, _, _ in items] == [f"pets-{i:08d}" for i in range(4)]
    assert [m["label"] for _, _, m in items] == ["cat", "cat", "dog", "dog"]
    assert items[2][1] == (tmp_path / "dog/0.jpg").read_bytes()
    limited = list(iter_images(ImageSetConfig(name="pets", path=str(tmp_path), limit=3)))
    assert len(limited) == 3


def test_shards(tmp_path):
    with tarfile.open(tmp_path / "a.tar", "w") as tar:
        for key in ("x1", "x2"):
            data = _jpeg("green")
            info = tarfile.TarInfo(f"{key}.jpg")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    items = list(iter_images(ImageSetConfig(name="s", kind="shards", path=str(tmp_path / "*.tar"))))
    assert [m["source_key"] for _, _, m in items] == ["x1", "x2"]


def test_urls_through_the_downloader(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img/a.jpg").write_bytes(_jpeg("red"))
    with LoopbackServer(tmp_path) as server:
        urls = [f"{server.base_url}/img/a.jpg", f"{server.base_url}/img/missing.jpg"]
        pq.write_table(pa.table({"url": urls}), tmp_path / "urls.parquet")
        cfg = ImageSetConfig(
            name="u", kind="urls", path=str(tmp_path / "urls.parquet"), allowed_addresses=["127.0.0.1"]
        )
        items = list(iter_images(cfg))
        refused = list(iter_images(cfg.model_copy(update={"allowed_addresses": []})))
    assert [(m["path"], d) for _, d, m in items] == [(urls[0], (tmp_path / "img/a.jpg").read_bytes())]
    assert refused == []  # loopback is refused unless allowed


def test_missing_paths_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="q.path: '.*nowhere' does not exist"):
        check_exists(ImageSetConfig(name="q", path=str(tmp_path / "nowhere")), "q")
    with pytest.raises(ConfigError, match="no tar shards match"):
        check_exists(ImageSetConfig(name="q", kind="shards", path=str(tmp_path / "*.tar")), "q")
