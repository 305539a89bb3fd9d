"""The download stage: its steps and registration in ``stage.py``, its config and parts beside it.

``config`` (its section), ``inputs`` (the partition plan of the URL lists),
``duplicates`` (repeated URLs over the input), ``rows`` (the table's columns,
read by the shard stage too), ``job`` (one partition), ``monitor`` (its counts
and metrics), ``checks`` (config checks). Fetching and decoding are the
building blocks of :mod:`curation.download`.
"""
