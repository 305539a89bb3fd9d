"""Maps stages onto a backend: Ray (default) or in-process (tests, debugging)."""

from __future__ import annotations

from curation.runner.driver import RunReport, run, stage_complete


def run_pipeline(config, stages: list[str] | None = None, force: bool = False, backend: str = "ray") -> RunReport:
    if backend == "local":
        from curation.runner.local import LocalBackend

        return run(config, LocalBackend(config.runner.max_partition_retries), stages, force)
    from curation.runner.ray_backend import RayBackend

    # Ray starts (or is joined) only once every check has passed.
    ray_backend = RayBackend(config.runner, config.ray, job_name=f"curate {config.name} {config.run_dir}")
    return run(config, ray_backend, stages, force)


__all__ = ["RunReport", "run", "run_pipeline", "stage_complete"]
