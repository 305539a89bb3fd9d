"""HTTP fetching with aiohttp: timeouts, byte limit, checked redirects, retries.

No request ever reaches an address the URL policy refuses: each hop's URL is
parsed and checked by ``checked_url``, and the parsed URL it returns is the
one requested, so the host that was checked is the host connected to (an IP
literal directly, a name through :class:`CheckedResolver`, which hands the
connector only the addresses that pass ``check_address``: the connection goes
to a checked IP, and a DNS answer cannot smuggle in a private address).
Redirects are followed by hand, one hop at a time, each hop re-checked.

Nothing the remote sent is copied into a result: error texts name exception
types, sizes and hop numbers, never bodies, headers, reason phrases, redirect
targets or exception messages (which quote them).
"""

from __future__ import annotations

import asyncio
import random
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urljoin

import aiohttp
from aiohttp.abc import AbstractResolver
from yarl import URL

from curation.download.headers import optout_directive, retry_delay, retryable_status
from curation.download.urls import UrlPolicy, check_address, checked_url

REDIRECTS = (301, 302, 303, 307, 308)


@dataclass
class FetchResult:
    """Outcome of one URL. ``status`` is ``success`` or ``<family>:<reason>``."""

    status: str
    data: bytes | None = None
    error: str | None = None
    http_status: int | None = None
    retries: int = 0
    size: int = 0  # bytes of the body

    @property
    def ok(self) -> bool:
        return self.status == "success"


class RefusedAddress(OSError):
    """Every address of a host is refused by the policy."""

    def __init__(self, host: str, reason: str):
        super().__init__(f"resolves only to refused addresses ({reason})")
        self.reason = reason


class CheckedResolver(AbstractResolver):
    """DNS resolution that drops the addresses the URL policy refuses."""

    def __init__(self, policy: UrlPolicy):
        self.policy = policy
        self._inner = aiohttp.ThreadedResolver()

    async def resolve(self, host, port=0, family=0):
        results = await self._inner.resolve(host, port, family)
        reasons = [check_address(r["host"], self.policy) for r in results]
        allowed = [r for r, reason in zip(results, reasons, strict=False) if reason is None]
        if not allowed:
            raise RefusedAddress(host, next((r for r in reasons if r), "no_address"))
        return allowed

    async def close(self) -> None:
        await self._inner.close()


class _Retry(Exception):
    def __init__(self, reason: str, http_status: int | None = None, retry_after: str | None = None):
        self.reason, self.http_status, self.retry_after = reason, http_status, retry_after


class HostLimiter:
    """At most ``limit`` requests in flight per host; entries freed when idle."""

    def __init__(self, limit: int):
        self.limit = limit
        self._slots: dict[str, tuple[asyncio.Semaphore, int]] = {}

    async def acquire(self, host: str) -> None:
        sem, users = self._slots.get(host, (None, 0))
        sem = sem or asyncio.Semaphore(self.limit)
        self._slots[host] = (sem, users + 1)
        await sem.acquire()

    def release(self, host: str) -> None:
        sem, users = self._slots[host]
        sem.release()
        if users == 1:
            del self._slots[host]
        else:
            self._slots[host] = (sem, users - 1)


class Fetcher:
    """Fetches URLs on the running event loop. Create and use inside one loop."""

    def __init__(
        self,
        http,
        policy: UrlPolicy,
        seed: int = 0,
        trace_configs=None,
        gate: Callable[[], Awaitable[None]] | None = None,
    ):
        """``gate``, when given, is awaited inside a request slot before each request (back-pressure)."""
        self.cfg = http
        self._gate = gate
        self.policy = policy
        self.rng = random.Random(seed)  # jitter only: never affects outputs
        self._global = asyncio.Semaphore(http.concurrency)
        self._hosts = HostLimiter(http.per_host)
        self._timeout = aiohttp.ClientTimeout(
            total=http.total_timeout, sock_connect=http.connect_timeout, sock_read=http.read_timeout
        )
        connector = aiohttp.TCPConnector(
            limit=http.concurrency, limit_per_host=0, resolver=CheckedResolver(policy), ttl_dns_cache=300
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            headers={"User-Agent": http.user_agent},
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,  # never through an environment proxy, which would bypass the address checks
            trace_configs=trace_configs,
        )

    async def close(self) -> None:
        await self.session.close()

    async def fetch(self, url: str) -> FetchResult:
        """Fetch one URL, following up to ``max_redirects`` re-checked redirects."""
        current, seen, retries = url, {url}, 0
        for hop in range(self.cfg.max_redirects + 2):
            target, refused = checked_url(current, self.policy)
            if refused:
                return FetchResult(
                    f"filtered_url:{refused}", error=f"redirect hop {hop}" if hop else None, retries=retries
                )
            assert target is not None  # checked_url gives a URL or a reason
            outcome, retries = await self._with_retries(target, retries)
            if isinstance(outcome, FetchResult):
                if hop and outcome.error is None and not outcome.ok:
                    outcome.error = f"redirect hop {hop}"
                return outcome
            if hop >= self.cfg.max_redirects:
                break
            if outcome in seen:
                return FetchResult("failed_download:redirect_loop", error=f"redirect hop {hop + 1}", retries=retries)
            seen.add(outcome)
            current = outcome
        return FetchResult("failed_download:too_many_redirects", retries=retries)

    async def _with_retries(self, url: URL, retries: int) -> tuple[FetchResult | str, int]:
        """One hop with retries: the final result, or the redirect target."""
        while True:
            try:
                outcome = await self._attempt(url)
                if isinstance(outcome, FetchResult):
                    outcome.retries = retries
                return outcome, retries
            except _Retry as retry:
                if retries >= self.cfg.retries:
                    return FetchResult(
                        f"failed_download:{retry.reason}", http_status=retry.http_status, retries=retries
                    ), retries
                delay = retry_delay(
                    retries,
                    retry.retry_after,
                    self.cfg.backoff,
                    self.cfg.backoff_max,
                    self.cfg.retry_after_max,
                    self.rng,
                )
                retries += 1
                await asyncio.sleep(delay)

    async def _attempt(self, url: URL) -> FetchResult | str:
        """One request: its result or redirect target; raises _Retry when worth retrying."""
        host = url.raw_host
        assert host is not None  # checked_url refuses a URL without a host
        await self._hosts.acquire(host)
        try:
            async with self._global:
                if self._gate is not None:
                    await self._gate()
                return await self._request(url)
        except aiohttp.ClientConnectorDNSError as err:
            if isinstance(err.__cause__, RefusedAddress):
                return FetchResult(f"filtered_url:{err.__cause__.reason}", error=str(err.__cause__))
            return FetchResult("failed_download:dns_error", error=describe_error(err))
        except aiohttp.ConnectionTimeoutError as err:
            raise _Retry("connect_timeout") from err
        except aiohttp.SocketTimeoutError:
            return FetchResult("failed_download:read_timeout")
        except asyncio.TimeoutError:
            return FetchResult("failed_download:timeout")
        except aiohttp.ClientSSLError as err:
            return FetchResult("failed_download:ssl_error", error=describe_error(err))
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as err:
            raise _Retry("connection_error") from err
        except (aiohttp.ClientError, ValueError, UnicodeError) as err:
            # Malformed responses (bad headers, bad chunking) and URLs aiohttp refuses.
            return FetchResult("failed_download:bad_response", error=describe_error(err))
        finally:
            self._hosts.release(host)

    async def _request(self, url: URL) -> FetchResult | str:
        async with self.session.get(url, allow_redirects=False, timeout=self._timeout) as resp:
            status = resp.status
            if status in REDIRECTS:
                location = resp.headers.get("Location")
                if not location:
                    return FetchResult("failed_download:redirect_without_location", http_status=status)
                return urljoin(str(url), location)
            if retryable_status(status):
                raise _Retry(f"http_{status}", status, resp.headers.get("Retry-After"))
            if not 200 <= status < 300:
                return FetchResult(f"failed_download:http_{status}", http_status=status)
            if self.cfg.respect_noai:
                directive = optout_directive(resp.headers.getall("X-Robots-Tag", []), self.cfg.user_agent)
                if directive:
                    return FetchResult(f"filtered_optout:{directive}", http_status=status)
            data = await self._read_body(resp)
            if data is None:
                return FetchResult(
                    "failed_download:too_large", http_status=status, error=f"more than {self.cfg.max_bytes} bytes"
                )
            if not data:
                return FetchResult("failed_download:empty", http_status=status)
            return FetchResult("success", data=data, http_status=status, size=len(data))

    async def _read_body(self, resp: aiohttp.ClientResponse) -> bytes | None:
        """The body, or None as soon as it exceeds ``max_bytes`` (declared or streamed)."""
        limit = self.cfg.max_bytes
        encoded = resp.headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity")
        if resp.content_length is not None and resp.content_length > limit:
            return None
        if resp.content_length is not None and not encoded:
            # The parser never reads past a declared length: one read is safe, and fastest.
            return await resp.read()
        # Unknown length, or compressed (the declared length is not what decompression yields).
        chunks, size = [], 0
        while chunk := await resp.content.readany():
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
        return b"".join(chunks)


def describe_error(err: BaseException) -> str:
    """The exception's type, its cause's type and a local error code: never a message.

    aiohttp's messages quote what the server sent (a malformed status line or
    header, a redirect target's host in ``Cannot connect to host ...``).
    """
    names = [type(err).__name__]
    cause = getattr(err, "os_error", None) or err.__cause__
    if cause is None or cause is err:
        return names[0]
    names.append(type(cause).__name__)
    if isinstance(cause, ssl.SSLError) and cause.reason:
        names.append(str(cause.reason))  # OpenSSL's code, e.g. CERTIFICATE_VERIFY_FAILED
    elif isinstance(cause, OSError) and cause.errno is not None:
        names.append(f"errno {cause.errno}")
    return ": ".join(names)
