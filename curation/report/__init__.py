"""The HTML curation report of a run directory (``curate report``)."""

from curation.report.build import REPORT_FILE, SECTIONS, write_report

__all__ = ["REPORT_FILE", "SECTIONS", "write_report"]
