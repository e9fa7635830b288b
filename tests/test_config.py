import json

import pytest

from hade.config import ModelConfig, TrainConfig, from_dict, load_json_config, to_dict
from hade.errors import InputError


def test_train_config_round_trips_through_json(tmp_path):
    cfg = TrainConfig(epochs=3, model=ModelConfig(head="dp", embed_dim=64))
    path = tmp_path / "c.json"
    path.write_text(json.dumps(to_dict(cfg)))
    back = load_json_config(path, TrainConfig)
    assert back == cfg
    assert isinstance(back.model, ModelConfig)


def test_unknown_field_is_named(tmp_path):
    with pytest.raises(InputError, match=r"model.*unknown field.*'embed_dims'"):
        from_dict(TrainConfig, {"model": {"embed_dims": 3}}, "model")


def test_invalid_json_names_file_and_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{\n "epochs": 3,\n}')
    with pytest.raises(InputError, match=r"bad.json: invalid JSON at line 3"):
        load_json_config(path, TrainConfig)
