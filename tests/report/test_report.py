"""`curate report` on one tiny demo run: content checks, and a real render in headless Chromium."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from curation.cli import main
from curation.report import SECTIONS, write_report
from curation.report import html as h
from curation.report.selection import size_histogram

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Appended to a copy of the report: records, once every image settled, which ones failed.
CHECK_SCRIPT = """<script>
window.addEventListener('load', () => {
  const images = [...document.images];
  const bad = images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt);
  const sections = [...document.querySelectorAll('section')].map(s => s.id);
  const out = document.createElement('pre');
  out.id = 'selfcheck';
  out.textContent = JSON.stringify({images: images.length, bad: bad, sections: sections});
  document.body.appendChild(out);
});
</script>"""


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("report") / "run"
    # The dedup of the demo before hash variants: copy detection forced on (random weights, tests only), so
    # that the report shows copy groups as well as hash groups.
    assert (
        main(
            [
                "demo",
                f"run_dir={run_dir}",
                "size=tiny",
                "backend=local",
                "runner.progress=false",
                "dedup.copy_dedup.enabled=true",
                "dedup.descriptor.allow_random_weights=true",
                "dedup.descriptor.backbone=resnet18",
                "dedup.descriptor.dims=128",
                "dedup.descriptor.image_size=96",
                "dedup.descriptor.center=true",
                "dedup.copy_dedup.threshold=0.8",
                "dedup.relative.threshold=0.8",
                "dedup.hashing.method=pca",
                "dedup.hashing.variants.enabled=false",
            ]
        )
        == 0
    )
    return run_dir


@pytest.fixture(scope="module")
def report(demo_run):
    path = write_report(demo_run)
    return path, path.read_text()


@pytest.mark.slow
def test_every_section_is_there_and_self_contained(report):
    path, text = report
    assert path.name == "report.html"
    for section in SECTIONS:
        assert f'<section id="{section}">' in text
    sources = re.findall(r'<img src="([^"]*)"', text)
    assert sources and all(s.startswith("data:image/jpeg;base64,") for s in sources)
    # Nothing may be fetched: no external URL in any attribute, and a CSP that forbids it anyway.
    assert not re.search(r'(src|href)="(https?:|//)', text)
    assert "default-src 'none'" in text


@pytest.mark.slow
def test_planted_duplicates_are_shown_closest_call_first(demo_run, report):
    _, text = report
    truth = json.loads((demo_run / "corpus/truth.json").read_text())
    assert truth["near_duplicates"]
    dedup = text.split('<section id="dedup">')[1].split("</section>")[0]
    copy = dedup.split("Copy duplicates")[1].split("Near misses")[0]
    sims = [float(s) for s in re.findall(r"similarity (\d\.\d+) to", copy)]
    assert sims and sims == sorted(sims)  # the closest call to the threshold first
    bits = [int(b) for b in re.findall(r"distance (\d+) bits", dedup)]
    assert bits and max(bits) <= 4 and bits[0] == max(bits)


@pytest.mark.slow
def test_composition_and_steps(demo_run, report):
    _, text = report
    written = json.loads((demo_run / "shards/manifest.json").read_text())["composition"]
    composition = text.split('<section id="composition">')[1].split("</section>")[0]
    for name, n in written.items():
        assert re.search(rf"<td>{name}</td>.*?<td class=n>{n}</td>", composition)
    steps = text.split('<section id="steps">')[1]
    for step in ("download/fetch", "dedup/graph", "cluster/train", "retrieve/search", "shard/plan", "shard/write"):
        assert f"<td>{step}</td><td>" in steps


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_renders_in_headless_chromium_with_every_image(report, tmp_path):
    _, text = report
    page = tmp_path / "check.html"
    page.write_text(
        text.replace("default-src 'none';", "default-src 'none'; script-src 'unsafe-inline';").replace(
            "</body>", CHECK_SCRIPT + "</body>"
        )
    )
    out = subprocess.run(
        [
            CHROMIUM,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    found = re.search(r'<pre id="selfcheck">(.*?)</pre>', out.stdout, re.S)
    assert found, out.stderr[-2000:]
    result = json.loads(html.unescape(found.group(1)))
    assert result["bad"] == []
    assert result["images"] == text.count("<img ") > 20
    assert result["sections"] == list(SECTIONS)


@pytest.mark.slow
def test_cli(demo_run, tmp_path, capsys):
    out = tmp_path / "r.html"
    assert main(["report", f"run_dir={demo_run}", f"out={out}", "seed=3"]) == 0
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert main(["report", f"run_dir={tmp_path}"]) == 1  # not a run directory
    assert main(["report", "seed=x", f"run_dir={demo_run}"]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_text_from_the_run_is_escaped():
    page = h.page("t", "s", [("a", "A", h.table(["k"], [["<script>x</script>"]]) + h.figure(None, "<b>"))])
    assert "<script>" not in page and "&lt;script&gt;" in page and "&lt;b&gt;" in page


def test_size_histogram_bins_by_powers_of_two():
    sizes = np.array([0, 1, 2, 3, 4, 7, 8, 100])
    assert size_histogram(sizes) == [
        ("1", 1),
        ("2-3", 2),
        ("4-7", 2),
        ("8-15", 1),
        ("16-31", 0),
        ("32-63", 0),
        ("64-127", 1),
    ]
    assert size_histogram(np.zeros(3, np.int64)) == []


@pytest.mark.slow
def test_a_run_with_only_its_first_stage_done(demo_run, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(demo_run / "stages/download", partial / "stages/download")
    shutil.copy(demo_run / "config.yaml", partial / "config.yaml")
    text = write_report(partial).read_text()
    for section in SECTIONS:
        assert f'<section id="{section}">' in text
    assert "the dedup stage has not run" in text and "the cluster stage has not run" in text
    assert "the shard stage has not written yet" in text
    assert "failed_download:http_404" in text  # drop reasons of the stage that ran
