"""The command line end to end on tiny settings, and its error handling."""
import json

import pytest

from hade.cli import main
from hade.config import TrainConfig, to_dict


def test_synth_train_eval_from_the_command_line(tmp_path, tiny_model_config, capsys, monkeypatch):
    data = tmp_path / "data"
    assert main(["synth", str(data), "--clips", "24", "--sample-rate", "8000", "--duration", "1.0"]) == 0
    assert (data / "clotho_captions_evaluation.csv").is_file()
    cfg = TrainConfig(epochs=1, batch_size=8, clip_seconds=1.0, model=tiny_model_config)
    (tmp_path / "cfg.json").write_text(json.dumps(to_dict(cfg)))
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), "--config", str(tmp_path / "cfg.json"),
                 "--head", "dp", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["eval", "--ckpt", str(run / "checkpoints" / "best"), "--data", str(data), "--split", "test",
                 "--out", str(tmp_path / "m.json"), "--quiet"]) == 0
    table = capsys.readouterr().out
    assert "T2A" in table and "A2T" in table and "chance" in table
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert set(metrics["t2a"]) >= {"R@1", "R@5", "R@10", "mAP@10", "medR", "meanR"}
    assert metrics["num_audios"] == 4 and metrics["num_texts"] == 20
    # the checkpoint records the training clip length, and eval defaults to it (the encoder stretches
    # whatever it gets to one image, so another length would shift every input)
    assert json.loads((run / "checkpoints" / "best" / "config.json").read_text())["clip_seconds"] == 1.0
    import hade
    import hade.eval.evaluate as evaluate_mod

    assert hade.load(run / "checkpoints" / "best").clip_samples == 8000  # 1 s at 8 kHz; the encoder holds 2.05 s
    seen = []
    real = evaluate_mod.evaluate_run
    monkeypatch.setattr(evaluate_mod, "evaluate_run", lambda m, split, seconds, *a, **k: seen.append(seconds)
                        or real(m, split, seconds, *a, **k))
    assert main(["eval", "--ckpt", str(run / "checkpoints" / "best"), "--data", str(data), "--split", "test",
                 "--quiet"]) == 0
    assert seen == [1.0]
    assert main(["eval", "--ckpt", str(run / "checkpoints" / "best"), "--data", str(data), "--split", "test",
                 "--compute", "bf16", "--out", str(tmp_path / "bf16.json"), "--quiet"]) == 0
    low = json.loads((tmp_path / "bf16.json").read_text())
    assert low["compute"] == "bf16" and metrics.get("compute") == "fp32"
    assert low["num_texts"] == 20 and set(low["t2a"]) == set(metrics["t2a"])
    assert (metrics["clip_seconds"], metrics["segments"]) == (1.0, 1)
    # beyond the encoder's 2.05 s: each clip in two segments, and the JSON says so
    assert main(["eval", "--ckpt", str(run / "checkpoints" / "best"), "--data", str(data), "--split", "test",
                 "--clip-seconds", "3", "--out", str(tmp_path / "long.json"), "--quiet"]) == 0
    long = json.loads((tmp_path / "long.json").read_text())
    assert seen[-1] == 3.0 and (long["clip_seconds"], long["segments"]) == (3.0, 2)


def test_errors_are_one_clear_line_without_traceback(tmp_path, capsys):
    assert main(["eval", "--ckpt", str(tmp_path), "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a hade checkpoint" in err and "Traceback" not in err
    (tmp_path / "bad.json").write_text('{"epochs": 1, "bogus": 2}')
    assert main(["train", "--data", str(tmp_path), "--config", str(tmp_path / "bad.json")]) == 2
    assert "unknown field(s) ['bogus']" in capsys.readouterr().err
    assert main(["synth", str(tmp_path / "s"), "--clips", "1"]) == 2
    assert "clips" in capsys.readouterr().err


def test_eval_is_deterministic_to_the_last_digit(tmp_path, tiny_model_config):
    import hade
    from hade.checkpoint import save_model
    from hade.data.readers import read_split
    from hade.data.synthcaps import generate
    from hade.eval.evaluate import evaluate

    generate(tmp_path / "d", clips=20, seed=5, sample_rate=8000, duration=1.0, progress=False)
    save_model(hade.create_model(tiny_model_config), tmp_path / "ckpt")
    runs = []
    for _ in range(2):  # a fresh load each time, as two separate `hade eval` runs
        model = hade.load(tmp_path / "ckpt")
        runs.append(evaluate(model, read_split(tmp_path / "d", "evaluation"), 1.0, batch_size=3, progress=False))
    assert json.dumps(runs[0].to_dict(), sort_keys=True) == json.dumps(runs[1].to_dict(), sort_keys=True)


def _two_checkpoints(tmp_path, tiny_model_config):
    import torch

    import hade
    from hade.checkpoint import save_model
    from hade.data.synthcaps import generate

    generate(tmp_path / "d", clips=40, seed=5, sample_rate=8000, duration=1.0, progress=False)
    for seed in (0, 1):
        torch.manual_seed(seed)
        save_model(hade.create_model(tiny_model_config), tmp_path / f"ckpt{seed}")


def test_eval_intervals_per_query_results_and_dcase_round_trip(tmp_path, tiny_model_config, capsys):
    import numpy as np

    from hade.eval.per_query import load_per_query

    _two_checkpoints(tmp_path, tiny_model_config)
    common = ["--data", str(tmp_path / "d"), "--clip-seconds", "1.0", "--quiet"]
    assert main(["eval", "--ckpt", str(tmp_path / "ckpt0"), *common, "--out", str(tmp_path / "a.json"),
                 "--bootstrap", "200", "--seed", "3", "--dcase-csv", str(tmp_path / "sub.csv")]) == 0
    out = capsys.readouterr().out
    metrics = json.loads((tmp_path / "a.json").read_text())
    r1, (lo, hi) = metrics["t2a"]["R@1"], metrics["ci"]["t2a"]["R@1"]
    assert f"{r1:.1f}  [{lo:.1f}, {hi:.1f}]" in out and "200 resamples, seed 3" in out
    assert metrics["ci"]["settings"]["resamples"] == 200 and metrics["ci"]["settings"]["seed"] == 3
    assert metrics["per_query_file"] == "a.per_query.npz"
    pq = load_per_query(tmp_path / "a.per_query.npz")
    assert pq.num_texts == metrics["num_texts"] and pq.num_audios == metrics["num_audios"]
    assert 100 * np.count_nonzero(pq.t2a_rank <= 1) / pq.num_texts == r1 and pq.file_names[0].endswith(".wav")
    # the same run again: identical intervals (seeded); --bootstrap 0: none
    assert main(["eval", "--ckpt", str(tmp_path / "ckpt0"), *common, "--bootstrap", "200", "--seed", "3",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ci"] == metrics["ci"]
    assert main(["eval", "--ckpt", str(tmp_path / "ckpt0"), *common, "--bootstrap", "0", "--json"]) == 0
    assert "ci" not in json.loads(capsys.readouterr().out)
    # the DCASE file scores exactly as hade eval reported, without a checkpoint
    assert main(["eval", "--dcase-score", str(tmp_path / "sub.csv"), "--data", str(tmp_path / "d"), "--json",
                 "--bootstrap", "200", "--seed", "3"]) == 0
    scored = json.loads(capsys.readouterr().out)
    for name in ("R@1", "R@5", "R@10", "mAP@10"):
        assert scored["t2a"][name] == metrics["t2a"][name]
        assert scored["ci"]["t2a"][name] == metrics["ci"]["t2a"][name]  # same draws, same per-query values
    assert main(["eval", "--data", str(tmp_path / "d")]) == 2
    assert "--ckpt: a checkpoint directory is needed" in capsys.readouterr().err


def test_compare_two_and_several_results(tmp_path, tiny_model_config, capsys):
    _two_checkpoints(tmp_path, tiny_model_config)
    common = ["--data", str(tmp_path / "d"), "--clip-seconds", "1.0", "--quiet", "--bootstrap", "0"]
    for seed in (0, 1):
        assert main(["eval", "--ckpt", str(tmp_path / f"ckpt{seed}"), *common,
                     "--out", str(tmp_path / f"m{seed}.json")]) == 0
    assert main(["eval", "--ckpt", str(tmp_path / "ckpt0"), *common, "--split", "validation",
                 "--out", str(tmp_path / "val.json")]) == 0
    capsys.readouterr()
    a, b = str(tmp_path / "m0.json"), str(tmp_path / "m1.json")
    assert main(["compare", a, b, "--bootstrap", "100", "--permutations", "200", "--out",
                 str(tmp_path / "cmp.json")]) == 0
    captured = capsys.readouterr()
    text = captured.out
    assert "A = m0" in text and "B = m1" in text and "T2A R@1" in text and "sign-flip" in text
    assert "different lengths" not in captured.err  # both encoded 1 s of each clip
    result = json.loads((tmp_path / "cmp.json").read_text())
    m0, m1 = (json.loads((tmp_path / f"m{s}.json").read_text()) for s in (0, 1))
    assert result["t2a"]["R@1"]["diff"] == m0["t2a"]["R@1"] - m1["t2a"]["R@1"]
    assert 0 < result["t2a"]["R@1"]["p"] <= 1 and result["settings"]["permutations"] == 200
    # --baseline naming the first of two: the difference is the other minus it
    assert main(["compare", a, b, "--baseline", "m0", "--bootstrap", "20", "--permutations", "20", "--json"]) == 0
    swapped = json.loads(capsys.readouterr().out)
    assert swapped["t2a"]["R@1"]["diff"] == m1["t2a"]["R@1"] - m0["t2a"]["R@1"]
    # three results against a named baseline, Holm-adjusted
    assert main(["compare", a, b, str(tmp_path / "m1.per_query.npz"), "--names", "dp,x,y", "--baseline", "dp",
                 "--bootstrap", "50", "--permutations", "100", "--json"]) == 0
    many = json.loads(capsys.readouterr().out)
    assert many["baseline"] == "dp" and set(many["systems"]) == {"x", "y"}
    assert many["systems"]["x"]["t2a"]["R@1"]["p_holm"] >= many["systems"]["x"]["t2a"]["R@1"]["p"]
    # results that encoded different lengths of each clip: compared, with a note saying so
    (tmp_path / "m30.json").write_text(json.dumps(m1 | {"clip_seconds": 30.0, "segments": 3}))
    assert main(["compare", a, str(tmp_path / "m30.json"), "--bootstrap", "20", "--permutations", "20"]) == 0
    assert "different lengths of each clip (m0 1 s (1 segment), m30 30 s (3 segments))" in capsys.readouterr().err
    # not the same split: a clear error
    assert main(["compare", a, str(tmp_path / "val.json")]) == 2
    assert "not results on the same split" in capsys.readouterr().err
    (tmp_path / "old.json").write_text(json.dumps(m0 | {"per_query_file": None}))
    assert main(["compare", a, str(tmp_path / "old.json")]) == 2
    assert "has no per-query results" in capsys.readouterr().err


def test_compare_pools_a_systems_seeds_per_query(tmp_path, tiny_model_config, capsys):
    """Comma-separated results are one system: each query's value is averaged over them, so the pooled
    difference is the mean of the seeds' differences, and medR (not a mean) is left out."""
    _two_checkpoints(tmp_path, tiny_model_config)
    common = ["--data", str(tmp_path / "d"), "--clip-seconds", "1.0", "--quiet", "--bootstrap", "0"]
    for k, ckpt in enumerate(("ckpt0", "ckpt1", "ckpt0", "ckpt1")):  # x seeds 0-1, y seeds 0-1
        assert main(["eval", "--ckpt", str(tmp_path / ckpt), *common, "--clip-seconds", str(1.0 - 0.25 * (k // 2)),
                     "--out", str(tmp_path / f"{'xy'[k % 2]}_seed{k // 2}.json")]) == 0
    capsys.readouterr()
    x = ",".join(str(tmp_path / f"x_seed{s}.json") for s in (0, 1))
    y = ",".join(str(tmp_path / f"y_seed{s}.json") for s in (0, 1))
    assert main(["compare", x, y, "--bootstrap", "50", "--permutations", "100", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    m = {n: json.loads((tmp_path / f"{n}.json").read_text()) for n in ("x_seed0", "x_seed1", "y_seed0", "y_seed1")}
    for d, metric in (("t2a", "R@1"), ("a2t", "mAP@10"), ("t2a", "meanR")):
        mean_x = (m["x_seed0"][d][metric] + m["x_seed1"][d][metric]) / 2
        mean_y = (m["y_seed0"][d][metric] + m["y_seed1"][d][metric]) / 2
        assert out[d][metric]["diff"] == pytest.approx(mean_x - mean_y, abs=1e-9), (d, metric)
    assert "medR" not in out["t2a"] and out["pooling"]["systems"] == {"x": x.split(","), "y": y.split(",")}
    # in a table, and a system of one result beside pooled ones
    assert main(["compare", x, y, str(tmp_path / "y_seed0.json"), "--bootstrap", "20", "--permutations", "20"]) == 0
    text = capsys.readouterr().out
    assert "against baseline x" in text and "x: 2 results pooled per query" in text and "y_seed0: 1 results" in text
    assert main(["compare", x + ",", y]) == 2
    assert "stray comma" in capsys.readouterr().err


def test_eval_with_relevance_annotations_and_the_2025_submission(tmp_path, tiny_model_config, capsys):
    """hade eval --relevance: mAP@16 beside the single-relevance metrics, in the table, the JSON, the intervals,
    the per-query file and hade compare; the 2025 score-matrix submission scores to the same numbers."""
    import csv

    from hade.data.dataset import captions_with_clip_index
    from hade.data.readers import read_split

    _two_checkpoints(tmp_path, tiny_model_config)
    split = read_split(tmp_path / "d", "evaluation", verify_audio=False)
    captions, _ = captions_with_clip_index(split)
    names = [c.audio_path.name for c in split.clips]
    with open(tmp_path / "rel.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["query", "audio_filenames"])
        queries = range(0, len(captions), 3)
        for q in queries:
            w.writerow([captions[q], repr([names[(q + j) % len(names)] for j in range(1 + q % 3)])])
    common = ["--data", str(tmp_path / "d"), "--clip-seconds", "1.0", "--quiet", "--relevance", str(tmp_path / "rel.csv"),
              "--bootstrap", "100"]
    for seed in (0, 1):
        assert main(["eval", "--ckpt", str(tmp_path / f"ckpt{seed}"), *common, "--out", str(tmp_path / f"r{seed}.json"),
                     "--dcase-csv", str(tmp_path / f"sub{seed}.csv"), "--dcase-format", "scores"]) == 0
    out = capsys.readouterr().out
    assert "several relevant files per query: mAP@16" in out and "T2Am mAP@16" in out
    metrics = json.loads((tmp_path / "r0.json").read_text())
    multi = metrics["t2a_multi"]
    assert multi["num_queries"] == len(queries) and 0 < multi["mAP@16"] <= 100
    lo, hi = metrics["ci"]["t2a_multi"]["mAP@16"]
    assert lo <= multi["mAP@16"] <= hi
    assert main(["eval", "--dcase-score", str(tmp_path / "sub0.csv"), "--data", str(tmp_path / "d"), "--json",
                 "--relevance", str(tmp_path / "rel.csv"), "--bootstrap", "100"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["format"] == "scores" and scored["t2a_multi"]["mAP@16"] == multi["mAP@16"]
    for name in ("R@1", "R@5", "R@10", "mAP@10"):
        assert scored["t2a"][name] == metrics["t2a"][name]
    assert scored["ci"]["t2a_multi"] == metrics["ci"]["t2a_multi"]
    assert main(["compare", str(tmp_path / "r0.json"), str(tmp_path / "r1.json"), "--bootstrap", "50",
                 "--permutations", "50", "--json"]) == 0
    cmp = json.loads(capsys.readouterr().out)
    m1 = json.loads((tmp_path / "r1.json").read_text())["t2a_multi"]["mAP@16"]
    assert cmp["t2a_multi"]["mAP@16"]["diff"] == pytest.approx(multi["mAP@16"] - m1)
    # a top-10 submission cannot give mAP@16
    assert main(["eval", "--ckpt", str(tmp_path / "ckpt0"), *common[:-4], "--bootstrap", "0",
                 "--dcase-csv", str(tmp_path / "top10.csv")]) == 0
    capsys.readouterr()
    assert main(["eval", "--dcase-score", str(tmp_path / "top10.csv"), "--data", str(tmp_path / "d"),
                 "--relevance", str(tmp_path / "rel.csv")]) == 2
    assert "mAP@16 needs 16 ranks" in capsys.readouterr().err


def test_bad_output_paths_and_submissions_fail_before_any_work(tmp_path, tiny_model_config, capsys, monkeypatch):
    """issue 24 item 6: --dcase-csv to a folder used to fail with a traceback after the whole evaluation."""
    import hade.eval.evaluate as evaluate_mod
    from hade.checkpoint import save_model
    from hade.data.synthcaps import generate
    import hade

    generate(tmp_path / "d", clips=6, seed=5, sample_rate=8000, duration=1.0, progress=False)
    save_model(hade.create_model(tiny_model_config), tmp_path / "ckpt")
    monkeypatch.setattr(evaluate_mod, "evaluate_run", lambda *a, **k: (_ for _ in ()).throw(AssertionError("ran")))
    base = ["eval", "--ckpt", str(tmp_path / "ckpt"), "--data", str(tmp_path / "d"), "--quiet"]
    (tmp_path / "folder").mkdir()
    assert main([*base, "--dcase-csv", str(tmp_path / "folder")]) == 2
    err = capsys.readouterr().err
    assert "--dcase-csv" in err and "is a folder" in err and "Traceback" not in err
    (tmp_path / "afile").write_text("x")
    assert main([*base, "--out", str(tmp_path / "afile" / "m.json")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    (tmp_path / "rel.csv").write_bytes(b"query,audio_filenames\n\xff,\"['a.wav']\"\n")
    assert main([*base, "--relevance", str(tmp_path / "rel.csv")]) == 2
    assert "not UTF-8 text (byte 0xff" in capsys.readouterr().err
    from hade.eval.dcase import HEADER

    for body in (b"caf\xe9,a.wav\n", b"x" * 200_000 + b",a.wav\n"):
        (tmp_path / "sub.csv").write_bytes(",".join(HEADER).encode() + b"\n" + body)
        assert main(["eval", "--dcase-score", str(tmp_path / "sub.csv"), "--data", str(tmp_path / "d")]) == 2
        err = capsys.readouterr().err
        assert "sub.csv, line" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


# ---- one table of commands, and what they list -----------------------------------------------------------
def _subcommands(parser):
    import argparse

    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_every_command_comes_from_the_one_table_and_runs_its_own_function(capsys):
    import importlib

    from hade.cli import COMMANDS, build_parser

    installed = [name for name, c in COMMANDS.items() if c.functions() is not None]
    assert list(_subcommands(build_parser())) == installed  # registered in the table's order, nothing else
    assert {"synth", "train", "eval", "compare", "demo", "ablate", "convert", "explain", "index", "search",
            "serve", "models"} <= set(installed)
    for name in installed:
        module = importlib.import_module(COMMANDS[name].module)
        assert callable(getattr(module, COMMANDS[name].run)), name


def test_a_command_whose_module_is_missing_is_left_out(monkeypatch):
    import pytest

    from hade import cli

    monkeypatch.setitem(cli.COMMANDS, "nothing", cli.Command("hade.apps.no_such_module"))
    assert "nothing" not in _subcommands(cli.build_parser())
    monkeypatch.setitem(cli.COMMANDS, "broken", cli.Command("hade.apps.models", run="no_such_function"))
    with pytest.raises(AttributeError):  # a module that is there but wrong is an error, not a silent skip
        cli.build_parser()


def test_models_lists_heads_with_capabilities_presets_and_text_encoders(capsys):
    from hade.models.heads import HEADS

    assert main(["models", "--json"]) == 0
    models = json.loads(capsys.readouterr().out)
    heads = {h["name"]: h for h in models["heads"]}
    assert sorted(heads) == sorted(HEADS) and all(h["description"] for h in heads.values())
    assert heads["dp"]["capabilities"]["factorised"] and not heads["tha"]["capabilities"]["has_pooled"]
    assert heads["hci+ac"]["capabilities"]["uses_aux_captions"] and not heads["hci"]["capabilities"]["uses_aux_captions"]
    assert heads["tha+dcr"]["capabilities"]["explanations"] == ["factors", "tha"]
    presets = {p["name"]: p for p in models["audio_encoders"]}
    assert {"htsat-tiny", "htsat-cpu", "htsat-test"} <= set(presets)
    assert presets["htsat-cpu"]["config"]["sample_rate"] == 16000 and presets["htsat-cpu"]["encoder"] == "htsat"
    assert [t["name"] for t in models["text_encoders"]] == ["minilm", "DIR"]
    assert main(["models"]) == 0
    text = capsys.readouterr().out
    assert "heads (--head NAME):" in text and "audio encoder presets" in text and "HADE_PRESET_PATH" in text
    assert all(name in text for name in [*HEADS, *presets])


def test_help_of_head_and_encoder_flags_lists_the_choices(capsys):
    import pytest

    from hade.models.heads import HEADS
    from hade.models.presets import list_presets

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    text = text.replace("- ", "-")  # ... and breaks names at hyphens
    assert all(name in text for name in [*HEADS, *list_presets(), "minilm", "--validate-every", "--validate-clips"])


def test_train_flags_override_their_config_fields(tmp_path):
    from hade.apps.train import train_config_from_args
    from hade.cli import build_parser

    base = ["train", "--data", str(tmp_path)]
    cfg = train_config_from_args(build_parser().parse_args(base))
    assert (cfg.validate_every_steps, cfg.validate_clips) == (None, None)
    cfg = train_config_from_args(build_parser().parse_args(
        [*base, "--validate-every", "5", "--validate-clips", "7", "--precision", "bf16", "--head", "tha",
         "--audio-encoder", "htsat-test", "--text-encoder", "minilm", "--workers", "0"]))
    assert (cfg.validate_every_steps, cfg.validate_clips, cfg.precision, cfg.num_workers) == (5, 7, "bf16", 0)
    assert (cfg.model.head, cfg.model.audio_encoder, cfg.model.text_encoder) == ("tha", "htsat-test", "minilm")
    assert (cfg.same_clip, cfg.model.caption_normalize) == ("positive", "none")
    cfg = train_config_from_args(build_parser().parse_args([*base, "--same-clip", "exclude", "--caption-normalize",
                                                            "dcase"]))
    assert (cfg.same_clip, cfg.model.caption_normalize) == ("exclude", "dcase")


def test_index_storage_dtype_flag_and_its_deprecated_old_name(tmp_path, capsys, monkeypatch):
    import hade.index.build as build_mod
    from hade.index import BuildReport

    seen = []

    def fake_build(folder, out, ckpt, settings):
        seen.append(settings.storage_dtype)
        return BuildReport()

    monkeypatch.setattr(build_mod, "build_index", fake_build)
    base = ["index", str(tmp_path), "--out", str(tmp_path / "idx"), "--json"]
    assert main(base) == 0 and main([*base, "--storage-dtype", "float32"]) == 0
    assert "--precision" not in capsys.readouterr().err
    assert main([*base, "--precision", "float32"]) == 0
    assert "--precision is now --storage-dtype" in capsys.readouterr().err
    assert seen == [None, "float32", "float32"]
    assert main([*base, "--precision", "float32", "--storage-dtype", "float16"]) == 2
    assert "disagree" in capsys.readouterr().err


# ---- rough edges of the command line (issue 22 item 7, issue 24 item 7) ------------------------------------

def test_version_comes_from_the_package_metadata(capsys):
    import importlib.metadata

    import pytest

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"hade {importlib.metadata.version('hade')}"


def test_an_error_carries_its_prefix_once(tmp_path, capsys):
    from hade.cli import error_line
    from hade.errors import InputError

    assert main(["search", str(tmp_path)]) == 2  # neither a query, --audio nor --like
    err = capsys.readouterr().err
    assert err.startswith("hade search: error: give one of") and err.count("hade search:") == 1
    assert error_line("index", InputError("hade index: x")) == "hade index: error: x"


def test_a_misspelt_flag_gets_the_commands_usage_and_a_suggestion(capsys):
    import pytest

    with pytest.raises(SystemExit) as exit_:
        main(["search", "IDX", "--cadidates", "3", "a dog"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "usage: hade search" in err
    assert "unrecognized arguments: --cadidates" in err and "did you mean --candidates?" in err
    with pytest.raises(SystemExit):
        main(["classify", "--ckpt", "C", "--jsn", "a.wav"])
    err = capsys.readouterr().err
    assert "usage: hade classify" in err and "did you mean --json?" in err
    with pytest.raises(SystemExit):
        main(["serach", "IDX", "a dog"])
    assert "did you mean search?" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["search", "IDX", "--zzzz"])  # nothing close: no suggestion
    assert "did you mean" not in capsys.readouterr().err


def test_options_may_stand_between_positionals():
    from hade.cli import parse

    args = parse(["search", "IDX", "-k", "2", "a dog barks"])
    assert (str(args.index), args.query, args.k) == ("IDX", "a dog barks", 2)
    args = parse(["classify", "a.wav", "--ckpt", "C", "--top-k", "1", "b.wav"])
    assert [str(p) for p in args.audio] == ["a.wav", "b.wav"] and args.top_k == 1
    args = parse(["index", "merge", "OUT", "P1", "--json", "P2"])
    assert args.paths == ["merge", "OUT", "P1", "P2"] and args.json


def test_numeric_options_must_be_finite_and_in_range(capsys):
    import pytest

    from hade.cli import parse

    for argv, flag, expected in (
            (["index", "DIR", "--out", "O", "--window", "nan"], "--window", "a finite number of seconds > 0"),
            (["index", "DIR", "--out", "O", "--batch-size", "0"], "--batch-size", "a whole number > 0"),
            (["classify", "--ckpt", "C", "--hop", "inf", "a.wav"], "--hop", "a finite number of seconds > 0"),
            (["search", "IDX", "q", "-k", "0"], "-k", "a whole number > 0"),
            (["search", "IDX", "--like", "a.wav", "--at", "-1"], "--at", "a finite time in seconds >= 0"),
            (["train", "--data", "D", "--lr", "-0.1"], "--lr", "a finite number > 0"),
            (["eval", "--data", "D", "--batch-size", "two"], "--batch-size", "a whole number > 0")):
        with pytest.raises(SystemExit):
            parse(argv)
        err = capsys.readouterr().err
        assert f"argument {flag}: expected {expected}, got" in err, argv
        assert "Traceback" not in err
    assert parse(["index", "DIR", "--out", "O", "--window", "2.5", "--batch-size", "3"]).window == 2.5
    assert parse(["search", "IDX", "--like", "a.wav", "--at", "0"]).at == 0.0


def test_output_cut_short_by_a_closed_pipe_ends_quietly(tmp_path):
    """`hade ... --json | head`: the reader goes away; no BrokenPipeError traceback, no 'Exception ignored'."""
    import os
    import subprocess
    import sys

    from hade.cli import BROKEN_PIPE_EXIT

    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to the pipe now fails with EPIPE
    try:
        run = subprocess.run([sys.executable, "-c", "import sys; from hade.cli import main; "
                              "sys.exit(main(['models', '--json']))"],
                             stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    finally:
        os.close(write_end)
    assert run.returncode == BROKEN_PIPE_EXIT and run.stderr == ""


def test_a_device_this_machine_lacks_is_one_line(tmp_path, capsys, monkeypatch):
    import pytest
    import torch

    from hade.errors import InputError
    from hade.utils.device import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    (tmp_path / "a.wav").write_bytes(b"")
    for argv in (["eval", "--ckpt", str(tmp_path), "--data", str(tmp_path), "--device", "cuda"],
                 ["classify", "--ckpt", str(tmp_path), "--labels", "a,b", "--device", "cuda", str(tmp_path / "a.wav")],
                 ["index", str(tmp_path), "--out", str(tmp_path / "idx"), "--ckpt", str(tmp_path), "--device", "cuda"],
                 ["search", str(tmp_path), "a dog", "--device", "cuda:1"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "CUDA is not available on this machine" in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1, err
    assert resolve_device("auto") == torch.device("cpu") and resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(InputError, match="expected auto, cpu, cuda or cuda:N"):
        resolve_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(InputError, match="1 CUDA device"):
        resolve_device("cuda:3")
    assert resolve_device("cuda:0") == torch.device("cuda:0")


def test_a_checkpoint_file_where_a_folder_is_expected_points_to_convert(tmp_path, capsys):
    (tmp_path / "clap.pt").write_bytes(b"\x80")
    assert main(["eval", "--ckpt", str(tmp_path / "clap.pt"), "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "a file, where a hade checkpoint directory" in err and f"hade convert {tmp_path / 'clap.pt'} --out" in err


def _foreign_folder(path):
    path.mkdir(parents=True)
    (path / "notes.txt").write_text("mine")
    return path


def test_every_command_that_writes_a_folder_refuses_someone_elses(tmp_path, capsys):
    """train, index, pack, synth, ablate, demo and explain refuse a non-empty folder that is not their own kind
    of output (before any work), and name --force; the folder is left as it was."""
    import numpy as np
    import soundfile as sf

    data = tmp_path / "data"
    data.mkdir()
    sf.write(str(data / "a.wav"), np.zeros(800, dtype=np.float32), 8000)
    cases = {
        "train": lambda out: ["train", "--data", str(data), "--out", str(out)],
        "index": lambda out: ["index", str(data), "--out", str(out), "--ckpt", str(tmp_path)],
        "pack": lambda out: ["pack", str(data), "--out", str(out)],
        "synth": lambda out: ["synth", str(out), "--clips", "12"],
        "ablate": lambda out: ["ablate", "--table", "1", "--data", str(data), "--out", str(out)],
        "demo": lambda out: ["demo", "--out", str(out)],
        "explain": lambda out: ["explain", "--ckpt", str(tmp_path), "--audio", str(data / "a.wav"), "--text", "x",
                                "--out", str(out)],
    }
    for name, argv in cases.items():
        out = _foreign_folder(tmp_path / name)
        assert main(argv(out)) == 2, name
        err = capsys.readouterr().err
        assert f"{out}: exists and is not a" in err and "--force" in err and "Traceback" not in err, (name, err)
        assert [p.name for p in out.iterdir()] == ["notes.txt"], name


def test_a_commands_own_output_is_taken_again_and_said(tmp_path, capsys):
    out = tmp_path / "set"
    assert main(["synth", str(out), "--clips", "12", "--sample-rate", "8000", "--duration", "0.5"]) == 0
    capsys.readouterr()
    assert main(["synth", str(out), "--clips", "12", "--sample-rate", "8000", "--duration", "0.5"]) == 0
    printed = capsys.readouterr()
    assert "holds a SynthCaps set; finishing it" in printed.err
    report = json.loads(printed.out)  # what the second call did: every clip was complete already
    assert (report["written"], report["skipped"], report["path"]) == (0, 12, str(out))
    assert sum(s["clips"] for s in report["splits"].values()) == 12
    assert report["splits"]["evaluation"]["audio_dir"] == str(out / "evaluation")
    mine = _foreign_folder(tmp_path / "mine")
    assert main(["synth", str(mine), "--clips", "12", "--sample-rate", "8000", "--duration", "0.5", "--force"]) == 0
    assert (mine / "notes.txt").read_text() == "mine" and (mine / "synthcaps.json").is_file()


def test_train_takes_the_clip_length_from_the_command_line(tmp_path, capsys):
    from hade.apps.train import train_config_from_args
    from hade.cli import parse

    assert train_config_from_args(parse(["train", "--data", str(tmp_path), "--clip-seconds", "30"])).clip_seconds == 30
    assert train_config_from_args(parse(["train", "--data", str(tmp_path)])).clip_seconds == TrainConfig().clip_seconds
    with pytest.raises(SystemExit):
        parse(["train", "--data", str(tmp_path), "--clip-seconds", "0"])
    assert "--clip-seconds" in capsys.readouterr().err
