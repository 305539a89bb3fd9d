"""Config checks of the download stage that need more than types, run before any work."""

from __future__ import annotations

from curation.errors import ConfigError

KEY = "download"


def check_config(cfg) -> None:
    from curation.download.lists import file_format, list_files
    from curation.download.urls import policy_from_config
    from curation.stages.download.inputs import columns_of

    files = list_files(cfg.input.paths, f"{KEY}.input.paths")
    first = files[0]
    names = columns_of(first, file_format(first, cfg.input.format), cfg.input.url_column)
    if names and cfg.input.url_column not in names:
        raise ConfigError(
            f"{KEY}.input.url_column: '{cfg.input.url_column}' is not a column of {first} (columns: {names[:20]})"
        )
    missing = [c for c in cfg.input.columns or [] if names and c not in names]
    if missing:
        raise ConfigError(f"{KEY}.input.columns: {missing} are not columns of {first}")
    policy_from_config(cfg.urls, f"{KEY}.urls")
    if cfg.nsfw.enabled:
        from curation.download.nsfw import check_backend

        check_backend(cfg.nsfw, f"{KEY}.nsfw")
    if cfg.faces.enabled:
        from curation.download.faces import make_detector

        make_detector(cfg.faces, f"{KEY}.faces")
