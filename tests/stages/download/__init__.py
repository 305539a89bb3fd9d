"""Tests of the download stage (curation/stages/download/)."""
