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


def test_old_configs_with_a_model_temperature_still_load(tmp_path):
    """The loss's temperature moved from ModelConfig to TrainConfig: an older run's config maps to it, an
    older checkpoint's config.json drops it (inference never used it)."""
    old = to_dict(TrainConfig(epochs=2))
    del old["temperature"], old["validate_every_steps"], old["validate_clips"]
    old["model"]["temperature"] = 0.05
    cfg = from_dict(TrainConfig, old)
    assert cfg.temperature == 0.05 and not hasattr(cfg.model, "temperature")
    assert from_dict(TrainConfig, {**old, "temperature": 0.1}).temperature == 0.1  # the new place wins
    assert to_dict(from_dict(TrainConfig, to_dict(cfg))) == to_dict(cfg)
    model = from_dict(ModelConfig, {"head": "dcr", "temperature": 0.07})
    assert model == ModelConfig(head="dcr")
    with pytest.raises(InputError, match="unknown field.*'temprature'"):
        from_dict(TrainConfig, {"temprature": 0.1})


def test_validation_fields_default_to_once_per_epoch_on_the_whole_split():
    cfg = TrainConfig()
    assert cfg.validate_every_steps is None and cfg.validate_clips is None and cfg.temperature == 0.07
    back = from_dict(TrainConfig, to_dict(TrainConfig(validate_every_steps=50, validate_clips=200)))
    assert (back.validate_every_steps, back.validate_clips) == (50, 200)


def test_same_clip_defaults_to_positives_and_is_checked():
    from hade.train.trainer import check_train_config

    assert TrainConfig().same_clip == "positive"
    assert from_dict(TrainConfig, to_dict(TrainConfig(same_clip="exclude"))).same_clip == "exclude"
    with pytest.raises(InputError, match="same_clip.*'negative'"):
        check_train_config(TrainConfig(same_clip="negative"))


@pytest.mark.parametrize("bad, field", [({"lr": "fast"}, "lr"), ({"epochs": -1}, "epochs"), ({"lr": -1e-3}, "lr"),
                                        ({"batch_size": 0}, "batch_size"), ({"clip_seconds": float("nan")}, "clip_seconds"),
                                        ({"warmup_fraction": 2.0}, "warmup_fraction"), ({"max_steps": 0}, "max_steps")])
def test_train_config_values_are_checked_by_type_and_range(bad, field, tmp_path):
    """Issue 24: {"lr": "fast"} was a TypeError traceback and a negative lr or epoch count was accepted."""
    from hade.config import TrainConfig
    from hade.errors import InputError
    from hade.train.trainer import train

    with pytest.raises(InputError, match=f"{field} must be"):
        TrainConfig(**bad).check()
    with pytest.raises(InputError, match=f"{field} must be"):  # refused before any data is read
        train(tmp_path / "no-data", tmp_path / "run", TrainConfig(**bad), progress=False)
