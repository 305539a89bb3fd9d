"""Settings of the download building blocks: URL policy, HTTP, decoding and resizing, NSFW, faces.

They are sections of the download stage's config (``download:`` in a pipeline,
:mod:`curation.stages.download.config`), also used on their own by the client
of small URL lists. Every size is in bytes or pixels, every duration in seconds.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from curation.section import Section

DEFAULT_USER_AGENT = "curation/0.1 (image dataset curation; honours X-Robots-Tag noai)"
ImageFormat = Literal["jpeg", "png", "gif", "webp", "bmp", "tiff"]
IMAGE_FORMATS: tuple[ImageFormat, ...] = ("jpeg", "png", "gif", "webp", "bmp", "tiff")


class UrlConfig(Section):
    max_length: int = Field(2048, ge=16, description="longer URLs are refused (filtered_url:too_long)")
    blocklist: str | None = Field(
        None, description="file of blocked domains, one a line; 'example.com' also blocks its subdomains"
    )
    allowlist: str | None = Field(
        None, description="file of allowed domains (null: every domain not blocked is allowed)"
    )
    allow_private_addresses: bool = Field(
        False, description="allow private, loopback, link-local and other non-public addresses (unsafe)"
    )
    allowed_addresses: list[str] = Field(
        [], description="IP addresses or CIDR networks allowed even when non-public, e.g. ['127.0.0.1']"
    )


class HttpConfig(Section):
    concurrency: int = Field(64, ge=1, description="requests in flight per worker")
    per_host: int = Field(16, ge=1, description="connections per host per worker")
    connect_timeout: float = Field(5.0, gt=0, description="seconds to connect")
    read_timeout: float = Field(10.0, gt=0, description="seconds without receiving a byte")
    total_timeout: float = Field(30.0, gt=0, description="seconds for one attempt, headers and body")
    max_bytes: int = Field(20 * 2**20, ge=1, description="larger responses are aborted (failed_download:too_large)")
    max_redirects: int = Field(5, ge=0, description="redirect hops followed, each re-checked")
    retries: int = Field(2, ge=0, description="retries after a connection error, 429 or 5xx")
    backoff: float = Field(0.5, ge=0, description="first retry delay; doubles each retry, with jitter")
    backoff_max: float = Field(8.0, ge=0, description="cap of the retry delay")
    retry_after_max: float = Field(30.0, ge=0, description="cap of a server's Retry-After")
    user_agent: str = Field(DEFAULT_USER_AGENT, min_length=1, description="User-Agent header of every request")
    respect_noai: bool = Field(
        True, description="refuse images whose X-Robots-Tag says noai or noimageai (filtered_optout:<directive>)"
    )


class ImageConfig(Section):
    formats: list[ImageFormat] = Field(
        list(IMAGE_FORMATS), min_length=1, description="accepted formats, sniffed from the bytes"
    )
    # Pillow refuses more than 2 x its MAX_IMAGE_PIXELS (89,478,485) on its own, before this check.
    max_pixels: int = Field(
        100_000_000,
        ge=1,
        le=178_956_970,
        description="larger images (width x height from the header) are refused undecoded",
    )
    resize: Literal["max_side", "shorter_side", "none"] = Field(
        "shorter_side", description="which side 'size' bounds; aspect kept, never upscaled"
    )
    size: int = Field(512, ge=1, description="target length in pixels of the side chosen by 'resize'")
    jpeg_quality: int = Field(90, ge=1, le=100, description="quality of re-encoded JPEGs")
    keep_original: bool = Field(
        False, description="store the original bytes of a JPEG already within the target (no re-encode)"
    )


class NsfwConfig(Section):
    enabled: bool = Field(
        False, description="score images and drop those at or above 'threshold' (needs the 'nsfw' extra)"
    )
    backend: str = Field("nudenet", description="registered NSFW backend")
    threshold: float = Field(0.5, ge=0, le=1, description="score at or above which an image is dropped")
    model_path: str | None = Field(None, description="model file of the backend (null: the backend's own)")


class FacesConfig(Section):
    enabled: bool = Field(False, description="detect faces and blur them before storing")
    backend: str = Field("haar", description="registered face detector")
    min_size: int = Field(24, ge=1, description="smallest face side in pixels of the stored image")
    min_neighbors: int = Field(5, ge=1, description="Haar detector: neighbours a detection needs")
    scale_factor: float = Field(1.1, gt=1.0, description="Haar detector: image pyramid step")
    blur_sigma: float = Field(0.25, gt=0, description="Gaussian sigma as a fraction of the face side")
