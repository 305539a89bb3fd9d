"""Run the trainer on a Ray cluster: one Ray Train worker per GPU.

Ray Train starts the workers, sets RANK / WORLD_SIZE / LOCAL_RANK and creates
the process group; each worker then runs ``train_main`` (which joins that
group). Submit it as a Ray Job from a checkout::

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python -m curation.train.ray_job workers=16 gpus=true -- \\
        manifest=/shared/run/shards/manifest.json output_dir=/shared/train model=vit_large

Arguments before ``--`` configure the launch (``workers``, ``gpus``,
``cpus_per_worker``); those after it are the trainer's ``key=value`` overrides,
validated here before any worker starts.
"""

from __future__ import annotations

import sys

from curation.errors import ConfigError

LAUNCH_KEYS = {"workers": int, "gpus": bool, "cpus_per_worker": float}


def _worker_loop(config: dict) -> None:
    from curation.train.cli import train_main

    train_main(config["overrides"])


def launch(overrides: list[str], workers: int, gpus: bool, cpus_per_worker: float = 8.0):
    """Validate the trainer config, then run it on ``workers`` Ray Train workers."""
    from curation.train.config import load_train_config

    try:
        from ray.train import ScalingConfig
        from ray.train.torch import TorchTrainer
    except ImportError as err:
        raise ConfigError(f"Ray Train is not installed ({err}): pip install 'curation[raytrain]'") from None

    load_train_config(overrides)  # fail on the driver, before any worker starts
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"overrides": overrides},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpus, resources_per_worker={"CPU": cpus_per_worker}),
    )
    return trainer.fit()


def parse_launch(args: list[str]) -> dict:
    """``["workers=8", "gpus=true"]`` -> {"workers": 8, "gpus": True}."""
    from curation.config import parse_overrides

    out = {}
    for key, value in parse_overrides(args).items():
        if key not in LAUNCH_KEYS:
            raise ConfigError(f"ray_job: unknown launch key '{key}'; known: {', '.join(LAUNCH_KEYS)}")
        if not isinstance(value, LAUNCH_KEYS[key]) and not (LAUNCH_KEYS[key] is float and isinstance(value, int)):
            raise ConfigError(f"ray_job: {key} must be {LAUNCH_KEYS[key].__name__}, got {value!r}")
        out[key] = value
    if "workers" not in out:
        raise ConfigError("ray_job: workers=N is required")
    return out


def main(argv: list[str]) -> int:
    split = argv.index("--") if "--" in argv else len(argv)
    options = parse_launch(argv[:split])
    launch(argv[split + 1 :], options["workers"], options.get("gpus", False), options.get("cpus_per_worker", 8.0))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
