"""`hade train --workers N` reaches TrainConfig.num_workers; configs saved before the streaming loader load."""
from hade.apps.train import train_config_from_args
from hade.cli import build_parser
from hade.config import TrainConfig, from_dict, to_dict


def test_workers_flag_sets_num_workers_and_defaults_to_auto():
    parse = build_parser().parse_args
    assert train_config_from_args(parse(["train", "--data", "d", "--workers", "0"])).num_workers == 0
    assert train_config_from_args(parse(["train", "--data", "d", "--workers", "3"])).num_workers == 3
    assert train_config_from_args(parse(["train", "--data", "d"])).num_workers is None  # auto: min(4, CPUs - 1)


def test_config_saved_before_the_loader_fields_still_loads():
    old = to_dict(TrainConfig())
    for name in ("num_workers", "prefetch_factor", "audio_cache_mb"):
        del old[name]
    cfg = from_dict(TrainConfig, old)
    assert (cfg.num_workers, cfg.prefetch_factor, cfg.audio_cache_mb) == (None, 2, 256.0)


def test_train_parser_of_python_m_hade_train_parses_as_hade_train(capsys):
    """`python -m hade.train` parses with the train command alone, as `hade train` would, and errors read
    `hade train: error: ...` with its "did you mean"."""
    import pytest

    from hade.apps.train import train_parser

    argv = ["train", "--data", "d", "--workers", "3", "--head", "tha", "--validate-every", "5"]
    assert vars(train_parser().parse_args(argv)) == vars(build_parser().parse_args(argv))
    with pytest.raises(SystemExit):
        train_parser().parse_args(["train", "--data", "d", "--precision", "bf61"])
    err = capsys.readouterr().err
    assert "hade train: error: argument --precision: invalid choice: 'bf61'" in err and "did you mean bf16?" in err
