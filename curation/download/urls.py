"""URL filtering before any request, and address checks after DNS.

``checked_url`` is applied to every input URL and again to every redirect
target. It parses the URL once, with the HTTP client's own URL library
(yarl), and judges the host that parse yields, which is the host the client
connects to: Unicode spellings (``１２７．０．０．１``, ``127。0。0。1``, full-width
letters) are mapped to ASCII first, and the fetcher requests the very URL
object that was checked. ``check_address`` is applied to every address a
host name resolves to (the fetcher connects only to addresses that passed).
A refusal is a short reason string, the suffix of ``filtered_url:<reason>``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from yarl import URL

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
    """What may be fetched. Domain sets hold names as :func:`normal_host` spells them."""

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
    try:
        return frozenset(parse_domains(text.splitlines()))
    except ValueError as err:
        raise ConfigError(f"{key}: '{path}': {err}") from None


def parse_domains(lines) -> list[str]:
    """Normalised domains of list lines (as :func:`normal_host` spells hosts); ValueError names a bad line."""
    out = []
    for number, line in enumerate(lines, 1):
        name = line.split("#", 1)[0].strip()
        name = name.removeprefix("*.").lstrip(".")
        if not name:
            continue
        host = normal_host(name)
        if host is None:
            raise ValueError(f"line {number} is not a domain: {name[:100]!r}")
        out.append(host)
    return out


def normal_host(name: str) -> str | None:
    """A domain as the HTTP client spells it (IDNA/UTS-46, lower case), no trailing dot; None if invalid."""
    try:
        host = URL.build(scheme="http", host=name).raw_host
    except (ValueError, UnicodeError, TypeError):
        return None
    host = (host or "").rstrip(".")
    if _is_ip_literal(host):
        address = parse_address(host)
        return None if address is None else str(address)
    return None if not host or check_hostname(host) else host


def domain_listed(host: str, domains: frozenset[str]) -> bool:
    """True when ``host`` or one of its parent domains is in ``domains``."""
    labels = host.rstrip(".").split(".")
    return any(".".join(labels[i:]) in domains for i in range(len(labels)))


def parse_url(url: str) -> URL | None:
    """The URL as the HTTP client will request it, or None when the URL library refuses it."""
    try:
        parsed = URL(url)
        parsed.port  # noqa: B018 (a bad port raises here)
    except (ValueError, UnicodeError, TypeError):
        return None
    return parsed


def check_url(url: str | None, policy: UrlPolicy) -> str | None:
    """Reason the URL is refused before any request, or None when it may be fetched."""
    return checked_url(url, policy)[1]


def checked_url(url: str | None, policy: UrlPolicy) -> tuple[URL | None, str | None]:
    """``(the URL to request, None)``, or ``(None, reason)`` when it is refused.

    The policy is applied to the host of the parsed URL: after the URL
    library's normalisation (IDNA/UTS-46 mapping, which turns full-width
    digits and ideographic full stops into ASCII), that is the host the
    client connects to, so the returned URL is what must be requested.
    """
    if not url:
        return None, "empty"
    if len(url) > policy.max_length:
        return None, "too_long"
    if _BAD_CHARS.search(url):
        return None, "malformed"
    if url.partition(":")[0].lower() not in SCHEMES:
        return None, "scheme"
    parsed = parse_url(url)
    if parsed is None:
        return None, "malformed"
    if parsed.scheme not in SCHEMES:
        return None, "scheme"
    reason = check_host(parsed.raw_host, policy)
    return (None, reason) if reason else (parsed, None)


def check_host(raw_host: str | None, policy: UrlPolicy) -> str | None:
    """Reason a normalised host (``URL.raw_host``) is refused, or None.

    An IP literal is connected to without DNS, so its address is checked
    here; a name is checked again after DNS, by ``check_address`` on every
    address it resolves to.
    """
    if not raw_host:
        return "malformed"
    if _is_ip_literal(raw_host):
        address = parse_address(raw_host)
        if address is None:  # 2130706433, 127.1, 0177.0.0.1, 127.0.0.1.: the client refuses them too
            return "malformed"
        reason = check_address(address, policy)
        if reason:
            return reason
    else:
        reason = check_hostname(raw_host)
        if reason:
            return reason
    name = raw_host.rstrip(".")
    if domain_listed(name, policy.blocked):
        return "blocked_domain"
    if policy.allowed is not None and not domain_listed(name, policy.allowed):
        return "not_allowed_domain"
    return None


def _is_ip_literal(host: str) -> bool:
    # The client's own rule (aiohttp ``is_ip_address``): such a host is never resolved.
    return ":" in host or host.replace(".", "").isdigit()


def check_hostname(host: str) -> str | None:
    """``malformed`` unless ``host`` is an ASCII (IDNA-encoded) name that no resolver reads as a number."""
    if _NUMERIC_HOST.match(host):
        return "malformed"
    labels = host.rstrip(".").split(".")
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
