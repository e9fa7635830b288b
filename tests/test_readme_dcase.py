"""The README's "The DCASE 2025 baseline in hade" recipe cannot drift from the code: every `hade` command of
its shell blocks parses with hade's command line (a `hade train` also builds its TrainConfig from the
section's `d25.json`), that file is a valid TrainConfig, and the manifest script runs on the test fixtures."""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hade.apps.train import train_config_from_args
from hade.cli import parse
from hade.config import TrainConfig, load_json_config

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
HEADING = "### The DCASE 2025 baseline in hade"


def _section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert text.count(HEADING) == 1, "the README lost its DCASE 2025 recipe section"
    body = text.split(HEADING, 1)[1]
    return re.split(r"\n#{2,3} ", body, maxsplit=1)[0]


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", _section(), flags=re.S)


def _commands() -> list[list[str]]:
    """The `hade ...` lines of the section's shell blocks (continuations joined, comments dropped)."""
    out = []
    for block in _blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0] == "hade":
                out.append(words[1:])
    return out


def test_the_section_has_its_blocks():
    commands = _commands()
    assert len(_blocks("json")) == 1 and len(_blocks("python")) == 1
    assert {c[0] for c in commands} >= {"pack", "train", "eval", "convert", "compare"}
    assert any(c[0] == "train" and "tha+dcr" in c for c in commands)


@pytest.mark.parametrize("argv", _commands(), ids=lambda argv: " ".join(argv)[:60])
def test_every_recipe_command_parses(argv, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d25.json").write_text(_blocks("json")[0])
    args = parse(argv)
    assert args.command == argv[0]
    if argv[0] == "train":  # the flags over the config file: a TrainConfig the trainer accepts
        cfg = train_config_from_args(args).check()
        assert cfg.same_clip == "positive" and cfg.model.caption_normalize == "dcase"
        assert cfg.model.audio_encoder == "passt-s-p16-s16" and cfg.model.head_options == {"projection": "linear"}


def test_the_config_block_is_the_baselines_schedule(tmp_path):
    file = tmp_path / "d25.json"
    file.write_text(_blocks("json")[0])
    cfg = load_json_config(file, TrainConfig).check()
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.text_lr, cfg.temperature) == (20, 64, 2e-5, 2e-5, 0.05)
    assert (cfg.model.max_text_tokens, cfg.model.text_pooling, cfg.model.embed_dim) == (32, "cls", 1024)


def _fixture_data(root: Path) -> None:
    """data/clotho (with an `evaluation` split made of the validation one), data/audiocaps, data/wavcaps."""
    clotho = root / "data" / "clotho"
    clotho.mkdir(parents=True)
    for name in ("development", "validation"):
        (clotho / name).symlink_to(FIXTURES / "clotho" / name)
        shutil.copy(FIXTURES / "clotho" / f"clotho_captions_{name}.csv", clotho)
    (clotho / "evaluation").symlink_to(FIXTURES / "clotho" / "validation")
    shutil.copy(FIXTURES / "clotho" / "clotho_captions_validation.csv", clotho / "clotho_captions_evaluation.csv")
    (root / "data" / "audiocaps").symlink_to(FIXTURES / "audiocaps")
    (root / "data" / "wavcaps").symlink_to(FIXTURES / "wavcaps")
    (root / "dcase2025_task6_excluded_freesound_ids.csv").write_text("sound_id\nfsd_1001\n")


def test_the_manifest_script_runs_on_the_fixtures(tmp_path):
    from hade.data.readers import read_split

    _fixture_data(tmp_path)
    (tmp_path / "d25_manifest.py").write_text(_blocks("python")[0])
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "d25_manifest.py"], cwd=tmp_path, env=env, check=True, timeout=120)
    counts = {}
    for split in ("train", "val", "test"):
        lines = [json.loads(x) for x in (tmp_path / "data" / "d25" / f"{split}.jsonl").read_text().splitlines()]
        counts[split] = lines
    sources = {(line["id"].split("/")[0]) for line in counts["train"]}
    assert sources == {"clotho", "audiocaps", "wavcaps"}
    assert "wavcaps/fsd_1001" not in {line["id"] for line in counts["train"]}  # the excluded Freesound clip
    expected = sum(len(read_split(r, s, verify_audio=False).clips) for r, s in (
        (FIXTURES / "clotho", "development"), (FIXTURES / "audiocaps", "train"), (FIXTURES / "wavcaps", "train"))) - 1
    train = read_split(tmp_path / "data" / "d25", "train")
    assert len(train.clips) == len(counts["train"]) == expected and not train.problems
    test = read_split(tmp_path / "data" / "d25", "test")
    assert sorted(c.clip_id for c in test.clips) == ["bell.wav", "car.wav"] and test.num_captions == 10
