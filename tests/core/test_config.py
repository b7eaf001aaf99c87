"""Config validation: unknown keys and wrong types fail naming the key; overrides reach any leaf."""

import pytest

from polymodal.config import load_config
from polymodal.errors import ConfigError

BASE = """
model:
  type: dual_encoder
  width: 32
  encoders:
    image: {type: vit, image_size: 16, patch_size: 8, width: 32, depth: 1, num_heads: 2}
    text: {type: transformer, width: 32, depth: 1, num_heads: 2}
tasks:
  retrieval: {type: contrastive}
data:
  train: data/train.jsonl
train:
  max_steps: 5
"""


def write(tmp_path, text=BASE):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_paths_are_relative_to_the_config_file(tmp_path):
    config = load_config(write(tmp_path))
    assert config.data.train == str(tmp_path / "data" / "train.jsonl")
    assert config.train.max_steps == 5 and config.train.lr == 1e-3


def test_overrides_reach_any_leaf_and_parse_types(tmp_path):
    config = load_config(write(tmp_path), ["train.lr=3e-4", "train.max_steps=7", "data.train=/abs/t.jsonl",
                                           "model.encoders.text.depth=3", "train.init_from=null"])
    assert config.train.lr == 3e-4 and config.train.max_steps == 7
    assert config.data.train == "/abs/t.jsonl"
    assert config.model["encoders"]["text"]["depth"] == 3


def test_relative_paths_given_with_set_are_relative_to_the_working_directory(tmp_path, monkeypatch):
    config_dir, work = tmp_path / "configs", tmp_path / "work"
    config_dir.mkdir()
    work.mkdir()
    monkeypatch.chdir(work)
    config = load_config(write(config_dir), ["data.val=runs/d/val.jsonl", "train.init_from=runs/clip"])
    assert config.data.train == str(config_dir / "data" / "train.jsonl")  # from the file: the file's folder
    assert config.data.val == str(work / "runs" / "d" / "val.jsonl")  # from --set: where the command runs
    assert config.train.init_from == str(work / "runs" / "clip")


@pytest.mark.parametrize("override, needle", [
    (["train.max_step=5"], "unknown key 'max_step'; allowed keys:"),
    (["data.trian=x"], "unknown key 'trian'"),
    (["train.lr=fast"], "train.lr: expected a number"),
    (["train.batch_size=0"], "train.batch_size: expected a positive integer"),
    (["train.precision=fp8"], "train.precision"),
    (["modle.width=3"], "unknown section 'modle'"),
    (["train.max_steps"], "expected key.path=value"),
])
def test_bad_keys_and_values_are_named(tmp_path, override, needle):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path), override)
    assert needle in str(e.value)
    assert "allowed keys: " not in needle or "max_steps" in str(e.value)


def test_unknown_top_level_section_and_yaml_syntax_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="unknown section 'optim'"):
        load_config(write(tmp_path, BASE + "optim: {}\n"))
    with pytest.raises(ConfigError, match=r"c.yaml: line \d+: invalid YAML"):
        load_config(write(tmp_path, "model: [1, 2\n"))
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_a_string_is_not_a_list_of_channels():
    # Sequence[int] annotations: a YAML string must not pass as a sequence of characters
    from polymodal.config import bind
    from polymodal.modalities.image.encoders import CNNImageEncoder

    with pytest.raises(ConfigError, match=r"model.encoders.image.channels: expected a list, got 'abc'"):
        bind(CNNImageEncoder, {"channels": "abc"}, "model.encoders.image", provided=("out_dim",))
    with pytest.raises(ConfigError, match=r"model.encoders.image.channels\[1\]: expected an integer"):
        bind(CNNImageEncoder, {"channels": [8, "x"]}, "model.encoders.image", provided=("out_dim",))
    assert bind(CNNImageEncoder, {"channels": [8, 16]}, "model.encoders.image", provided=("out_dim",)) == {
        "channels": [8, 16]}
