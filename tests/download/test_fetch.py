import asyncio
import ipaddress
import socket

import aiohttp
import pytest

from curation.download.config import HttpConfig
from curation.download.fetch import Fetcher
from curation.download.urls import UrlPolicy

LOCAL = UrlPolicy(allowed_networks=(ipaddress.ip_network("127.0.0.1/32"),))
HTTP = HttpConfig(
    connect_timeout=1.0,
    read_timeout=1.0,
    total_timeout=1.5,
    max_bytes=200_000,
    max_redirects=3,
    retries=2,
    backoff=0.02,
    backoff_max=0.1,
    retry_after_max=0.2,
)


def fetch_all(urls, http=HTTP, policy=LOCAL, trace=None):
    """Results of fetching ``urls`` concurrently, and every request URL and DNS lookup made."""
    requests, lookups, extra = [], [], trace
    trace = aiohttp.TraceConfig()

    async def on_request(session, ctx, params):
        requests.append(str(params.url))

    async def on_dns(session, ctx, params):
        lookups.append(params.host)

    trace.on_request_start.append(on_request)
    trace.on_dns_resolvehost_start.append(on_dns)

    async def run():
        fetcher = Fetcher(http, policy, trace_configs=[trace] + ([extra] if extra else []))
        try:
            return await asyncio.gather(*(fetcher.fetch(u) for u in urls))
        finally:
            await fetcher.close()

    return asyncio.run(run()), requests, lookups


def fetch(url, **kw):
    return fetch_all([url], **kw)[0][0]


def test_success(server):
    result = fetch(server.url("file/astronaut.jpg"))
    assert result.status == "success" and result.http_status == 200
    assert result.data == server.files["astronaut.jpg"][0] and result.size == len(result.data)


@pytest.mark.parametrize("code", [403, 404, 410])
def test_client_errors_are_not_retried(server, code):
    result = fetch(server.url(f"status/{code}"))
    assert (result.status, result.http_status, result.retries) == (f"failed_download:http_{code}", code, 0)


def test_server_error_retried_then_reported(server):
    result = fetch(server.url("status/500"))
    assert (result.status, result.http_status, result.retries) == ("failed_download:http_500", 500, 2)


def test_429_with_retry_after_then_success(server):
    result = fetch(server.url("flaky/429/astronaut.jpg/1?retry_after=30"))
    assert (result.status, result.retries) == ("success", 1)  # waited retry_after_max, not 30 s


def test_503_twice_then_success(server):
    result = fetch(server.url("flaky/503/astronaut.jpg/2"))
    assert (result.status, result.retries) == ("success", 2)


def test_timeouts(server):
    (silent, drip), _, _ = fetch_all([server.url("sleep/3"), server.url("drip/4")])
    assert silent.status == "failed_download:read_timeout"
    assert drip.status == "failed_download:timeout"  # bytes keep coming; the total limit ends it


def test_redirects(server):
    (ok, loop, chain), _, _ = fetch_all(
        [
            server.url("redirect/2/astronaut.jpg"),
            server.url("loop/a"),
            server.url("redirect/4/astronaut.jpg"),
        ]
    )
    assert ok.status == "success" and ok.data == server.files["astronaut.jpg"][0]
    assert loop.status == "failed_download:redirect_loop"
    assert chain.status == "failed_download:too_many_redirects"


@pytest.mark.parametrize(
    "target, reason",
    [
        ("http://10.0.0.1/secret", "private_address"),
        ("http://169.254.169.254/latest/meta-data/", "link_local_address"),
        ("http://[::1]/x", "loopback_address"),
        ("gopher://127.0.0.1/x", "scheme"),
    ],
)
def test_redirect_to_refused_address_is_never_requested(server, target, reason):
    (result,), requests, lookups = fetch_all([server.url(f"redirect/1/x?to={target}")])
    assert result.status == f"filtered_url:{reason}"
    assert "redirect hop 1" in result.error
    assert len(requests) == 1 and requests[0].startswith(server.url("redirect/1/x?to="))
    assert lookups == []


def test_host_names_are_checked_after_dns(server):
    port = server.server_address[1]
    addresses = {info[4][0] for info in socket.getaddrinfo("localhost", port, type=socket.SOCK_STREAM)}
    if "127.0.0.1" not in addresses:
        pytest.skip("localhost does not resolve to 127.0.0.1 here")
    url = f"http://localhost:{port}/file/astronaut.jpg"
    assert fetch(url).status == "success"  # 127.0.0.1 is allowed; ::1, if listed, is dropped
    (refused,), requests, lookups = fetch_all([url], policy=UrlPolicy())
    assert refused.status == "filtered_url:loopback_address"
    assert lookups == ["localhost"]


def test_x_robots_tag(server):
    url = server.url("file/astronaut.jpg?robots=noindex,+noai")
    assert fetch(url).status == "filtered_optout:noai"
    assert fetch(url, http=HTTP.model_copy(update={"respect_noai": False})).status == "success"


def test_byte_limit(server):
    declared, streamed = fetch_all([server.url("file/big.bin"), server.url("file/big.bin?length=0")])[0]
    assert declared.status == "failed_download:too_large"
    assert streamed.status == "failed_download:too_large"


def test_compressed_body_is_limited_after_decompression(server):
    small, bomb = fetch_all([server.url("gzip/1000"), server.url("gzip/5000000")])[0]
    assert small.status == "success" and small.data == b"\x00" * 1000
    assert bomb.status == "failed_download:too_large"


def test_empty_body(server):
    assert fetch(server.url("file/empty.jpg")).status == "failed_download:empty"


def test_connection_refused_is_retried():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        result = fetch(f"http://127.0.0.1:{port}/x.jpg")
    assert (result.status, result.retries) == ("failed_download:connection_error", 2)


def test_per_host_limit(server):
    results, _, _ = fetch_all([server.url("sleep/0.3")] * 6, http=HTTP.model_copy(update={"per_host": 2}))
    assert [r.status for r in results] == ["success"] * 6
    assert server.max_in_flight["0.3"] == 2


def test_tls_errors_are_described_by_their_code(server):
    result = fetch(server.base.replace("http://", "https://") + "/file/astronaut.jpg")
    assert result.status == "failed_download:ssl_error"
    kind, code = result.error.rsplit(": ", 1)  # OpenSSL's code (WRONG_VERSION_NUMBER), not its message
    assert kind == "ClientConnectorSSLError: SSLError" and code.replace("_", "").isalpha() and code.isupper()
