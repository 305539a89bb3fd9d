"""SSCD copy-detection descriptor (Pizzi et al. 2022): model, loading, preprocessing.

Architecture (the layout of the official ``*.torchvision.pt`` weight files):
a torchvision ResNet trunk whose average pooling is replaced by GeM pooling
(p = 3) and whose ``fc`` is the linear projection to ``dims`` (512), followed
by L2 normalisation. State-dict keys are ``backbone.<torchvision key>``.

Loading, from local files only:

- ``*.torchscript.pt`` (the official standalone files, e.g.
  ``sscd_disc_mixup.torchscript.pt``) through ``torch.jit.load``;
- state dicts (ours, or the official ``.torchvision.pt``) through
  ``torch.load(weights_only=True)`` and a strict key/shape check that raises
  ``CheckpointError`` naming every mismatch; nothing else is unpickled.

``backbone: resnet18`` is a small trunk for CPU demos and tests. No official
SSCD weights exist for it: its descriptors are only as good as the weights
it is given.
"""

from __future__ import annotations

import functools
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from curation.errors import CheckpointError
from curation.models.inference import Decoded, Inference
from curation.preprocess import PreprocessSpec, draft_size, model_input, open_rgb_sized

log = logging.getLogger(__name__)

BACKBONES = {"resnet50": 2048, "resnet18": 512}
RANDOM_INIT = "random-init"


class GeM(nn.Module):
    """Generalised-mean pooling over H, W: ``(B, C, H, W) -> (B, C)``."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = p
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=self.eps).pow(self.p).mean(dim=(2, 3)).pow(1.0 / self.p)


class SSCD(nn.Module):
    """Images ``(B, 3, H, W)`` (ImageNet-normalised) -> descriptors ``(B, dims)``, unit norm."""

    def __init__(self, backbone: str = "resnet50", dims: int = 512, pool_param: float = 3.0):
        super().__init__()
        import torchvision

        if backbone not in BACKBONES:
            raise CheckpointError(f"unknown SSCD backbone '{backbone}' ({', '.join(BACKBONES)})")
        trunk = getattr(torchvision.models, backbone)(weights=None, num_classes=dims)
        trunk.avgpool = GeM(pool_param)  # the trunk then flattens and applies fc (the projection)
        self.backbone = trunk

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.backbone(x), dim=1)


def is_torchscript(path: Path) -> bool:
    """A TorchScript archive holds compiled ``code/``; a ``torch.save`` zip does not."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


def load(
    path: str | Path | None,
    backbone: str = "resnet50",
    dims: int = 512,
    pool_param: float = 3.0,
    seed: int = 0,
    image_size: int = 32,
) -> tuple[nn.Module, str]:
    """The descriptor model in eval mode and where its weights came from.

    ``path=None`` builds a random-init model (seeded): tests only (the
    stage refuses it unless ``descriptor.allow_random_weights``); its
    descriptors do not detect copies.
    """
    from curation.models import checkpoints

    if path is None:
        torch.manual_seed(seed)
        log.warning("SSCD descriptor has random weights: forced for a test; they merge distinct images")
        return SSCD(backbone, dims, pool_param).eval(), RANDOM_INIT
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"SSCD checkpoint {path} does not exist")
    if is_torchscript(path):
        model: nn.Module = checkpoints.load_torchscript(path)
        _check_output(model, dims, path, image_size)
        return model, f"torchscript:{path}"
    model = SSCD(backbone, dims, pool_param)
    checkpoints.load_state(model, _unwrap(checkpoints.read_checkpoint(path)))
    return model.eval(), f"state_dict:{path}"


def _unwrap(obj) -> dict[str, torch.Tensor]:
    """The state dict of a file: plain, or under ``state_dict``/``model``; ``backbone.`` added if absent."""
    for name in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(name), dict):
            obj = obj[name]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"not an SSCD state dict (found {type(obj).__name__} with non-tensor entries)")
    obj = {k.removeprefix("module."): v for k, v in obj.items()}
    if not any(k.startswith("backbone.") for k in obj):
        obj = {f"backbone.{k}": v for k, v in obj.items()}
    return obj


def _check_output(model: nn.Module, dims: int, path: Path, image_size: int = 32) -> None:
    out = output_dim(model, path, image_size)
    if out != dims:
        raise CheckpointError(f"{path}: the TorchScript model gives {out}-d descriptors, the config says dims={dims}")


def output_dim(model: nn.Module, path: str | Path, image_size: int = 32) -> int:
    """The descriptor dimension of ``model``, from one zero image ``(1, 3, size, size)``.

    Raises ``CheckpointError`` saying why when the model does not map an
    image batch to ``(1, d)`` descriptors (e.g. a ViT exported for another
    input size, or a model returning patch tokens).
    """
    try:
        with torch.inference_mode():
            out = model(torch.zeros(1, 3, image_size, image_size))
    except Exception as err:  # TorchScript raises its own error types
        raise CheckpointError(
            f"{path}: the model does not run on a {image_size}x{image_size} image "
            f"(set dedup.descriptor.image_size to the size it was exported for): "
            f"{str(err).strip().splitlines()[-1][:300]}"
        ) from None
    if isinstance(out, (tuple, list)) or not isinstance(out, torch.Tensor) or out.ndim != 2 or len(out) != 1:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise CheckpointError(f"{path}: the model must return descriptors (batch, dims); it returned {shape}")
    return int(out.shape[1])


def probe_descriptor_dim(path: str | Path, image_size: int = 32) -> int:
    """Output dimension of the TorchScript descriptor at ``path`` (before any work).

    Loads the file the way the dedup stage does (``torch.jit.load``, CPU)
    and runs one zero image of ``image_size``. State dicts have the
    dimension in their ``fc`` weight; their shapes are checked on load.
    """
    from curation.models import checkpoints

    path = Path(path)
    if not is_torchscript(path):
        state = _unwrap(checkpoints.read_checkpoint(path))
        if "backbone.fc.weight" not in state:
            raise CheckpointError(f"{path}: no backbone.fc.weight: not an SSCD state dict")
        return int(state["backbone.fc.weight"].shape[0])
    return output_dim(checkpoints.load_torchscript(path), path, image_size)


def save(model: SSCD, path: str | Path) -> None:
    """Write the model's state dict (tensors only), atomically."""
    from curation.atomic import atomic_path

    with atomic_path(Path(path)) as tmp:
        torch.save(model.state_dict(), tmp)


@dataclass(frozen=True)
class FeatureSpec:
    """What one decode of an image gives the dedup features: the SSCD input
    (``model``: ``square`` 320, SSCD's recipe, or ``short_edge`` 288; bilinear),
    the hash thumbnail and the variant source."""

    model: PreprocessSpec = PreprocessSpec(320, mode="square", interpolation="bilinear")
    thumb_size: int = 32
    # True: thumbnails exactly as imagehash makes them (Lanczos on the decoded
    # image; pHash parity); False: area-averaged from the model input (fast).
    exact_thumb: bool = False
    # > 0: also a (source_size, source_size) grayscale image, cut into the hash's geometric variants;
    # trim: of the image without its uniform borders (curation.algorithms.variants.trimmed).
    source_size: int = 0
    trim: bool = False


@dataclass
class DecodedImage:
    thumb: np.ndarray | None  # (thumb_size, thumb_size) uint8 grayscale when exact_thumb, else None
    pixels: np.ndarray  # (H, W, 3) uint8, the SSCD input before normalisation
    width: int  # original size
    height: int


def decode(data: bytes | None, spec: FeatureSpec) -> DecodedImage:
    """One decode for both the hash thumbnail and the SSCD input (:func:`curation.preprocess.model_input`).

    With ``spec.model.draft``, JPEGs decode at the smallest DCT scale that
    keeps both sides >= the model's input size. Raises
    ``curation.preprocess.DecodeError`` with a short reason.
    """
    from curation.algorithms.pca_hash import gray_resize

    rgb, (width, height) = open_rgb_sized(data, draft_size(spec.model))
    thumb = gray_resize(rgb, spec.thumb_size) if spec.exact_thumb else None
    return DecodedImage(thumb, model_input(rgb, spec.model), width, height)


def describe(blobs, embed: DescriptorModel | None, spec: FeatureSpec, pool=None):
    """Decode and describe a batch of encoded images; see :func:`describe_decoded`.

    ``pool``: an executor to decode on (None: ``embed``'s decode threads, or
    here when there is no model).
    """
    return describe_with_sources(blobs, embed, spec, pool)[1:]


def describe_with_sources(blobs, embed: DescriptorModel | None, spec: FeatureSpec, pool=None):
    """:func:`describe`, preceded by the variant sources ``(m, S, S) uint8``
    (``S = spec.source_size``; ``(m, 0, 0)`` when it is 0)."""
    from curation.models.inference import submit

    pool = pool or (embed.pool if embed is not None else None)
    return describe_decoded(submit(blobs, decoder(spec), pool).result(), embed, spec)


def decoder(spec: FeatureSpec):
    """The decode function of :class:`~curation.models.inference.Inference` for SSCD inputs."""
    return functools.partial(decode, spec=spec)


def describe_decoded(decoded: Decoded, embed: DescriptorModel | None, spec: FeatureSpec):
    """Descriptors of a decoded batch (values from :func:`decode`).

    Returns ``(sources (m, S, S) uint8, thumbs (m, s, s) uint8, desc (m, dims)
    float32, width (m,), height (m,), reasons, errors)``: the arrays cover the
    ``m`` images that succeeded, in input order; ``reasons[i]`` is None for
    those and a status (``failed_decode:<why>``, ``failed_descriptor:nan|zero``)
    otherwise. ``embed`` None: hash thumbnails only, ``desc`` is ``(m, 0)``.
    """
    from curation.algorithms.knn import bad_rows
    from curation.algorithms.pca_hash import thumbnails

    values = decoded.values
    reasons = [f"failed_decode:{r}" if r else None for r in decoded.reasons]
    errors = list(decoded.errors)
    ok = np.flatnonzero(decoded.ok).tolist()
    if embed is None:
        desc = np.zeros((len(ok), 0), np.float32)
    else:
        desc = embed([values[i].pixels for i in ok]) if ok else np.zeros((0, embed.dims), np.float32)
        for j, why in enumerate(bad_rows(desc)):
            if why:
                reasons[ok[j]], errors[ok[j]] = f"failed_descriptor:{why}", f"the descriptor is {why}"
    good = [i for i in ok if reasons[i] is None]
    if spec.exact_thumb and good:
        thumbs = np.stack([values[i].thumb for i in good])
    else:
        thumbs = thumbnails([values[i].pixels for i in good], spec.thumb_size)
    s = spec.source_size
    if s:
        from curation.algorithms.variants import trimmed

        frames = [trimmed(values[i].pixels) if spec.trim else values[i].pixels for i in good]
        sources = thumbnails(frames, s)
    else:
        sources = np.zeros((len(good), 0, 0), np.uint8)
    size = np.array([(values[i].width, values[i].height) for i in good], np.int64).reshape(-1, 2)
    keep = [j for j, i in enumerate(ok) if reasons[i] is None]
    return sources, thumbs, desc[keep], size[:, 0], size[:, 1], reasons, errors


def describe_all(images, embed: DescriptorModel, spec: FeatureSpec, batch: int = 256):
    """Descriptors of a stream of ``(key, bytes)``: ``(keys, desc (m, dims), failures)``.

    Only the images that decode and give a valid descriptor are returned. The
    next chunk decodes while the model describes the current one.
    """
    import itertools

    keys: list[str] = []
    parts = [np.zeros((0, embed.dims), np.float32)]
    failed = 0
    stream = iter(images)
    decode_one = decoder(spec)

    def start():
        chunk = list(itertools.islice(stream, batch))
        return chunk, embed.submit([data for _, data in chunk], decode_one) if chunk else None

    chunk, job = start()
    while chunk:
        following = start()
        _, _, desc, _, _, reasons, _ = describe_decoded(job.result(), embed, spec)
        keys += [key for (key, _), why in zip(chunk, reasons, strict=True) if why is None]
        parts.append(desc)
        failed += len(chunk) - len(desc)
        chunk, job = following
    return keys, np.concatenate(parts), failed


class DescriptorModel(Inference):
    """Batched SSCD descriptors on one device (fp16 autocast on CUDA), decoded on ``threads`` threads."""

    def __init__(self, model: nn.Module, device: str = "auto", batch_size: int = 64, dims: int = 512, threads: int = 1):
        super().__init__(model, device, "fp16", batch_size, threads, dim=dims, config_key="dedup.descriptor.device")

    @property
    def dims(self) -> int:
        assert self.dim is not None  # given at construction
        return self.dim

    def __call__(self, pixels: list[np.ndarray]) -> np.ndarray:
        """``B`` arrays ``(H, W, 3) uint8`` -> raw descriptors ``(B, dims) float32`` (:meth:`forward`)."""
        return self.forward(pixels)
