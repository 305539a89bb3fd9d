from curation.download.client import fetch_images
from curation.download.config import UrlConfig


def test_fetch_images_in_list_order_skipping_failures(server, tmp_path):
    listing = tmp_path / "urls.txt"
    listing.write_text(
        "\n".join(
            [
                server.url("file/astronaut.jpg"),
                server.url("status/404"),
                "ftp://x/y.jpg",
                server.url("file/astronaut.jpg?again=1"),
            ]
        )
    )
    got = list(fetch_images(str(listing), urls=UrlConfig(allowed_addresses=["127.0.0.1"])))
    body = server.files["astronaut.jpg"][0]
    assert got == [(server.url("file/astronaut.jpg"), body), (server.url("file/astronaut.jpg?again=1"), body)]
    # The default policy refuses the loopback address: nothing is fetched.
    assert list(fetch_images(str(listing))) == []
