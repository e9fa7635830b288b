"""Nothing may reach the network: loading a checkpoint whose tokenizer/ folder is missing used to make
transformers take the path for a Hub repo id and contact huggingface.co."""
from __future__ import annotations

import ipaddress
import shutil
import socket

import pytest

import hade
from hade.checkpoint import save_model
from hade.errors import InputError
from hade.utils.offline import force_offline


def _is_loopback(host: object) -> bool:
    if host is None or host in ("localhost", b"localhost"):
        return True
    try:
        return ipaddress.ip_address(host.decode() if isinstance(host, bytes) else str(host)).is_loopback
    except ValueError:
        return False


@pytest.fixture
def network_attempts(monkeypatch):
    """Records (and refuses) every attempt to resolve or connect to a host that is not loopback."""
    attempts: list[object] = []
    real_getaddrinfo, real_create_connection = socket.getaddrinfo, socket.create_connection
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def refuse(target: object) -> None:
        attempts.append(target)
        raise OSError(f"test: network access to {target!r} refused")

    def getaddrinfo(host, *args, **kwargs):
        if not _is_loopback(host):
            refuse(host)
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(self, address):
        if isinstance(address, tuple) and not _is_loopback(address[0]):
            refuse(address)
        return real_connect(self, address)

    def connect_ex(self, address):
        if isinstance(address, tuple) and not _is_loopback(address[0]):
            refuse(address)
        return real_connect_ex(self, address)

    def create_connection(address, *args, **kwargs):
        if not _is_loopback(address[0]):
            refuse(address)
        return real_create_connection(address, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    return attempts


@pytest.fixture
def online_mode(monkeypatch):
    """Undo the offline mode that the test session (tests/conftest.py) and `import hade` set, as a user's
    environment without those variables would, so that only hade's own code can turn it back on."""
    import huggingface_hub.constants as constants

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def test_missing_tokenizer_folder_is_an_error_without_network(tiny_model_config, tmp_path, monkeypatch,
                                                              online_mode, network_attempts):
    save_model(hade.create_model(tiny_model_config), tmp_path / "ckpt")
    shutil.rmtree(tmp_path / "ckpt" / "tokenizer")
    # a relative path of two parts, "ckpt/tokenizer", is a valid Hub repo id: the case that went online
    monkeypatch.chdir(tmp_path)
    with pytest.raises(Exception) as info:
        hade.load("ckpt")
    assert network_attempts == [], f"loading tried to reach {network_attempts}"
    assert isinstance(info.value, InputError), repr(info.value)
    assert str(info.value).startswith("ckpt/tokenizer: missing; the checkpoint is incomplete")


def test_transformers_called_directly_stays_offline(online_mode, network_attempts, tmp_path, monkeypatch):
    """Any code path, even one that forgets local_files_only: after force_offline() the libraries refuse
    before opening a socket, also when they were imported (and read the environment) before hade."""
    from transformers import AutoTokenizer

    monkeypatch.chdir(tmp_path)
    force_offline()
    with pytest.raises(OSError):
        AutoTokenizer.from_pretrained("someone/some-model")
    assert network_attempts == [], f"transformers tried to reach {network_attempts}"


def test_force_offline_sets_variables_and_imported_constants(online_mode):
    import os

    import huggingface_hub.constants as constants

    force_offline()
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"
    assert constants.HF_HUB_OFFLINE is True and constants.is_offline_mode()
