"""curation: web-scale image URL lists to curated, LVD-style pretraining shards."""

__version__ = "0.1.0"
