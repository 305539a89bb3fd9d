"""Host spellings that the URL library normalises: the checked host is the host connected to.

Refused loopback addresses get a listener (127.0.0.2, ::1) that counts the
connections it receives: every spelling of them, direct or behind a
redirect, must leave it at zero. Addresses no test can listen on (private,
link-local, the cloud metadata service) are proven untouched by the client's
own trace: no DNS lookup, no connection, no request beyond the redirecting one.
"""

from urllib.parse import quote

import aiohttp
import pyarrow.parquet as pq
import pytest

from curation.download.urls import UrlPolicy
from tests.download.server import Listener
from tests.download.test_fetch import LOCAL, fetch_all


def _spellings_of_127_0_0_2(port):
    return [
        f"http://１２７．０．０．２:{port}/x",  # full-width digits and full stops
        f"http://127。0。0。2:{port}/x",  # ideographic full stops
        f"http://127｡0｡0｡2:{port}/x",  # half-width ideographic full stops
        f"http://①②⑦.⓪.⓪.②:{port}/x",  # circled digits (NFKC)
        f"http://１２７.0.0.2:{port}/x",
        f"http://2130706434:{port}/x",
        f"http://0x7f.0.0.2:{port}/x",
        f"http://0177.0.0.2:{port}/x",
        f"http://127.2:{port}/x",
        f"http://127.0.0.2.:{port}/x",
        f"http://%31%32%37.0.0.2:{port}/x",
        f"http://[::ffff:127.0.0.2]:{port}/x",
        f"http://[::ffff:7f00:2]:{port}/x",
        f"http://127.0.0.1@127.0.0.2:{port}/x",  # the allowed address as userinfo
        f"http://127.0.0.1:{port}@１２７．０．０．２:{port}/x",
        f"http://127.0.0.2:{port}/x",
    ]


def _spellings_of_ipv6_loopback(port):
    return [
        f"http://[::1]:{port}/x",
        f"http://[0:0:0:0:0:0:0:1]:{port}/x",
        f"http://[0000::0001]:{port}/x",
        f"http://[::1%25lo]:{port}/x",
        f"http://evil@[::1]:{port}/x",
    ]


class Listeners:
    """Never-answering listeners on 127.0.0.2 and, where the host has IPv6, ::1; the spellings of both."""

    def __init__(self):
        self._all = [Listener("127.0.0.2")]
        self.urls = _spellings_of_127_0_0_2(self._all[0].port)
        try:
            self._all.append(Listener("::1"))
            self.urls += _spellings_of_ipv6_loopback(self._all[1].port)
        except OSError:  # no IPv6 loopback here
            pass

    def connections(self) -> int:
        return sum(listener.connections() for listener in self._all)

    def close(self) -> None:
        for listener in self._all:
            listener.close()


@pytest.fixture
def listeners():
    made = Listeners()
    yield made
    made.close()


def _assert_refused(statuses):
    assert all(s.startswith("filtered_url:") for s in statuses), statuses


def test_spellings_of_refused_loopback_addresses_never_connect(listeners):
    urls = listeners.urls
    results, requests, lookups = fetch_all(urls)
    _assert_refused([r.status for r in results])
    assert (requests, lookups) == ([], [])
    assert listeners.connections() == 0


def test_the_listener_sees_a_spelling_the_policy_allows(listeners):
    # The control for the tests around it: allowed, a spelling does reach 127.0.0.2 (and waits for an answer).
    everything = UrlPolicy(allow_private=True)
    (result,), _, _ = fetch_all([listeners.urls[0]], policy=everything)
    assert result.status == "failed_download:read_timeout"
    assert listeners.connections() == 1


def test_spellings_behind_a_redirect_never_connect(server, listeners):
    targets = listeners.urls
    results, requests, _ = fetch_all([server.url(f"redirect/1/x?to={quote(t)}") for t in targets])
    _assert_refused([r.status for r in results])
    assert all(r.error == "redirect hop 1" for r in results)
    assert len(requests) == len(targets) and all(r.startswith(server.base) for r in requests)
    assert listeners.connections() == 0


@pytest.mark.parametrize(
    "url, reason",
    [
        ("http://１６９．２５４．１６９．２５４/latest/meta-data/", "link_local_address"),
        ("http://169。254。169。254/latest/meta-data/", "link_local_address"),
        ("http://metadata@１６９．２５４．１６９．２５４/", "link_local_address"),
        ("http://[::ffff:169.254.169.254]/latest/", "link_local_address"),
        ("http://[::ffff:a9fe:a9fe]/latest/", "link_local_address"),
        ("http://[fe80::1%25eth0]/", "link_local_address"),
        ("http://2852039166/latest/", "malformed"),
        ("http://0xa9.0xfe.0xa9.0xfe/latest/", "malformed"),
        ("http://１０．０．０．１/x", "private_address"),
        ("http://１９２．１６８．１．１/x", "private_address"),
        ("http://172。16。0。1/x", "private_address"),
        ("http://[::ffff:10.0.0.1]/x", "private_address"),
        ("http://[fd00::1]/x", "private_address"),
        ("http://０．０．０．０/x", "unspecified_address"),
        ("http://１００．６４．０．１/x", "reserved_address"),
    ],
)
def test_private_and_metadata_spellings_are_never_contacted(server, url, reason):
    connections = []
    trace = aiohttp.TraceConfig()

    async def on_connect(session, ctx, params):
        connections.append(1)

    trace.on_connection_create_start.append(on_connect)
    (direct, redirected), requests, lookups = fetch_all([url, server.url(f"redirect/1/x?to={quote(url)}")], trace=trace)
    assert (direct.status, redirected.status) == (f"filtered_url:{reason}",) * 2
    assert lookups == [] and len(requests) == 1 and len(connections) <= 1  # the redirecting request only


BLOCKED = UrlPolicy(blocked=frozenset({"localhost"}), allowed_networks=LOCAL.allowed_networks)


def _spellings_of_localhost(port, tag):
    return [
        f"http://ＬＯＣＡＬＨＯＳＴ:{port}/file/astronaut.jpg?tag={tag}",
        f"http://ｌｏｃａｌｈｏｓｔ:{port}/file/astronaut.jpg?tag={tag}",
        f"http://LocalHost:{port}/file/astronaut.jpg?tag={tag}",
        f"http://localhost.:{port}/file/astronaut.jpg?tag={tag}",
        f"http://localhost。:{port}/file/astronaut.jpg?tag={tag}",
        f"http://127.0.0.1@ｌｏｃａｌｈｏｓｔ:{port}/file/astronaut.jpg?tag={tag}",
    ]


def test_blocked_domain_spellings_are_never_requested(server):
    port = server.server_address[1]
    urls = _spellings_of_localhost(port, "blocked-direct")
    redirects = [server.url(f"redirect/1/x?to={quote(u)}") for u in _spellings_of_localhost(port, "blocked-hop")]
    results, _, lookups = fetch_all(urls + redirects, policy=BLOCKED)
    assert [r.status for r in results] == ["filtered_url:blocked_domain"] * len(results)
    assert lookups == []
    assert not [p for p in server.paths if "tag=blocked-" in p]


def test_allowlist_compares_the_normalised_host(server):
    port = server.server_address[1]
    only_example = UrlPolicy(allowed=frozenset({"example.org"}), allowed_networks=LOCAL.allowed_networks)
    (refused,), _, lookups = fetch_all(
        [f"http://ｌｏｃａｌｈｏｓｔ:{port}/file/astronaut.jpg?tag=allow-1"], policy=only_example
    )
    assert refused.status == "filtered_url:not_allowed_domain" and lookups == []
    assert not [p for p in server.paths if "tag=allow-" in p]


def test_an_allowed_address_spelled_in_unicode_is_the_address_connected_to(server):
    port = server.server_address[1]
    (result,), requests, lookups = fetch_all([f"http://１２７．０．０．１:{port}/file/astronaut.jpg"])
    assert result.status == "success" and result.data == server.files["astronaut.jpg"][0]
    assert requests == [f"http://127.0.0.1:{port}/file/astronaut.jpg"] and lookups == []


def test_the_stage_never_connects_to_a_spelling_either(tmp_path, server, listeners):
    from curation.runner.local import run_stages

    direct = listeners.urls
    urls = direct + [server.url(f"redirect/1/x?to={quote(t)}") for t in direct]
    (tmp_path / "urls.txt").write_text("\n".join(urls) + "\n", encoding="utf-8")
    config = {
        "name": "spellings",
        "stages": ["download"],
        "download": {
            "input": {"paths": [str(tmp_path / "urls.txt")]},
            "urls": {"allowed_addresses": ["127.0.0.1"]},
            "http": {"connect_timeout": 1, "read_timeout": 1, "total_timeout": 1.5, "retries": 0},
        },
    }
    run_stages(tmp_path / "run", config, ["download"])
    rows = pq.read_table(tmp_path / "run/stages/download/fetch/part-000000.parquet").to_pylist()
    assert [r["url"] for r in rows] == urls
    _assert_refused([r["status"] for r in rows])
    assert listeners.connections() == 0
