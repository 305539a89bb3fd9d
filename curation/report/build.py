"""``curate report``: one static HTML file that shows what a run kept, dropped and why.

The page is self-contained (inline CSS and SVG, thumbnails as data URIs, a
Content-Security-Policy that forbids any request), so it opens from disk, can be
mailed, and leaks nothing. Its cost does not grow with the pool: counts come
from stats JSON, rows are sampled from a few partitions, and only the images
shown (a few hundred) are decoded.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from curation.atomic import write_bytes
from curation.report import html as h
from curation.report.dedup import dedup_section
from curation.report.funnel import funnel_section, reasons_section
from curation.report.run import RunView
from curation.report.selection import clusters_section, composition_section, retrieval_section
from curation.report.steps import steps_section
from curation.report.thumbs import Thumbnails

log = logging.getLogger("curation")
REPORT_FILE = "report.html"
SECTIONS = ("funnel", "reasons", "dedup", "clusters", "retrieval", "composition", "steps")


def write_report(run_dir: Path | str, out: Path | str | None = None, seed: int = 0) -> Path:
    """Write the report of ``run_dir`` to ``out`` (default ``<run_dir>/report.html``); return its path."""
    start = time.perf_counter()
    view = RunView(Path(run_dir), seed)
    thumbs = Thumbnails(view.run_dir, view.image_sets())
    sections = [
        ("funnel", "Funnel: rows per status per stage", funnel_section(view)),
        ("reasons", "Drop reasons, with examples", reasons_section(view, thumbs)),
        ("dedup", "Duplicate groups, closest calls first", dedup_section(view, thumbs)),
        ("clusters", "Clusters", clusters_section(view, thumbs)),
        ("retrieval", "Retrieval: queries and what they retrieved", retrieval_section(view, thumbs)),
        ("composition", "Composition against the plan", composition_section(view)),
        ("steps", "Time, memory and placement per step", steps_section(view)),
    ]
    from curation import config as cfg

    subtitle = (
        f"pipeline {view.config.name}, config {cfg.content_hash(view.config)}, run {view.run_dir}, "
        f"report made {time.strftime('%Y-%m-%d %H:%M:%S')}"
    )
    path = Path(out) if out is not None else view.run_dir / REPORT_FILE
    write_bytes(path, h.page(f"Curation report: {view.config.name}", subtitle, sections).encode())
    log.info("report: %s (%d images decoded, %.1f s)", path, thumbs.decoded, time.perf_counter() - start)
    return path
