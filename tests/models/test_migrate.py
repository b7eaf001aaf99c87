"""`build.migrate`: configs of earlier versions in today's terms, before any builder sees them."""

from __future__ import annotations

from pathlib import Path

import pytest

from polymodal.builders import migrate
from polymodal.config import from_dict
from polymodal.errors import ConfigError

ENCODERS = {"image": {"type": "cnn"}}


def config(model: dict) -> object:
    return from_dict({"model": model, "tasks": {"c": {"type": "classification"}}, "data": {}, "train": {}}, Path("."))


def test_a_model_type_becomes_its_fusion_with_the_fusion_keys_moved_under_it():
    old = config({"type": "joint_transformer", "width": 32, "depth": 1, "num_heads": 2, "pooling": "positional",
                  "embed_dim": 16, "encoders": ENCODERS, "tokenizer": {"vocab_size": 50}})
    new = migrate(old)
    assert new.model == {"width": 32, "embed_dim": 16, "encoders": ENCODERS, "tokenizer": {"vocab_size": 50},
                         "fusion": {"type": "early", "depth": 1, "num_heads": 2, "pooling": "positional"}}
    assert old.model["type"] == "joint_transformer"  # the given config is left as it was
    dual = migrate(config({"type": "dual_encoder", "width": 32, "combine": "mean", "encoders": ENCODERS}))
    assert dual.model == {"embed_dim": 128, "width": 32, "encoders": ENCODERS,
                          "fusion": {"type": "late", "combine": "mean"}}


@pytest.mark.parametrize("old, new", [("gated", "gated_cross_attention"), ("gmu", "gated_sum"), ("early", "early")])
def test_renamed_fusion_types_get_their_new_names(old, new):
    migrated = migrate(config({"width": 32, "encoders": ENCODERS, "fusion": {"type": old, "depth": 1}}))
    assert migrated.model["fusion"] == {"type": new, "depth": 1}


def test_a_config_in_todays_terms_is_unchanged():
    model = {"width": 32, "encoders": ENCODERS, "fusion": {"type": "cross", "depth": 1},
             "decoder": {"type": "transformer"}}
    assert migrate(config(model)).model == model


@pytest.mark.parametrize("model, message", [
    ({"type": "siamese", "width": 32, "encoders": ENCODERS}, "model.type: expected one of dual_encoder, "
                                                              "joint_transformer, got 'siamese'"),
    ({"type": "dual_encoder", "width": 32, "encoders": ENCODERS, "depht": 1},
     "model: unknown key 'depht' for model.type 'dual_encoder'; allowed keys:"),
])
def test_an_old_config_that_cannot_migrate_names_the_key(model, message):
    with pytest.raises(ConfigError, match=message):
        migrate(config(model))
