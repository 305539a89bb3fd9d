"""The base of every config section: a leaf module, so that stages, sources and
download settings can define their config models without importing the
pipeline assembly (:mod:`curation.config`), which sits above the stage registry.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.json_schema import JsonDict


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, never ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# Marks a field that changes how a run executes but not what it produces
# (where it runs, batch sizes, worker counts, retries, progress): such fields
# are left out of the content hash and may differ when a run is resumed.
# Usage: ``Field(..., json_schema_extra=RUNTIME)``.
RUNTIME: JsonDict = {"runtime": True}
