"""models/parallelize.py: what ZeRO-3 must gather with the sparse encoder, and the parameter count."""

import dataclasses

import spconv.pytorch as spconv

from models.config import model_config
from models.parallelize import externally_used_parameters, parameter_count
from models.sparse_encoder import SparseEncoder
from models.v2x_model import V2XModel


def test_spconv_weights_are_owned_by_their_encoder_and_nothing_else_is_listed():
    model = V2XModel(model_config("tiny"))
    pairs = list(externally_used_parameters(model))
    spconv_params = [p for m in model.modules() if isinstance(m, spconv.conv.SparseConvolution)
                     for p in m.parameters(recurse=False)]
    assert len(pairs) == len(spconv_params) > 0
    assert all(owner is model.encoder and isinstance(owner, SparseEncoder) for owner, _ in pairs)
    assert {id(p) for _, p in pairs} == {id(p) for p in spconv_params}
    pillars = V2XModel(dataclasses.replace(model_config("tiny"), encoder="pillars"))
    assert list(externally_used_parameters(pillars)) == []


def test_parameter_count_is_the_models():
    config = model_config("small")
    assert parameter_count(config) == sum(p.numel() for p in V2XModel(config).parameters()) == 127_468
