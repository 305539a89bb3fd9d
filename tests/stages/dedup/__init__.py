"""Tests of the dedup stage (curation/stages/dedup/)."""
