"""Tests of the embed stage (curation/stages/embed/)."""
