"""URL filtering before any request, and address checks after DNS.

``check_url`` is applied to every input URL and again to every redirect
target; ``check_address`` is applied to every address a host name resolves
to (the fetcher connects only to addresses that passed). A refusal is a
short reason string, the suffix of the status ``filtered_url:<reason>``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from curation.errors import ConfigError

SCHEMES = ("http", "https")
# Characters never valid unescaped in a URL (RFC 3986): whitespace, controls, quotes, angle brackets.
_BAD_CHARS = re.compile(r"[\x00-\x20\x7f<>\"\\^`{|}]")
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
# Hosts a resolver would read as a number (2130706433, 0x7f.1, 127.1): refused,
# since they hide an address from anything that only reads host names.
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+))*\.?$")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class UrlPolicy:
    """What may be fetched. Domain sets hold lower-case names without a leading dot."""

    max_length: int = 2048
    blocked: frozenset[str] = frozenset()
    allowed: frozenset[str] | None = None
    allow_private: bool = False
    allowed_networks: tuple[Network, ...] = field(default_factory=tuple)


def policy_from_config(cfg, key: str = "download.urls") -> UrlPolicy:
    """Build a policy from a ``UrlConfig``; ConfigError naming the bad key."""
    try:
        networks = tuple(ipaddress.ip_network(a, strict=False) for a in cfg.allowed_addresses)
    except ValueError as err:
        raise ConfigError(f"{key}.allowed_addresses: {err}") from None
    return UrlPolicy(
        max_length=cfg.max_length,
        blocked=read_domains(cfg.blocklist, f"{key}.blocklist") if cfg.blocklist else frozenset(),
        allowed=read_domains(cfg.allowlist, f"{key}.allowlist") if cfg.allowlist else None,
        allow_private=cfg.allow_private_addresses,
        allowed_networks=networks,
    )


def read_domains(path: str, key: str) -> frozenset[str]:
    """Domains of a list file: one a line, '#' comments, '*.' or '.' prefixes ignored."""
    import fsspec

    try:
        with fsspec.open(path, "rt", compression="infer") as f:
            text = f.read()
    except (OSError, ValueError) as err:
        raise ConfigError(f"{key}: cannot read '{path}': {err}") from None
    return frozenset(parse_domains(text.splitlines()))


def parse_domains(lines) -> list[str]:
    out = []
    for line in lines:
        name = line.split("#", 1)[0].strip().lower()
        name = name.removeprefix("*.").lstrip(".").rstrip(".")
        if name:
            out.append(name)
    return out


def domain_listed(host: str, domains: frozenset[str]) -> bool:
    """True when ``host`` or one of its parent domains is in ``domains``."""
    labels = host.rstrip(".").split(".")
    return any(".".join(labels[i:]) in domains for i in range(len(labels)))


def split_host(url: str) -> tuple[str, str] | None:
    """``(scheme, host)`` of a well-formed URL, or None. Host is lower-case, IPv6 unbracketed."""
    try:
        parts = urlsplit(url)
        parts.port  # raises ValueError on a bad port
    except ValueError:
        return None
    host = parts.hostname
    if not host:
        return None
    return parts.scheme.lower(), host


def check_url(url: str | None, policy: UrlPolicy) -> str | None:
    """Reason the URL is refused before any request, or None when it may be fetched."""
    if not url:
        return "empty"
    if len(url) > policy.max_length:
        return "too_long"
    if _BAD_CHARS.search(url):
        return "malformed"
    scheme, _, _ = url.partition(":")
    if scheme.lower() not in SCHEMES:
        return "scheme"
    parsed = split_host(url)
    if parsed is None:
        return "malformed"
    host = parsed[1]
    address = parse_address(host)
    if address is None:
        reason = check_hostname(host)
        if reason:
            return reason
    else:
        reason = check_address(address, policy)
        if reason:
            return reason
    if domain_listed(host, policy.blocked):
        return "blocked_domain"
    if policy.allowed is not None and not domain_listed(host, policy.allowed):
        return "not_allowed_domain"
    return None


def check_hostname(host: str) -> str | None:
    if _NUMERIC_HOST.match(host):
        return "malformed"
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return "malformed"
    labels = ascii_host.rstrip(".").split(".")
    if not all(_LABEL.match(label) for label in labels):
        return "malformed"
    return None


def parse_address(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def address_category(address: Address) -> str | None:
    """Why an address is not public, or None when it is a global unicast address."""
    mapped = getattr(address, "ipv4_mapped", None) or getattr(address, "sixtofour", None)
    if mapped is not None:
        return address_category(mapped)
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link_local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
    )
    for name, hit in checks:
        if hit:
            return name
    # Shared address space (100.64/10) and other special ranges are not global.
    return None if address.is_global else "reserved"


def check_address(address: Address | str, policy: UrlPolicy) -> str | None:
    """Reason a connection to ``address`` is refused (``<category>_address``), or None."""
    if isinstance(address, str):
        parsed = parse_address(address)
        if parsed is None:
            return "malformed"
        address = parsed
    category = address_category(address)
    if category is None or policy.allow_private:
        return None
    if any(address in net for net in policy.allowed_networks if net.version == address.version):
        return None
    return f"{category}_address"
