"""What a sharding engine needs to know about the model, beside ``v2x_model.py`` (torchtitan's split of
``model.py`` and ``parallelize.py``). Pure PyTorch: the runtime (``trainer/runtime/``) applies it."""

from __future__ import annotations

from collections.abc import Iterator

import spconv.pytorch as spconv
from torch import nn

from models.config import ModelConfig
from models.sparse_encoder import SparseEncoder
from models.v2x_model import V2XModel


def parameter_count(config: ModelConfig) -> int:
    """Parameters of a ``V2XModel`` of ``config`` (the runtime scales ZeRO's bucket sizes to it)."""
    return sum(p.numel() for p in V2XModel(config).parameters())


def externally_used_parameters(model: nn.Module) -> Iterator[tuple[nn.Module, nn.Parameter]]:
    """(owner, parameter) pairs that ZeRO-3 must gather with ``owner`` rather than with their own layer.

    ZeRO-3 re-gathers a module's partitioned weights when the gradient reaches the module's output tensors.
    spconv layers return ``SparseConvTensor`` objects, which those hooks cannot see, so their weights would
    be released before their backward runs. Owned by the sparse encoder (whose output is a dense BEV
    tensor), they are gathered for the encoder's forward and backward as a whole.
    """
    for encoder in model.modules():
        if isinstance(encoder, SparseEncoder):
            for layer in encoder.modules():
                if isinstance(layer, spconv.conv.SparseConvolution):
                    for param in layer.parameters(recurse=False):
                        yield encoder, param
