"""A local BERT directory (`text_encoder`) with a damaged file: an InputError naming it, not a traceback."""
from __future__ import annotations

from pathlib import Path

import pytest

from hade.errors import InputError
from hade.models.encoders.text_bert import bundled_minilm_dir, load_text_backbone


@pytest.fixture
def bert_dir(tmp_path: Path) -> Path:
    """A copy of the bundled MiniLM directory: small files copied, the weights linked."""
    out = tmp_path / "bert"
    out.mkdir()
    for file in bundled_minilm_dir().iterdir():
        if file.is_file():
            target = out / file.name
            if file.stat().st_size > 5_000_000:
                target.symlink_to(file)
            else:
                target.write_bytes(file.read_bytes())
    return out


def test_truncated_weights_name_the_directory(bert_dir):
    weights = bert_dir / "model.safetensors"
    data = weights.read_bytes()[:4096]
    weights.unlink()
    weights.write_bytes(data)
    with pytest.raises(InputError, match=rf"^{bert_dir}: cannot load the BERT weights"):
        load_text_backbone(str(bert_dir))


def test_garbage_config_names_the_file(bert_dir):
    (bert_dir / "config.json").write_text('{"model_type": "bert", ')
    with pytest.raises(InputError, match=rf"^{bert_dir / 'config.json'}: unreadable BERT config"):
        load_text_backbone(str(bert_dir))


def test_garbage_tokenizer_names_the_file(bert_dir):
    (bert_dir / "tokenizer.json").write_bytes(b"\xff\xfe")
    with pytest.raises(InputError, match=rf"^{bert_dir / 'tokenizer.json'}: unreadable tokenizer file"):
        load_text_backbone(str(bert_dir))
