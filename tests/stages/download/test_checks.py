import sys

import pytest

from curation.errors import ConfigError
from curation.stages.download.checks import check_config
from curation.stages.download.config import DownloadConfig


def _config(tmp_path, **sections):
    (tmp_path / "urls.csv").write_text("link,caption\nhttp://example.com/a.jpg,a\n")
    data = {"input": {"paths": [str(tmp_path / "urls.csv")], "url_column": "link"}, **sections}
    return DownloadConfig.model_validate(data)


def test_valid_config_passes(tmp_path):
    check_config(_config(tmp_path, faces={"enabled": True}))


@pytest.mark.parametrize(
    "sections, key",
    [
        ({"input": {"paths": ["/nonexistent/urls.csv"]}}, "download.input.paths"),
        ({"urls": {"blocklist": "/nonexistent/blocked.txt"}}, "download.urls.blocklist"),
        ({"nsfw": {"enabled": True, "backend": "nope"}}, "download.nsfw.backend"),
        ({"faces": {"enabled": True, "backend": "nope"}}, "download.faces.backend"),
    ],
)
def test_config_errors_name_the_key(tmp_path, sections, key):
    with pytest.raises(ConfigError, match=key):
        check_config(_config(tmp_path, **sections))


def test_url_column_must_exist(tmp_path):
    config = _config(tmp_path)
    config.input.url_column = "url"
    with pytest.raises(ConfigError, match="download.input.url_column: 'url' is not a column"):
        check_config(config)


def test_nsfw_without_nudenet_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "nudenet", None)  # as if the optional extra were not installed
    with pytest.raises(ConfigError, match="download.nsfw.enabled: the nudenet backend needs the optional 'nsfw'"):
        check_config(_config(tmp_path, nsfw={"enabled": True}))


def test_window_smaller_than_concurrency_is_refused(tmp_path):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="worker.window"):
        DownloadConfig.model_validate({"input": {"paths": ["x"]}, "worker": {"window": 4}})
