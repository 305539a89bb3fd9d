"""Tests of the cluster stage (curation/stages/cluster/)."""
