"""Tests of the retrieve stage (curation/stages/retrieve/)."""
