import pytest

from tests.download import images
from tests.download.server import LoopbackServer


@pytest.fixture(scope="session")
def server():
    srv = LoopbackServer().start()
    srv.add("astronaut.jpg", images.jpeg(640, 480))
    srv.add("empty.jpg", b"")
    srv.add("big.bin", b"\xff" * 300_000, "application/octet-stream")
    yield srv
    srv.stop()
