"""The bytes of the tensor storages a DeepSpeed engine holds on one rank, by category (``bench/zero_memory.py``).

  params          the module's parameters as stored on the rank (``param.ds_tensor`` partitions under ZeRO-3;
                  bf16 under ``bf16``)
  master_weights  fp32 parameter copies held by the optimizer (ZeRO's flat fp32 partitions)
  optimizer_state AdamW moments (``optimizer.state``)
  gradients       ``param.grad`` plus every optimizer-held tensor whose attribute path names a gradient
  other_buffers   remaining optimizer-held tensors (communication buckets such as ZeRO-3's ``ipg_buckets``)
Each storage counts once (the first category to claim it, in that order).
"""

from __future__ import annotations

from typing import Any, Iterator

CATEGORIES = ("params", "master_weights", "optimizer_state", "gradients", "other_buffers")


def _tensors(obj: Any, path: str, depth: int, seen: set[int]) -> Iterator[tuple[str, Any]]:
    """(attribute path, tensor) of every tensor reachable from a DeepSpeed/torch optimizer object."""
    import torch

    if isinstance(obj, torch.Tensor):
        yield path, obj
        return
    if depth == 0 or id(obj) in seen or isinstance(obj, (torch.nn.Module, str, bytes, int, float, bool)) or obj is None:
        return
    seen.add(id(obj))
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _tensors(value, f"{path}[{key if not isinstance(key, torch.Tensor) else 'param'}]", depth - 1,
                                seen)
    elif isinstance(obj, (list, tuple, set)):
        for i, value in enumerate(obj):
            yield from _tensors(value, f"{path}[{i}]", depth - 1, seen)
    elif type(obj).__module__.startswith(("deepspeed", "torch.optim")) and hasattr(obj, "__dict__"):
        for name, value in vars(obj).items():
            yield from _tensors(value, f"{path}.{name}", depth - 1, seen)


def category(path: str) -> str:
    """Category of an optimizer-held tensor from its attribute path."""
    lower = path.lower()
    if "grad" in lower:
        return "gradients"
    if "fp32_partitioned_groups" in lower or "single_partition_of_fp32" in lower or "fp32_groups_flat" in lower:
        return "master_weights"
    return "other_buffers"


def count_engine_bytes(engine: Any) -> tuple[dict[str, int], list[tuple[str, str, int]]]:
    """Bytes per category of the distinct tensor storages held by a DeepSpeed engine on this rank, and the
    (category, where, bytes) of every optimizer-held storage found by walking its attributes."""
    claimed: dict[int, str] = {}
    totals = dict.fromkeys(CATEGORIES, 0)
    found: list[tuple[str, str, int]] = []

    def claim(tensor: Any, kind: str, where: str = "") -> None:
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key == 0 or storage.nbytes() == 0 or key in claimed:
            return
        claimed[key] = kind
        totals[kind] += storage.nbytes()
        if where:
            found.append((kind, where, storage.nbytes()))

    wrapper = engine.optimizer
    base = getattr(wrapper, "optimizer", wrapper)
    for p in engine.module.parameters():
        claim(p, "params")  # under ZeRO-3: empty, or the full tensor of a persistent (unpartitioned) parameter
        if hasattr(p, "ds_tensor"):
            claim(p.ds_tensor, "params")
    for state in base.state.values():
        for value in state.values():
            if hasattr(value, "untyped_storage"):
                claim(value, "optimizer_state")
    for group in base.param_groups:
        for p in group["params"]:
            claim(p, "master_weights")
    for p in engine.module.parameters():
        if p.grad is not None:
            claim(p.grad, "gradients")
    for group in base.param_groups:
        for p in group["params"]:
            if p.grad is not None:
                claim(p.grad, "gradients")
    for path, tensor in _tensors(wrapper, "optimizer", depth=6, seen=set()):
        claim(tensor, category(path), path)
    return totals, found
