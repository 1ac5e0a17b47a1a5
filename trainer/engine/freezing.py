"""Freezing modules by name prefix (the manual pipeline's stages) and loading initial weights."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from trainer.checkpointing.export import read_exported
from trainer.checkpointing.safe_load import CheckpointError


def apply_freeze(model: nn.Module, prefixes: list[str]) -> list[str]:
    """Set ``requires_grad=False`` on parameters under any of ``prefixes``; returns the frozen names.

    Every parameter not matched is made trainable, so a stage's freeze list is complete on its own.
    A prefix that matches no parameter is an error (a typo would silently train everything).
    """
    names = [n for n, _ in model.named_parameters()]
    for prefix in prefixes:
        if not any(n == prefix or n.startswith(prefix + ".") for n in names):
            top = sorted({n.split(".")[0] for n in names})
            raise ValueError(f"freeze prefix {prefix!r} matches no parameter; top-level modules are {top}")
    frozen = []
    for name, param in model.named_parameters():
        hit = any(name == p or name.startswith(p + ".") for p in prefixes)
        param.requires_grad_(not hit)
        if hit:
            frozen.append(name)
    return frozen


def load_initial_weights(model: nn.Module, path: Path, *, skip: list[str]) -> dict[str, list[str]]:
    """Load exported weights (``launch/export.py`` / a stage's ``final.safetensors``, or a legacy ``.pt``
    export or state dict, read with ``weights_only=True``) into ``model``.

    Tensors under the ``skip`` prefixes (e.g. the stage-1 reconstruction decoder) are discarded.
    Returns ``{"loaded", "discarded", "missing"}`` parameter names for the log. A shape mismatch is an
    error naming the tensor. Every failure is a ``CheckpointError`` naming ``path`` (training exits 2).
    """
    if not Path(path).is_file():
        raise CheckpointError(f"init_from weights not found: {path}")
    state = read_exported(Path(path))["model"]
    own = model.state_dict()
    loaded, discarded = {}, []
    for name, tensor in state.items():
        if any(name == p or name.startswith(p + ".") for p in skip) or name not in own:
            discarded.append(name)
            continue
        if own[name].shape != tensor.shape:
            raise CheckpointError(f"{path}: tensor {name} has shape {tuple(tensor.shape)}, model expects "
                             f"{tuple(own[name].shape)} (different model config?)")
        loaded[name] = tensor
    model.load_state_dict(loaded, strict=False)
    missing = [n for n in own if n not in loaded]
    return {"loaded": sorted(loaded), "discarded": sorted(discarded), "missing": sorted(missing)}
