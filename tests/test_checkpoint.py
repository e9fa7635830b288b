import json
import re
import shutil
from pathlib import Path

import pytest
import torch

import hade
from hade.checkpoint import load, load_train_state, save_model
from hade.errors import InputError


def test_save_load_round_trip_gives_identical_scores(tiny_model_config, tmp_path):
    torch.manual_seed(0)
    model = hade.create_model(tiny_model_config).eval()
    wave = torch.randn(2, model.max_samples)
    captions = ["a dog barks", "a bell rings twice"]
    with torch.no_grad():
        before = model.score(model.encode_text(captions), model.encode_audio(wave))
    save_model(model, tmp_path / "ckpt")
    loaded = hade.load(tmp_path / "ckpt")
    with torch.no_grad():
        after = loaded.score(loaded.encode_text(captions), loaded.encode_audio(wave))
    torch.testing.assert_close(before, after)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors", "tokenizer"]


def test_load_rejects_non_checkpoints_and_mismatched_weights(tiny_model_config, tmp_path):
    with pytest.raises(InputError, match="not a hade checkpoint"):
        hade.load(tmp_path)
    model = hade.create_model(tiny_model_config)
    save_model(model, tmp_path / "ckpt")
    cfg = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    cfg["embed_dim"] = 48
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match=r"model.safetensors: cannot load weights.*(size|shape)"):
        hade.load(tmp_path / "ckpt")


# ---- damaged checkpoints: every load error is an InputError naming the file ---------------------------

@pytest.fixture(scope="module")
def saved_ckpt(tiny_model_config, tmp_path_factory):
    """One saved tiny checkpoint (with a training state); tests damage copies of it."""
    path = tmp_path_factory.mktemp("saved") / "ckpt"
    save_model(hade.create_model(tiny_model_config), path, train_state={"optimizer": {}, "scheduler": {},
               "torch_rng": torch.get_rng_state(), "progress": {}, "config": {}})
    return path


@pytest.fixture
def ckpt(saved_ckpt, tmp_path):
    copy = tmp_path / "ckpt"
    shutil.copytree(saved_ckpt, copy)
    return copy


def truncate(file: Path, size: int | None = None) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2 if size is None else size])


DAMAGE = {
    # name: (how to damage the checkpoint directory, the file the error must name, what it must say)
    "truncated weights": (lambda d: truncate(d / "model.safetensors"), "model.safetensors", "truncated or corrupt"),
    "truncated weights header": (lambda d: truncate(d / "model.safetensors", 5), "model.safetensors",
                                 "truncated or corrupt"),
    "garbage weights": (lambda d: (d / "model.safetensors").write_bytes(b"\xffgarbage" * 100), "model.safetensors",
                        "truncated or corrupt"),
    "missing weights": (lambda d: (d / "model.safetensors").unlink(), "model.safetensors", "missing"),
    "garbage tokenizer.json": (lambda d: (d / "tokenizer" / "tokenizer.json").write_bytes(b"\x00\xffnot json"),
                               "tokenizer/tokenizer.json", "unreadable tokenizer file"),
    "truncated tokenizer.json": (lambda d: truncate(d / "tokenizer" / "tokenizer.json"),
                                 "tokenizer/tokenizer.json", "unreadable tokenizer file"),
    "truncated tokenizer_config.json": (lambda d: truncate(d / "tokenizer" / "tokenizer_config.json"),
                                        "tokenizer/tokenizer_config.json", "unreadable tokenizer file"),
    "tokenizer.json not an object": (lambda d: (d / "tokenizer" / "tokenizer.json").write_text("[1, 2]"),
                                     "tokenizer/tokenizer.json", "expected a JSON object"),
    "tokenizer.json without its fields": (lambda d: (d / "tokenizer" / "tokenizer.json").write_text("{}"),
                                          "tokenizer", "cannot load the tokenizer"),
    "garbage vocab.txt": (lambda d: (d / "tokenizer" / "vocab.txt").write_bytes(b"\xff\xfe\x00"),
                          "tokenizer/vocab.txt", "unreadable vocabulary"),
    # transformers would quietly build a 5-token tokenizer (every word [UNK]) from tokenizer_config.json
    "tokenizer.json deleted": (lambda d: (d / "tokenizer" / "tokenizer.json").unlink(), "tokenizer",
                               "no tokenizer vocabulary"),
    "missing tokenizer folder": (lambda d: shutil.rmtree(d / "tokenizer"), "tokenizer",
                                 "missing; the checkpoint is incomplete"),
    "garbage config.json": (lambda d: (d / "config.json").write_bytes(b"\x00\xff\xfe"), "config.json", "unreadable"),
    "truncated config.json": (lambda d: truncate(d / "config.json"), "config.json", "invalid JSON"),
    "config.json text_config not an object": (
        lambda d: _edit_config(d, text_config=[1]), "config.json", "text_config: expected a JSON object"),
    "config.json bad text_config field": (
        lambda d: _edit_config(d, text_config={**_config(d)["text_config"], "hidden_size": "wide"}),
        "config.json", "not a usable BertConfig"),
    "config.json wrong type": (lambda d: _edit_config(d, embed_dim="x"), "config.json", "does not describe a model"),
}


def _config(d: Path) -> dict:
    return json.loads((d / "config.json").read_text())


def _edit_config(d: Path, **changes) -> None:
    (d / "config.json").write_text(json.dumps({**_config(d), **changes}))


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_checkpoint_is_an_input_error_naming_the_file(ckpt, case):
    damage, file, what = DAMAGE[case]
    damage(ckpt)
    with pytest.raises(InputError) as info:
        hade.load(ckpt)
    message = str(info.value)
    assert message.startswith(f"{ckpt / file}:") and what in message, message
    assert "\n" not in message


def test_tokenizer_with_more_tokens_than_the_embedding_is_refused(ckpt):
    _edit_config(ckpt, text_config={**_config(ckpt)["text_config"], "vocab_size": 100})
    with pytest.raises(InputError, match=r"config.json: .*30522 tokens, but the text encoder's vocab_size is 100"):
        hade.load(ckpt)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "not a state"])
def test_corrupt_train_state_is_an_input_error_naming_the_file(ckpt, damage):
    file = ckpt / "train_state.pt"
    assert load_train_state(ckpt)["progress"] == {}
    if damage == "truncate":
        truncate(file)
    elif damage == "garbage":
        file.write_bytes(b"\x00garbage" * 50)
    else:
        torch.save({"optimizer": {}}, file)
    with pytest.raises(InputError, match=rf"^{re.escape(str(file))}: .*--no-resume"):
        load_train_state(ckpt)


def test_cli_eval_of_an_incomplete_checkpoint_prints_one_line(ckpt, capsys):
    from hade.cli import main

    shutil.rmtree(ckpt / "tokenizer")
    assert main(["eval", "--ckpt", str(ckpt), "--data", str(ckpt)]) == 2
    err = capsys.readouterr().err
    assert err == (f"hade eval: error: {ckpt / 'tokenizer'}: missing; the checkpoint is incomplete "
                   "(`hade train` writes config.json, model.safetensors and tokenizer/ together); copy the whole "
                   "checkpoint directory again\n")


def test_checkpoint_of_an_older_version_with_a_temperature_loads(tiny_model_config, tmp_path):
    save_model(hade.create_model(tiny_model_config), tmp_path / "ckpt")
    config = tmp_path / "ckpt" / "config.json"
    assert "temperature" not in json.loads(config.read_text())  # the training loss owns it now
    config.write_text(json.dumps({**json.loads(config.read_text()), "temperature": 0.07}))
    assert load(tmp_path / "ckpt", compute="fp32").inference_dtype is None


def test_the_tokenizer_error_names_every_layout_and_a_roberta_folder_passes(tmp_path):
    """BERT folders hold vocab.txt, RoBERTa folders vocab.json and merges.txt, fast tokenizers tokenizer.json."""
    from hade.models.encoders.text_bert import check_tokenizer_dir

    tok = tmp_path / "tok"
    tok.mkdir()
    for missing in (tok, tmp_path / "absent"):
        with pytest.raises(InputError) as err:
            check_tokenizer_dir(missing)
        assert "tokenizer.json (any tokenizer), vocab.txt (BERT) or vocab.json + merges.txt (RoBERTa)" in str(err.value)
    (tok / "vocab.json").write_text('{"a": 0}')
    with pytest.raises(InputError, match="vocab.json \\+ merges.txt"):  # BPE vocabulary without its merges
        check_tokenizer_dir(tok)
    (tok / "merges.txt").write_text("#version: 0.2\n")
    check_tokenizer_dir(tok)
