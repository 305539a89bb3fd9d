"""Tests of the shard stage (curation/stages/shard/)."""
