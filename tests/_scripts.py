"""Files outside any package (benchmarks/*.py, the tests' own helper files) as modules, one copy per process.

Importable from every test as ``from _scripts import load_script`` (pyproject.toml puts tests/ on pytest's
``pythonpath``)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_script(path: str | Path, name: str | None = None) -> ModuleType:
    """The module of `path` (relative to the repository root, or absolute) under `name` (default: the file's
    stem), registered in sys.modules before it runs (dataclasses look their module up while a class is built)."""
    path = Path(path) if Path(path).is_absolute() else ROOT / path
    name = name or path.stem
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None, path
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name]
