"""Checkpoint loaders (local files only) and the package's own backbone format.

``load_model(kind, path, arch, **kw)`` is the one entry point: it returns a module
mapping a normalised image batch [B, 3, H, W] to features [B, D], in eval mode,
with a ``source`` attribute saying where its weights came from. Every kind but
``torchscript`` yields the package's ``VisionTransformer``.

Files are read with ``torch.load(weights_only=True)`` or safetensors, never
unpickled; TorchScript goes through ``torch.jit.load``. Any mismatch between a
file and the model raises ``CheckpointError`` naming the missing and unexpected
keys and the shape mismatches.
"""

from __future__ import annotations

import argparse
import json
import logging
import pickle
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from curation.atomic import atomic_path
from curation.errors import CheckpointError, ConfigError
from curation.models import convert
from curation.models.vit import VisionTransformer, build_vit

log = logging.getLogger(__name__)

KINDS = ("dinov2", "dino", "ibot", "timm", "open_clip", "torchscript", "curation", "random")
BACKBONE_FORMAT = "curation-vit"
BACKBONE_FORMAT_VERSION = "1"
_LISTED = 8  # names shown per kind of mismatch


def read_checkpoint(path: str | Path) -> Any:
    """The tensors (and plain containers) of a ``.pth``/``.pt`` or ``.safetensors`` file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        # DINO's released checkpoints carry their argparse Namespace: a plain
        # attribute bag, safe to rebuild; every other class stays refused.
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path} holds pickled objects other than tensors and plain containers, which "
            f"are never unpickled here; save its state dict alone. ({str(err).splitlines()[0]})"
        ) from err


def _listed(names: list[str]) -> str:
    more = f" (+{len(names) - _LISTED} more)" if len(names) > _LISTED else ""
    return ", ".join(names[:_LISTED]) + more


def load_state(
    model: nn.Module, state: dict[str, torch.Tensor], optional: Iterable[str] = (), assign: bool = False
) -> None:
    """Strictly loads ``state`` into ``model``; keys in ``optional`` may be missing
    (they keep the model's value). Raises CheckpointError listing every mismatch.
    ``assign``: adopt the checkpoint's tensors (for a model built on the meta device)."""
    expected = model.state_dict()
    optional = set(optional)
    missing = sorted(k for k in expected if k not in state and k not in optional)
    unexpected = sorted(k for k in state if k not in expected)
    shapes = [
        f"{k} {tuple(v.shape)} in the checkpoint, {tuple(expected[k].shape)} in the model"
        for k, v in state.items()
        if k in expected and v.shape != expected[k].shape
    ]
    problems = [
        f"{label}: {_listed(names)}"
        for label, names in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes))
        if names
    ]
    if problems:
        raise CheckpointError(f"checkpoint does not match {type(model).__name__}: " + "; ".join(problems))
    model.load_state_dict(state, strict=False, assign=assign)


def _vit(config: dict[str, Any], state: dict[str, torch.Tensor], optional: Iterable[str] = ()) -> VisionTransformer:
    """Builds the ViT on the meta device (no wasted init of a billion weights), then
    adopts the checkpoint's tensors in float32; absent optional ones become zeros."""
    try:
        with torch.device("meta"):
            model = VisionTransformer(**config)
    except (TypeError, ConfigError) as err:
        raise CheckpointError(f"cannot build the ViT of this checkpoint: {err}") from err
    expected = model.state_dict()
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    for key in optional:
        if key not in state and key in expected:
            state[key] = torch.zeros(expected[key].shape)
    load_state(model, state, assign=True)
    return model.eval()


def load_dinov2(
    path: str | Path, arch: str | None = None, which: str = "teacher", **overrides: Any
) -> VisionTransformer:
    """A DINOv2, DINO or iBOT backbone: released weights, ``{"teacher": ...}`` exports
    or training checkpoints (``teacher.backbone.``/``student.backbone.``/
    ``module.backbone.`` prefixes, BlockChunk ``blocks.N.M.`` keys). The
    architecture comes from the tensor shapes; ``arch`` ("vit_large") fixes the heads."""
    state = convert.dinov2_state(convert.unwrap_checkpoint(read_checkpoint(path), which))
    config = {**convert.dinov2_config(state, arch), **overrides}
    return _vit(config, state, optional=("mask_token",))


def vit_from_timm(model: nn.Module, **overrides: Any) -> VisionTransformer:
    """The package's ViT with the weights of a timm ``VisionTransformer``; its features
    are timm's pre-logits (``forward_head(pre_logits=True)``)."""
    config = {**convert.timm_config(model), **overrides}
    state = {k: v.clone() for k, v in convert.timm_state(model, config).items()}  # no aliasing
    return _vit(config, state, optional=("mask_token",))


def _optional(module: str):
    """timm and open_clip are the optional ``models`` extra: a missing one is named with its install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise CheckpointError(
            f"checkpoints of kind {module} need the '{module}' package: pip install 'curation[models]'"
        ) from None


def load_timm(
    path: str | Path, arch: str, source_kwargs: dict[str, Any] | None = None, **overrides: Any
) -> VisionTransformer:
    """A timm ViT checkpoint: ``timm.create_model(arch, **source_kwargs)`` receives
    the state dict (classifier dropped), then is converted."""
    timm = _optional("timm")

    state = convert.unwrap_checkpoint(read_checkpoint(path), which="model")
    state = {k: v for k, v in state.items() if not k.startswith("head.")}
    try:
        model = timm.create_model(arch, pretrained=False, num_classes=0, **(source_kwargs or {}))
    except RuntimeError as err:
        raise CheckpointError(f"timm cannot build {arch!r}: {err}") from err
    load_state(model, state)
    return vit_from_timm(model, **overrides)


def vit_from_openclip(visual: nn.Module, **overrides: Any) -> VisionTransformer:
    """The package's ViT with the weights of an open_clip ``VisionTransformer`` tower
    (``ln_pre`` -> ``norm_pre``, ``proj`` -> bias-free ``head``)."""
    config = {**convert.openclip_config(visual), **overrides}
    state = {k: v.clone() for k, v in convert.openclip_state(visual).items()}  # no aliasing
    return _vit(config, state, optional=("mask_token",))


def load_openclip(
    path: str | Path, arch: str, source_kwargs: dict[str, Any] | None = None, **overrides: Any
) -> VisionTransformer:
    """An OpenCLIP image tower: ``open_clip.create_model(arch, pretrained=<local path>)``."""
    open_clip = _optional("open_clip")

    if not Path(path).is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        model = open_clip.create_model(arch, pretrained=str(path), **(source_kwargs or {}))
    except RuntimeError as err:  # open_clip loads strictly and raises RuntimeError
        raise CheckpointError(f"open_clip cannot load {path} as {arch!r}: {err}") from err
    return vit_from_openclip(model.visual, **overrides)


class ScriptedEmbedder(nn.Module):
    """A TorchScript model used as an opaque embedding function [B, 3, H, W] -> [B, D].
    Dict outputs give ``x_norm_clstoken``, tuple outputs their first element."""

    def __init__(self, module: torch.jit.ScriptModule):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.module(x)
        if isinstance(out, dict):
            out = out["x_norm_clstoken"]
        elif isinstance(out, (tuple, list)):
            out = out[0]
        if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != x.shape[0]:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise CheckpointError(f"the TorchScript model returned {shape}, not features [B, D]")
        return out


def load_torchscript(path: str | Path) -> ScriptedEmbedder:
    if not Path(path).is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as err:
        raise CheckpointError(f"{path} is not a TorchScript archive: {err}") from err
    return ScriptedEmbedder(module).eval()


def save_backbone(
    model: VisionTransformer,
    path: str | Path,
    config_dict: dict[str, Any] | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> None:
    """Writes ``model`` as one safetensors file whose metadata holds the constructor
    arguments (``config_dict``, default ``model.config``) as JSON. Atomic.

    ``state_dict``: weights to write instead of ``model.state_dict()``, e.g. a full
    state dict gathered from an FSDP2 model (DTensors are gathered here otherwise).
    """
    from safetensors.torch import save_file

    config = dict(model.config if config_dict is None else config_dict)
    config["naive"] = False
    state = model.state_dict() if state_dict is None else state_dict
    tensors = {
        k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().cpu().contiguous() for k, v in state.items()
    }
    metadata = {
        "format": BACKBONE_FORMAT,
        "format_version": BACKBONE_FORMAT_VERSION,
        "config": json.dumps(config, sort_keys=True),
    }
    with atomic_path(Path(path)) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def load_backbone(path: str | Path) -> VisionTransformer:
    """A backbone written by ``save_backbone``, in eval mode."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise CheckpointError(f"backbone {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except SafetensorError as err:
        raise CheckpointError(f"{path} is not a safetensors file: {err}") from err
    if metadata.get("format") != BACKBONE_FORMAT or "config" not in metadata:
        raise CheckpointError(f"{path} is not a {BACKBONE_FORMAT} backbone (format {metadata.get('format')!r})")
    return _vit(json.loads(metadata["config"]), load_file(str(path)))


def _random(arch: str, seed: int = 0, **overrides: Any) -> VisionTransformer:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_vit(arch, **overrides)
    log.warning("embedding model %s has RANDOM weights (seed %d): for demos and tests only", arch, seed)
    return model.eval()


def load_model(kind: str, path: str | None = None, arch: str | None = None, **kw: Any) -> nn.Module:
    """Features model [B, 3, H, W] -> [B, D] of a given kind, in eval mode.

    kind: dinov2 | dino | ibot (``arch`` optional, ``which`` = teacher/student),
    timm | open_clip (``arch`` = the library's model name, ``source_kwargs`` for
    its constructor), torchscript, curation (``save_backbone`` files), random
    (``build_vit(arch)`` with seeded random weights, ``seed`` default 0; untrained).
    Other keywords override ViT constructor arguments (e.g. ``interpolate_offset``).
    """
    if kind not in KINDS:
        raise ConfigError(f"unknown model kind {kind!r}; known: {', '.join(KINDS)}")
    if kind != "random" and not path:
        raise ConfigError(f"model kind {kind!r} needs a local checkpoint path")
    if kind in ("timm", "open_clip", "random") and not arch:
        raise ConfigError(f"model kind {kind!r} needs an arch")
    if kind in ("torchscript", "curation") and (arch or kw):
        raise ConfigError(f"model kind {kind!r} takes its architecture from the file: no arch or options")
    file, name = path or "", arch or ""  # checked above for the kinds that need them
    if kind in ("dinov2", "dino", "ibot"):
        model: nn.Module = load_dinov2(file, arch, **kw)
    elif kind == "timm":
        model = load_timm(file, name, **kw)
    elif kind == "open_clip":
        model = load_openclip(file, name, **kw)
    elif kind == "torchscript":
        model = load_torchscript(file)
    elif kind == "curation":
        model = load_backbone(file)
    else:
        model = _random(name, **kw)
    # nn.Module's __setattr__ is typed for tensors and modules; a plain attribute is fine at run time.
    model.source = f"{kind}:{arch or ''}:{path or 'random seed ' + str(kw.get('seed', 0))}"  # type: ignore[assignment]
    return model.eval()
