import ipaddress

import pytest
from yarl import URL

from curation.download.config import UrlConfig
from curation.download.urls import (
    UrlPolicy,
    address_category,
    check_address,
    check_url,
    checked_url,
    domain_listed,
    parse_domains,
    policy_from_config,
)
from curation.errors import ConfigError

PUBLIC = UrlPolicy()


@pytest.mark.parametrize(
    "url, reason",
    [
        ("https://example.com/a.jpg", None),
        ("HTTP://Example.COM:8080/a.jpg?x=1", None),
        ("http://8.8.8.8/a.jpg", None),
        ("http://[2001:4860:4860::8888]/a.jpg", None),
        ("", "empty"),
        (None, "empty"),
        ("ftp://example.com/a.jpg", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("javascript:alert(1)", "scheme"),
        ("data:image/png;base64,AAAA", "scheme"),
        ("example.com/a.jpg", "scheme"),
        ("http://", "malformed"),
        ("http:///a.jpg", "malformed"),
        ("http://exa mple.com/a.jpg", "malformed"),
        ("http://example.com/a b.jpg", "malformed"),
        ("http://[::1/a.jpg", "malformed"),
        ("http://example.com:99999/a.jpg", "malformed"),
        ("http://-bad-.com/a.jpg", "malformed"),
        ("http://2130706433/a.jpg", "malformed"),
        ("http://0x7f.1/a.jpg", "malformed"),
        ("http://127.1/a.jpg", "malformed"),
        ("http://127.0.0.1/a.jpg", "loopback_address"),
        ("http://[::1]/a.jpg", "loopback_address"),
        ("http://10.0.0.1/a.jpg", "private_address"),
        ("http://192.168.1.1/a.jpg", "private_address"),
        ("http://169.254.169.254/latest/meta-data", "link_local_address"),
        ("http://[fe80::1]/a.jpg", "link_local_address"),
        ("http://224.0.0.1/a.jpg", "multicast_address"),
        ("http://0.0.0.0/a.jpg", "unspecified_address"),
        ("http://240.0.0.1/a.jpg", "reserved_address"),
        ("http://100.64.0.1/a.jpg", "reserved_address"),
        ("http://[::ffff:10.0.0.1]/a.jpg", "private_address"),
        ("http://user:pw@10.0.0.1/a.jpg", "private_address"),
        # Judged as the client's URL library normalises them, the way the client will connect.
        ("http://１２７．０．０．１/a.jpg", "loopback_address"),
        ("http://127。0。0。1/a.jpg", "loopback_address"),
        ("http://①②⑦.⓪.⓪.①/a.jpg", "loopback_address"),
        ("http://１６９．２５４．１６９．２５４/latest/", "link_local_address"),
        ("http://１０．０．０．１/a.jpg", "private_address"),
        ("http://0177.0.0.1/a.jpg", "malformed"),
        ("http://127.0.0.1./a.jpg", "malformed"),
        ("http://%31%32%37.0.0.1/a.jpg", "malformed"),
        ("http://1.2.3.4.5/a.jpg", "malformed"),
        ("http://evil@127.0.0.1/a.jpg", "loopback_address"),
        ("http://8.8.8.8@127.0.0.1/a.jpg", "loopback_address"),
        ("http://[::ffff:7f00:1]/a.jpg", "loopback_address"),
        ("http://[fe80::1%25eth0]/a.jpg", "link_local_address"),
        ("http://ｅｘａｍｐｌｅ．ｃｏｍ/a.jpg", None),
        ("http://bücher.example/a.jpg", None),
        ("http://xn--/a.jpg", "malformed"),
    ],
)
def test_check_url(url, reason):
    assert check_url(url, PUBLIC) == reason


@pytest.mark.parametrize(
    "url, host",
    [
        ("http://８．８．８．８:8080/a.jpg", "8.8.8.8"),
        ("http://ｅｘａｍｐｌｅ．ＣＯＭ/a.jpg", "example.com"),
        ("http://bücher.example/a.jpg", "xn--bcher-kva.example"),
        ("http://user@Example.com./a.jpg", "example.com."),
        ("http://[::FFFF:8.8.8.8]/a.jpg", "::ffff:808:808"),
    ],
)
def test_the_checked_url_is_what_the_client_requests(url, host):
    parsed, reason = checked_url(url, PUBLIC)
    assert reason is None and parsed.raw_host == host
    assert parsed == URL(url)  # the client's own parse of the same string


def test_max_length():
    policy = UrlPolicy(max_length=30)
    assert check_url("http://example.com/" + "a" * 11, policy) is None
    assert check_url("http://example.com/" + "a" * 12, policy) == "too_long"


def test_domain_lists():
    blocked = frozenset(parse_domains(["# comment", "Bad.example ", "*.tracker.net", ".xxx", ""]))
    assert blocked == {"bad.example", "tracker.net", "xxx"}
    assert domain_listed("bad.example", blocked)
    assert domain_listed("img.cdn.bad.example", blocked)
    assert domain_listed("site.xxx", blocked)
    assert not domain_listed("notbad.example", blocked)
    assert not domain_listed("bad.example.org", blocked)
    policy = UrlPolicy(blocked=blocked, allowed=frozenset({"good.org", "bad.example"}))
    assert check_url("https://img.bad.example/a.jpg", policy) == "blocked_domain"
    assert check_url("https://cdn.good.org/a.jpg", policy) is None
    assert check_url("https://other.org/a.jpg", policy) == "not_allowed_domain"


def test_domain_lists_compare_normalised_hosts():
    blocked = frozenset(parse_domains(["ＢＡＤ．example", "bücher.example", "xn--caf-dma.example", "10.0.0.9"]))
    assert blocked == {"bad.example", "xn--bcher-kva.example", "xn--caf-dma.example", "10.0.0.9"}
    policy = UrlPolicy(blocked=blocked, allow_private=True)
    for url in [
        "http://bad.example/",
        "http://ＢＡＤ.example/",
        "http://img.ｂａｄ．example./",
        "http://bad。example/",
        "http://xn--bcher-kva.example/",
        "http://BÜCHER.example/",
        "http://café.example/",
        "http://u@bad.example:81/",
        "http://１０．０．０．９/",
    ]:
        assert check_url(url, policy) == "blocked_domain", url
    assert check_url("http://notbad.example/", policy) is None
    allowed = UrlPolicy(allowed=frozenset(parse_domains(["bücher.example"])))
    assert check_url("http://img.BÜCHER.example/", allowed) is None
    assert check_url("http://bucher.example/", allowed) == "not_allowed_domain"
    with pytest.raises(ValueError, match="line 2"):
        parse_domains(["good.example", "not a domain"])


def test_private_addresses_allowed_explicitly():
    assert check_address("10.1.2.3", UrlPolicy(allow_private=True)) is None
    only_local = UrlPolicy(allowed_networks=(ipaddress.ip_network("127.0.0.1/32"),))
    assert check_address("127.0.0.1", only_local) is None
    assert check_address("127.0.0.2", only_local) == "loopback_address"
    assert check_address("::1", only_local) == "loopback_address"
    assert check_address("169.254.169.254", only_local) == "link_local_address"
    assert check_address("93.184.216.34", only_local) is None


def test_address_category_public():
    assert address_category(ipaddress.ip_address("1.1.1.1")) is None
    assert address_category(ipaddress.ip_address("2606:4700:4700::1111")) is None
    # 6to4 wraps an IPv4 address: judged by the wrapped address.
    assert address_category(ipaddress.ip_address("2002:0a00:0001::1")) == "private"


def test_policy_from_config(tmp_path):
    blocklist = tmp_path / "block.txt"
    blocklist.write_text("bad.example\n")
    policy = policy_from_config(UrlConfig(blocklist=str(blocklist), allowed_addresses=["127.0.0.1", "10.0.0.0/8"]))
    assert policy.blocked == {"bad.example"}
    assert [str(n) for n in policy.allowed_networks] == ["127.0.0.1/32", "10.0.0.0/8"]
    with pytest.raises(ConfigError, match="download.urls.allowed_addresses"):
        policy_from_config(UrlConfig(allowed_addresses=["not-an-ip"]))
    with pytest.raises(ConfigError, match="download.urls.blocklist"):
        policy_from_config(UrlConfig(blocklist=str(tmp_path / "missing.txt")))
    blocklist.write_text("bad.example\nhttp://not a domain/\n")
    with pytest.raises(ConfigError, match="download.urls.blocklist: .* line 2"):
        policy_from_config(UrlConfig(blocklist=str(blocklist)))


@pytest.mark.parametrize(
    "url",
    [
        "http://１２７．０．０．１/",
        "http://2130706433/",
        "http://127.0.0.1./",
        "http://0x7f.1/",
        "http://[::1]/",
        "http://[fe80::1%25eth0]/",
        "http://example.com/",
        "http://１.example/",
        "http://1.2.3.4.5/",
    ],
)
def test_what_is_an_ip_literal_agrees_with_the_client(url):
    # An IP literal is connected to without DNS: the check must see such hosts exactly as aiohttp does.
    from aiohttp.helpers import is_ip_address

    from curation.download.urls import _is_ip_literal

    host = URL(url).raw_host
    assert _is_ip_literal(host) == is_ip_address(host)
