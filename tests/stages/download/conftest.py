from tests.download.conftest import server  # noqa: F401  (the loopback server of the download tests)
