"""Import shims for the reference packages of the PaSST/BEATs equality tests and benchmarks (not part of hade).

* ``hear21passt`` imports ``timm.models._hub.download_cached_file`` at module level, only to download
  pretrained weights; timm needs torchvision, which has no build for hade's torch. A stand-in module
  that refuses downloads takes its place when timm cannot be imported.
* ``hear21passt`` and the BEATs reference take their mel banks / fbank from ``torchaudio.compliance.kaldi``.
  torchaudio's wheels are built for one torch release each and its C++ part does not load with hade's
  torch, so the Makefile installs the wheel with ``pip --target .venv/reference`` (not importable as a
  package) and this shim loads the one pure-Python file ``torchaudio/compliance/kaldi.py`` from there.
  That file imports ``torchaudio`` only for ``create_dct`` (MFCC), which the references do not use.
"""
from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Iterator
from pathlib import Path


def reference_dir() -> Path:
    """Where the Makefile puts the torchaudio wheel: ``<venv>/reference``."""
    return Path(sys.prefix) / "reference"


def _timm_stub() -> dict[str, types.ModuleType]:
    """Modules that make ``from timm.models._hub import download_cached_file`` work without timm."""
    def download_cached_file(*args, **kwargs):
        raise RuntimeError("the test shim of timm does not download weights")

    hub = types.ModuleType("timm.models._hub")
    hub.download_cached_file = download_cached_file  # type: ignore[attr-defined]
    return {"timm": types.ModuleType("timm"), "timm.models": types.ModuleType("timm.models"), "timm.models._hub": hub}


def load_kaldi() -> types.ModuleType | None:
    """torchaudio's ``compliance/kaldi.py`` as a module, or None when the reference wheel is not installed."""
    path = reference_dir() / "torchaudio" / "compliance" / "kaldi.py"
    if not path.is_file():
        return None
    if "_reference_kaldi" not in sys.modules:
        spec = importlib.util.spec_from_file_location("_reference_kaldi", path)
        module = importlib.util.module_from_spec(spec)
        with _modules({"torchaudio": types.ModuleType("torchaudio")}):  # kaldi.py's `import torchaudio`
            spec.loader.exec_module(module)
        sys.modules["_reference_kaldi"] = module
    return sys.modules["_reference_kaldi"]


@contextlib.contextmanager
def _modules(stand_ins: dict[str, types.ModuleType]) -> Iterator[None]:
    """Put `stand_ins` into sys.modules for the imports inside the block, then restore what was there, so that
    no other code (transformers probes for torchaudio and timm) ever sees a stand-in."""
    saved = {name: sys.modules.get(name) for name in stand_ins}
    sys.modules.update(stand_ins)
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


@contextlib.contextmanager
def reference_imports() -> Iterator[None]:
    """Import the references inside this block: ``torchaudio`` is a stand-in whose ``compliance.kaldi`` is the
    reference file (no ``transforms``: build references with freqm = timem = 0), and ``timm`` one that refuses
    downloads unless the real timm imports. The modules imported keep their reference to the stand-ins."""
    kaldi = load_kaldi()
    if kaldi is None:
        raise RuntimeError("the torchaudio reference wheel is missing (make install puts it in .venv/reference)")
    audio = types.ModuleType("torchaudio")
    audio.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None, is_package=True)  # probed by transformers
    audio.__path__ = []  # type: ignore[attr-defined]  # a package, for `import torchaudio.compliance.kaldi`
    compliance = types.ModuleType("torchaudio.compliance")
    compliance.__path__ = []  # type: ignore[attr-defined]
    compliance.kaldi = kaldi  # type: ignore[attr-defined]
    audio.compliance = compliance  # type: ignore[attr-defined]
    audio.transforms = types.SimpleNamespace()  # type: ignore[attr-defined]
    stand_ins = {"torchaudio": audio, "torchaudio.compliance": compliance, "torchaudio.compliance.kaldi": kaldi}
    try:
        import timm.models._hub  # noqa: F401
    except Exception:  # timm missing, or present without torchvision
        stand_ins.update(_timm_stub())
    with _modules(stand_ins):
        yield
