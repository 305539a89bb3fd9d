import hashlib
import json
import urllib.request

import pyarrow.parquet as pq
from PIL import Image

from curation.demo.corpus import NEAR_KINDS, build_corpus, write_urls
from curation.demo.server import LoopbackServer


def test_corpus_is_deterministic_with_planted_duplicates(tmp_path):
    a = build_corpus(tmp_path / "a", "tiny", seed=0)
    b = build_corpus(tmp_path / "b", "tiny", seed=0)
    files_a = {p.name: p.read_bytes() for p in (a.root / "images").iterdir()}
    assert files_a == {p.name: p.read_bytes() for p in (b.root / "images").iterdir()}
    kinds = {d["transform"] for d in a.truth["near_duplicates"]}
    assert kinds == set(NEAR_KINDS)
    for dup in a.truth["exact_duplicates"]:
        assert files_a[dup["copy"]] == files_a[dup["original"]]
    for near in a.truth["near_duplicates"]:
        assert hashlib.sha256(files_a[near["copy"]]).digest() != hashlib.sha256(files_a[near["original"]]).digest()
    classes = sorted(p.name for p in a.queries.iterdir())
    assert len(classes) == 3 and all(len(list((a.queries / c).iterdir())) == 5 for c in classes)
    assert len(list(a.benchmark.iterdir())) == len(a.truth["leaks"]) > 0
    for name, data in list(files_a.items())[:5]:
        Image.open(__import__("io").BytesIO(data)).verify()


def test_urls_are_served_on_loopback(tmp_path):
    corpus = build_corpus(tmp_path, "tiny")
    with LoopbackServer(corpus.root) as server:
        write_urls(corpus, server.base_url)
        table = pq.read_table(corpus.urls).to_pylist()
        first = table[0]["url"]
        assert first.startswith("http://127.0.0.1:")
        name = first.rsplit("/", 1)[1]
        assert urllib.request.urlopen(first, timeout=10).read() == (corpus.root / "images" / name).read_bytes()
    urls = [r["url"] for r in table]
    assert urls.count(first) == 2  # a planted duplicate URL
    assert sum(u.startswith("ftp://") for u in urls) == 1
    assert json.loads((corpus.root / "truth.json").read_text())["broken"] == corpus.truth["broken"]
