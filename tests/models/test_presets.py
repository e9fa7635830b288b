"""Audio encoder presets are data: the shipped JSON files keep the values the code had, a user adds presets
with JSON files in HADE_PRESET_PATH (or register_preset), and bad files fail naming the file and field."""
from __future__ import annotations

import json

import pytest

from hade.errors import InputError
from hade.models import presets
from hade.models.encoders.htsat import HTSAT_PRESETS, HTSATConfig, htsat_config

# The presets as they were written in code before they became files (hade.models.encoders.htsat).
OLD_PRESETS = {
    "htsat-tiny": HTSATConfig(),
    "htsat-cpu": HTSATConfig(
        sample_rate=16000, n_fft=512, hop_length=320, mel_bins=64, fmin=50.0, fmax=8000.0,
        spec_size=128, patch_size=4, embed_dim=32, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8],
        window_size=8, time_drop_width=24, freq_drop_width=8,
    ),
    "htsat-test": HTSATConfig(
        sample_rate=8000, n_fft=256, hop_length=128, mel_bins=32, fmin=20.0, fmax=4000.0,
        spec_size=64, patch_size=4, embed_dim=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8],
        window_size=4, drop_path_rate=0.0, time_drop_width=16, freq_drop_width=4,
    ),
}


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(presets.PRESET_PATH_ENV, str(tmp_path))
    return tmp_path


def _write(folder, name, data) -> None:
    (folder / f"{name}.json").write_text(json.dumps(data))


def test_shipped_presets_keep_their_names_and_values(monkeypatch):
    monkeypatch.delenv(presets.PRESET_PATH_ENV, raising=False)
    for name, old in OLD_PRESETS.items():
        assert HTSAT_PRESETS[name] == old and htsat_config(name) == old, name
    htsat = {n for n, p in presets.all_presets().items() if p.encoder == "htsat"}
    assert set(OLD_PRESETS) <= htsat == set(HTSAT_PRESETS)
    assert {"passt-s", "passt-test", "beats-iter3", "beats-test"} <= set(presets.list_presets())
    assert all(p.description for p in presets.all_presets().values())
    cfg = HTSAT_PRESETS["htsat-cpu"]
    cfg.depths[0] = 99  # each lookup is a fresh object
    assert HTSAT_PRESETS["htsat-cpu"].depths[0] == 2


def test_a_user_preset_file_is_listed_and_builds(user_dir):
    _write(user_dir, "htsat-mine", {"description": "mine", "config": {"sample_rate": 16000, "fmax": 8000.0,
                                                                       "embed_dim": 48}})
    assert "htsat-mine" in presets.list_presets() and "htsat-mine" in HTSAT_PRESETS
    cfg = htsat_config("htsat-mine", window_size=4)
    assert (cfg.sample_rate, cfg.embed_dim, cfg.window_size) == (16000, 48, 4)
    assert cfg.n_fft == HTSATConfig().n_fft  # fields left out take the HTSATConfig defaults
    assert presets.get_preset("htsat-mine").source == str(user_dir / "htsat-mine.json")
    from hade.config import ModelConfig
    from hade.models.factory import audio_config

    assert audio_config(ModelConfig(audio_encoder="htsat-mine")).embed_dim == 48


def test_register_preset_in_code():
    try:
        presets.register_preset("htsat-coded", {"embed_dim": 32}, "from code")
        assert HTSAT_PRESETS["htsat-coded"].embed_dim == 32
        with pytest.raises(InputError, match="already exists"):
            presets.register_preset("htsat-coded", {})
    finally:
        presets.unregister_preset("htsat-coded")
    assert "htsat-coded" not in HTSAT_PRESETS


@pytest.mark.parametrize("data, message", [
    ({"config": {"embed_dim": 48}, "colour": "red"}, "unknown field(s) ['colour']"),
    ({"encoder": "wav2vec", "config": {}}, "'encoder' must be one of ['htsat', 'passt', 'beats']"),
    ({"description": 3, "config": {}}, "'description' must be a string"),
    ({"description": "no config"}, "'config' must be a JSON object"),
    ([1, 2], "expected a JSON object"),
])
def test_a_bad_user_file_names_itself_and_the_field(user_dir, data, message):
    _write(user_dir, "bad", data)
    with pytest.raises(InputError, match="bad.json") as err:
        presets.list_presets()
    assert message in str(err.value)


def test_a_config_the_encoder_rejects_names_the_file(user_dir):
    _write(user_dir, "odd", {"config": {"spec_size": 100}})
    with pytest.raises(InputError, match=r"odd\.json.*spec_size"):
        HTSAT_PRESETS["odd"]
    _write(user_dir, "typo", {"config": {"embed_dims": 8}})
    with pytest.raises(InputError, match=r"typo\.json.*embed_dims"):
        htsat_config("typo")


def test_a_shipped_name_cannot_be_redefined(user_dir):
    _write(user_dir, "htsat-tiny", {"config": {"embed_dim": 8}})
    with pytest.raises(InputError, match="htsat-tiny.*defined twice"):
        HTSAT_PRESETS["htsat-tiny"]


def test_unreadable_file_and_missing_folder(user_dir, monkeypatch):
    (user_dir / "broken.json").write_text("{not json")
    with pytest.raises(InputError, match="broken.json: not a readable JSON"):
        presets.list_presets()
    monkeypatch.setenv(presets.PRESET_PATH_ENV, str(user_dir / "nowhere"))
    with pytest.raises(InputError, match="HADE_PRESET_PATH.*nowhere.*not a folder"):
        presets.list_presets()


def test_unknown_preset_lists_the_available_ones(monkeypatch):
    monkeypatch.delenv(presets.PRESET_PATH_ENV, raising=False)
    with pytest.raises(InputError, match="htsat-cpu.*HADE_PRESET_PATH"):
        presets.get_preset("htsat-huge")
    with pytest.raises(InputError, match="unknown HTSAT preset 'htsat-huge'"):
        htsat_config("htsat-huge")
