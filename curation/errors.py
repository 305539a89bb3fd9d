"""The three error tiers.

- sample: not an exception; a row with a status and a reason (see ``tables``).
- partition: :class:`PartitionError`, retried by the runner, then reported.
- config: :class:`ConfigError`, raised before any work starts.
"""


class CurationError(Exception):
    """Base of the errors this package raises on purpose."""


class ConfigError(CurationError):
    """The configuration or the command line is wrong; no work was done."""


class PartitionError(CurationError):
    """A partition could not be processed; the run stays resumable."""


class RunError(CurationError):
    """A run cannot proceed (locked, missing inputs, failed partitions)."""


class ManifestError(CurationError):
    """A manifest does not validate, or its shards do not match it."""


class CheckpointError(CurationError):
    """A checkpoint does not match the model it is loaded into."""
