"""Layers that only look down: the library never imports an application, and a lower library layer never
imports a higher one (README "Layout"). An AST check over src/hade, top-level and function-level imports.

The layer map (lowest first); a module may import its own layer and any layer below:

  0  hade.errors, hade.utils, hade.config     vocabulary, atomic writes, offline guard
  1  hade.data, hade.losses                   audio IO, datasets, chunker; NT-Xent
  2  hade.models                              encoders, heads, factory, foreign key maps (no CLI)
  3  hade.checkpoint                          save/load/convert hade checkpoints (builds models)
  4  hade.eval, hade.index, hade.train,       evaluation, search engine, training loop (library: the
     hade.explain                             experiments call Trainer), explanations
  5  hade (the package facade)                create_model, load, Index
  applications: hade.cli, hade.apps, hade.serve, hade.demo, hade.experiments,
     hade.train.__main__ (the `python -m hade.train` door to hade.apps.train)

Applications may import anything; nothing in the library imports an application.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

APPLICATIONS = ("hade.cli", "hade.apps", "hade.serve", "hade.demo", "hade.experiments", "hade.train.__main__")
LIBRARY_LAYERS = {
    "hade.errors": 0, "hade.utils": 0, "hade.config": 0,
    "hade.data": 1, "hade.losses": 1,
    "hade.models": 2,
    "hade.checkpoint": 3,
    "hade.eval": 4, "hade.index": 4, "hade.train": 4, "hade.explain": 4,
    "hade": 5,
}
# (importer, imported) pairs allowed against the map, each with its reason. Keep it empty.
ALLOWED: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Edge:
    importer: str  # dotted module name
    imported: str  # dotted name as written (a module, or module.attribute for `from m import attribute`)
    line: int


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def layer(name: str) -> int | str | None:
    """"app" for an application module, the library layer number, or None when the map lacks it."""
    if any(_within(name, app) for app in APPLICATIONS):
        return "app"
    if name == "hade":
        return LIBRARY_LAYERS["hade"]
    best = max((p for p in LIBRARY_LAYERS if p != "hade" and _within(name, p)), key=len, default=None)
    return None if best is None else LIBRARY_LAYERS[best]


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _absolute(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(path: Path, root: Path) -> list[Edge]:
    """Every `hade` import of one file, wherever it stands (module level, functions, TYPE_CHECKING)."""
    importer = module_name(path, root)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    edges: list[Edge] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            edges += [Edge(importer, a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, importer, path.name == "__init__.py")
            # `from hade import x` imports the facade unless x is a submodule: name both, judge the deeper
            edges += [Edge(importer, f"{base}.{a.name}", node.lineno) for a in node.names]
    return [e for e in edges if _within(e.imported, "hade")]


def _target_layer(imported: str, root: Path) -> tuple[str, int | str | None]:
    """The module an import name refers to (the name itself if a module file exists, else its parent)."""
    parts = imported.split(".")
    for n in range(len(parts), 0, -1):
        name = ".".join(parts[:n])
        rel = Path(*parts[:n])
        if (root / rel).with_suffix(".py").is_file() or (root / rel / "__init__.py").is_file():
            return name, layer(name)
    return imported, layer(imported)


def violations(root: Path) -> list[str]:
    """One line per import that runs back up (or per module the layer map does not place)."""
    found = []
    for path in sorted((root / "hade").rglob("*.py")):
        importer = module_name(path, root)
        own = layer(importer)
        if own is None:
            found.append(f"{importer}: not on the layer map (add it to APPLICATIONS or LIBRARY_LAYERS)")
            continue
        if own == "app":
            continue
        for edge in imports_of(path, root):
            target, theirs = _target_layer(edge.imported, root)
            if (importer, target) in ALLOWED or theirs is None:
                continue
            if theirs == "app":
                found.append(f"{path.relative_to(root)}:{edge.line}: library {importer} imports application {target}")
            elif theirs > own:
                found.append(f"{path.relative_to(root)}:{edge.line}: {importer} (layer {own}) imports "
                             f"{target} (layer {theirs})")
    return found


def patches_sys_modules(path: Path) -> list[int]:
    """Lines that change sys.modules (item assignment or deletion, pop/update/setdefault/clear...)."""
    def is_sys_modules(node: ast.AST) -> bool:
        return (isinstance(node, ast.Attribute) and node.attr == "modules" and isinstance(node.value, ast.Name)
                and node.value.id == "sys")

    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        stored = isinstance(getattr(node, "ctx", None), (ast.Store, ast.Del))
        if isinstance(node, ast.Subscript) and is_sys_modules(node.value) and stored:
            lines.append(node.lineno)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and is_sys_modules(node.func.value)
              and node.func.attr in ("pop", "popitem", "update", "setdefault", "clear", "__setitem__", "__delitem__")):
            lines.append(node.lineno)
        elif isinstance(node, (ast.Assign, ast.AugAssign)) and any(
                is_sys_modules(t) for t in (node.targets if isinstance(node, ast.Assign) else [node.target])):
            lines.append(node.lineno)
    return lines


# ---- the checks on hade itself --------------------------------------------------------------------------
def test_library_never_imports_upward():
    assert violations(SRC) == []


def test_no_module_patches_sys_modules():
    found = {str(p.relative_to(SRC)): patches_sys_modules(p) for p in sorted((SRC / "hade").rglob("*.py"))}
    assert {p: lines for p, lines in found.items() if lines} == {}


def test_allowed_exceptions_still_exist_and_say_why():
    for (importer, imported), reason in ALLOWED.items():
        assert reason.strip(), (importer, imported)
        assert any(e.imported.startswith(imported) for p in (SRC / "hade").rglob("*.py")
                   for e in imports_of(p, SRC) if e.importer == importer), (importer, imported)


# ---- the checker on planted violations ------------------------------------------------------------------
def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        f = tmp_path / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    return tmp_path


CLEAN = {"hade/__init__.py": "from hade.checkpoint import load\n",
         "hade/errors.py": "", "hade/checkpoint.py": "from hade.models import factory\n",
         "hade/models/__init__.py": "", "hade/models/factory.py": "from hade.errors import InputError\n",
         "hade/cli.py": "import hade\nfrom hade.models import factory\n"}


def test_checker_accepts_a_clean_tree(tmp_path):
    assert violations(_tree(tmp_path, CLEAN)) == []


@pytest.mark.parametrize("planted, expected", [
    ("from hade.cli import main\n", "library hade.models.factory imports application hade.cli"),
    ("def f():\n    from hade import cli\n    return cli\n",
     "library hade.models.factory imports application hade.cli"),
    ("def f():\n    import hade.cli\n", "library hade.models.factory imports application hade.cli"),
    ("from ..cli import main\n", "library hade.models.factory imports application hade.cli"),
    ("def f():\n    import hade\n", "hade.models.factory (layer 2) imports hade (layer 5)"),
    ("from hade.checkpoint import load\n", "hade.models.factory (layer 2) imports hade.checkpoint (layer 3)"),
])
def test_checker_finds_a_planted_upward_import(tmp_path, planted, expected):
    root = _tree(tmp_path, {**CLEAN, "hade/models/factory.py": planted})
    found = violations(root)
    assert len(found) == 1 and expected in found[0] and "hade/models/factory.py:" in found[0], found


def test_checker_names_modules_missing_from_the_map(tmp_path):
    root = _tree(tmp_path, {**CLEAN, "hade/newthing.py": ""})
    assert violations(root) == ["hade.newthing: not on the layer map (add it to APPLICATIONS or LIBRARY_LAYERS)"]


@pytest.mark.parametrize("code, patched", [
    ("import sys\nsys.modules['x'] = object()\n", True),
    ("import sys\ndel sys.modules['x']\n", True),
    ("import sys\nsys.modules.pop('x', None)\n", True),
    ("import sys\nsys.modules.update({})\n", True),
    ("import sys\nm = sys.modules.get('x')\nok = 'x' in sys.modules\n", False),
])
def test_sys_modules_check_on_planted_code(tmp_path, code, patched):
    f = tmp_path / "m.py"
    f.write_text(code)
    assert bool(patches_sys_modules(f)) is patched


# ---- the head contract is asked, not discovered (docs/heads.md) --------------------------------------
CAPABILITY_NAMES = {"factorised", "has_pooled", "needs_phrases", "uses_aux_captions", "set_scoring", "explanations",
                    "rotation_pairs", "score_bound", "pooled_projection"}
# "path:line-text" of known discoveries outside the files this change owned, each with its reason.
CONTRACT_EXCEPTIONS: dict[str, str] = {}  # file -> why it may discover a capability (none today)


def contract_discoveries(path: Path) -> list[int]:
    """Lines that test a head's class (`isinstance(x, SomethingHead)`) or probe a capability with getattr."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
            continue
        if node.func.id == "isinstance" and len(node.args) == 2:
            classes = node.args[1].elts if isinstance(node.args[1], ast.Tuple) else [node.args[1]]
            if any(isinstance(c, ast.Name) and c.id.endswith("Head") for c in classes):
                lines.append(node.lineno)
        elif node.func.id in ("getattr", "hasattr") and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) \
                and node.args[1].value in CAPABILITY_NAMES:
            lines.append(node.lineno)
    return lines


def test_callers_ask_the_head_contract():
    """Outside models/heads nothing tests a head's class or probes a capability with getattr."""
    found = {}
    for path in sorted((SRC / "hade").rglob("*.py")):
        rel = str(path.relative_to(SRC))
        if rel.startswith("hade/models/heads/") or rel in CONTRACT_EXCEPTIONS:
            continue
        if contract_discoveries(path):
            found[rel] = contract_discoveries(path)
    assert found == {}


def test_contract_check_on_planted_code(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f(head):\n    if isinstance(head, (SumHead, THAHead)):\n        pass\n"
                 "    return getattr(head, 'needs_phrases', False)\n")
    assert contract_discoveries(f) == [2, 4]
    f.write_text("def f(head):\n    return head.capabilities.needs_phrases, isinstance(head, dict)\n")
    assert contract_discoveries(f) == []


def test_capabilities_are_declared_once():
    """A head declares what it offers in its `capabilities` record only: no head class (registered or a
    part) has an attribute, property or method named after a capability."""
    import inspect

    import hade.models.heads  # noqa: F401 - the registry imports every head module
    from hade.models.heads.base import RetrievalHead

    classes, todo = set(), [RetrievalHead]
    while todo:
        cls = todo.pop()
        classes.add(cls)
        todo += cls.__subclasses__()
    assert len(classes) >= 6, classes  # dp, dcr, tha, hci, co-attention, diffatr, the sum (and the base)
    found = {cls.__qualname__: sorted(set(vars(cls)) & CAPABILITY_NAMES) for cls in classes
             if inspect.getmodule(cls).__name__.startswith("hade.")}
    assert {name: names for name, names in found.items() if names} == {}


def test_docs_heads_names_every_capability_and_kind():
    from dataclasses import fields

    from hade.models.heads.base import EXPLANATIONS, HeadCapabilities

    doc = (SRC.parent / "docs" / "heads.md").read_text(encoding="utf-8")
    assert {f.name for f in fields(HeadCapabilities)} == CAPABILITY_NAMES
    for name in [*CAPABILITY_NAMES, *EXPLANATIONS, "pooled_text", "pooled_audio", "register_head"]:
        assert f"`{name}" in doc or f'"{name}"' in doc, name


# ---- no import circle among hade's modules ---------------------------------------------------------------
def _type_checking_lines(tree: ast.AST) -> set[int]:
    """Lines of the imports under `if TYPE_CHECKING:` (never run: a type-only reference is no dependency)."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            found |= {n.lineno for stmt in node.body for n in ast.walk(stmt)
                      if isinstance(n, (ast.Import, ast.ImportFrom))}
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the hade modules it imports when run (module level and inside functions; not TYPE_CHECKING).
    A name resolves as for the layer check: the module itself if it is one, else the module holding it. The
    parent packages Python runs on the way are not edges (every module would then sit in one circle with
    the package facade)."""
    graph: dict[str, set[str]] = {}
    for path in sorted((root / "hade").rglob("*.py")):
        importer = module_name(path, root)
        skip = _type_checking_lines(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        targets = {_target_layer(e.imported, root)[0] for e in imports_of(path, root) if e.line not in skip}
        graph[importer] = targets - {importer}
    return graph


# (importer, imported) edges left out of the circle check, each with its reason. Keep it empty.
CIRCLE_EXCEPTIONS: dict[tuple[str, str], str] = {}


def import_circle(root: Path, exceptions: dict[tuple[str, str], str] | None = None) -> list[str] | None:
    """One circle of the import graph, as the modules along it (the first named again at the end), or None.
    The edges in `exceptions` are left out."""
    from graphlib import CycleError, TopologicalSorter

    graph = import_graph(root)
    for importer, imported in exceptions or {}:
        graph.get(importer, set()).discard(imported)
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as e:
        return list(reversed(e.args[1]))  # graphlib lists it against the edges' direction
    return None


def test_no_import_circle():
    circle = import_circle(SRC, CIRCLE_EXCEPTIONS)
    assert circle is None, "import circle: " + " -> ".join(circle or [])


def test_circle_exceptions_still_exist_and_say_why():
    graph = import_graph(SRC)
    for (importer, imported), reason in CIRCLE_EXCEPTIONS.items():
        assert reason.strip() and imported in graph.get(importer, set()), (importer, imported)


def _circle_along_edges(root: Path, modules: set[str]) -> None:
    circle = import_circle(root)
    graph = import_graph(root)
    assert circle is not None and set(circle) == modules and circle[0] == circle[-1], circle
    assert all(b in graph[a] for a, b in zip(circle, circle[1:])), circle  # each imports the next


def test_circle_check_on_planted_code(tmp_path):
    assert import_circle(_tree(tmp_path, CLEAN)) is None
    root = _tree(tmp_path, {**CLEAN, "hade/errors.py": "def f():\n    from hade.models.factory import g\n"})
    _circle_along_edges(root, {"hade.errors", "hade.models.factory"})
    assert import_circle(root, {("hade.errors", "hade.models.factory"): "planted"}) is None
    # three modules, through the package facade
    root = _tree(tmp_path, {**CLEAN, "hade/errors.py": "", "hade/models/factory.py": "def f():\n    import hade\n"})
    _circle_along_edges(root, {"hade", "hade.checkpoint", "hade.models.factory"})
    typed = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import hade\n"
    assert import_circle(_tree(tmp_path, {**CLEAN, "hade/models/factory.py": typed})) is None


# ---- windowing and the folder scan sit below both eval and index -------------------------------------------
def test_eval_imports_nothing_from_index():
    """Evaluation and the search index share the window grid and the folder scan through hade.data; eval does
    not reach into the index (so it needs no layer above index)."""
    found = [f"{p.relative_to(SRC)}:{e.line}: {e.imported}" for p in sorted((SRC / "hade" / "eval").rglob("*.py"))
             for e in imports_of(p, SRC) if _within(_target_layer(e.imported, SRC)[0], "hade.index")]
    assert found == []


def test_index_windows_re_exports_the_data_implementations():
    from hade.data import scan, windows
    from hade.index import windows as index_windows

    for name in ("scan_audio", "scan_folder", "window_bounds", "resolve_window", "window_batch", "window_batches",
                 "StreamWindows"):
        assert getattr(index_windows, name) is getattr(scan if name.startswith("scan") else windows, name), name


# ---- the index meta is a typed record, its codec state has one reader (docs/index-map.md) --------------
# string-key access to a `meta` dict: meta.get("x"), meta["x"], store.meta()["x"], plan.meta.get(...)
META_KEY_ACCESS = re.compile(r"\bmeta(\(\))?(\.get\(|\[)")
# the index meta's own door: Store reads and writes it, IndexMeta.from_dict upgrades an older index's dict
META_DOOR = {"hade/index/store/database.py", "hade/index/meta.py"}
# modules whose `meta` is another record than the index's, each with what it is
OTHER_META = {
    "hade/data/packed/shards.py": "a packed shard's header (format, version, sample rate), checked as it is read",
    "hade/data/packed/writer.py": "a packing worker's report (clips, problems) handed back to the writer",
    "hade/apps/compare.py": "a run's eval.json, whichever hade version wrote it",
}
# reads of the token codec state (`meta.token_codec`, `CodecState`) outside its record's module
CODEC_STATE_ACCESS = re.compile(r"\bmeta(\(\))?\.token_codec\b|\bCodecState\b")
# info.py only carries the state compression.py hands it (`IndexInfo.token_codec`); it reads none of it
CODEC_STATE_DOOR = {"hade/index/meta.py", "hade/index/compression.py", "hade/index/info.py"}


def _code_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of the lines of a file that are not imports."""
    return [(n, line) for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if not line.lstrip().startswith(("import ", "from "))]


def meta_key_access(root: Path) -> list[str]:
    """'path:line' of every string-key access to a meta dict outside the index meta's door and the modules
    whose meta is another record."""
    found = []
    for path in sorted((root / "hade").rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel not in META_DOOR and rel not in OTHER_META:
            found += [f"{rel}:{n}" for n, line in _code_lines(path) if META_KEY_ACCESS.search(line)]
    return found


def codec_state_readers(root: Path) -> set[str]:
    """The modules that read the token codec state themselves."""
    return {path.relative_to(root).as_posix() for path in (root / "hade").rglob("*.py")
            if any(CODEC_STATE_ACCESS.search(line) for _, line in _code_lines(path))}


def test_the_index_meta_is_read_by_field_only():
    assert meta_key_access(SRC) == []
    for rel, what in OTHER_META.items():
        assert what.strip() and (SRC / rel).is_file(), rel


def test_the_codec_state_has_one_reader():
    assert codec_state_readers(SRC) <= CODEC_STATE_DOOR
    assert "hade/index/compression.py" in codec_state_readers(SRC)


def test_meta_checks_on_planted_code(tmp_path):
    root = _tree(tmp_path, {"hade/index/a.py": "x = store.meta()['repr_spec']\ny = self.meta.get('head')\n",
                            "hade/index/b.py": "from hade.index.meta import CodecState\nz = meta.repr_spec\n",
                            "hade/index/c.py": "f = store.meta().token_codec.factory\n",
                            "hade/index/store/database.py": "q = meta['x']\n"})
    assert meta_key_access(root) == ["hade/index/a.py:1", "hade/index/a.py:2"]
    assert codec_state_readers(root) == {"hade/index/c.py"}



# ---- state that crosses a module boundary is a typed record, not a dict read by string keys ------------
# Public library functions that still answer a dict of mixed values (`dict[str, Any]`, or a bare `dict`),
# each with its reason. `to_dict` / `state_dict` (a record's or a module's serialised form) are not counted;
# nor is a mapping of one value type keyed by names (`dict[str, torch.Tensor]`: a head's parts, losses).
RECORD_EXCEPTIONS = {
    "hade.checkpoint:load_train_state": "torch's saved training state (optimiser and scheduler state dicts), "
                                        "its keys checked on load (TRAIN_STATE_KEYS)",
    "hade.models.convert:extract_state_dict": "a foreign checkpoint's state dict",
    "hade.models.convert:read_checkpoint": "a foreign checkpoint file's contents",
    "hade.models.convert_hf:read_hf_weights": "a Hugging Face folder's state dict",
    "hade.models.convert_full:infer_audio_overrides": "values for ModelConfig.audio_overrides, a dict by design",
    "hade.models.convert_hf:hf_audio_overrides": "values for ModelConfig.audio_overrides, a dict by design",
    "hade.models.convert_full:infer_text_config": "a transformers config (its own dict form)",
    "hade.models.convert_hf:hf_text_config": "a transformers config (its own dict form)",
    "hade.models.encoders.configs:EncoderConfig.geometry": "the weight-shaping fields, compared as a whole",
    "hade.models.onnx_export:OnnxExport.metadata": "the JSON written as onnx.json",
    "hade.models.encoders.htsat:HTSATConfig.geometry": "the weight-shaping fields, compared as a whole",
    "hade.data.dataset:collate": "a DataLoader batch: torch's collate convention, keyed by the item's fields",
    "hade.data.packed.shards:read_marker": "the parsed hade-packed.json, checked field by field on read",
    "hade.eval.metrics:t2a_metrics": "one direction's row, keyed by metric name (which ks and mAP cut-off were "
                                     "asked for), with the tie rule for a caller of one direction",
    "hade.eval.metrics:a2t_metrics": "one direction's row, keyed by metric name (as t2a_metrics)",
    "hade.eval.relevance:metrics_from_ranks": "the multi-relevance T2A row, keyed by metric name",
    "hade.eval.relevance:multi_relevance_metrics": "the multi-relevance T2A row, keyed by metric name, with its "
                                                   "tie rule and annotation source",
}
SERIALISERS = ("to_dict", "state_dict")


def _mixed_dict(annotation: ast.expr) -> bool:
    text = ast.unparse(annotation).replace(" ", "")
    return text.startswith("dict[str,Any]") or text in ("dict", "dict|None", "Optional[dict]")


def mixed_dict_returns(root: Path) -> set[str]:
    """`module:qualname` of the public library functions (and those of the experiments, whose modules hand
    their reports to each other and to the commands) annotated to return `dict[str, Any]` or a bare `dict`
    (or either `| None`)."""
    found = set()
    for path in sorted((root / "hade").rglob("*.py")):
        mod = module_name(path, root)
        if layer(mod) == "app" and not _within(mod, "hade.experiments"):
            continue

        def walk(node: ast.AST, prefix: str) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.ClassDef) and not child.name.startswith("_"):
                    walk(child, f"{prefix}{child.name}.")
                elif (isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) and child.returns is not None
                      and not child.name.startswith("_") and child.name not in SERIALISERS
                      and _mixed_dict(child.returns)):
                    found.add(f"{mod}:{prefix}{child.name}")

        walk(ast.parse(path.read_text(encoding="utf-8")), "")
    return found


def test_library_functions_answer_typed_records():
    assert mixed_dict_returns(SRC) - set(RECORD_EXCEPTIONS) == set()


def test_record_exceptions_still_exist_and_say_why():
    assert set(RECORD_EXCEPTIONS) <= mixed_dict_returns(SRC)
    assert all(why.strip() for why in RECORD_EXCEPTIONS.values())


def test_record_check_on_planted_code(tmp_path):
    root = _tree(tmp_path, {"hade/__init__.py": "", "hade/index/__init__.py": "",
                            "hade/index/thing.py": "from typing import Any\n"
                            "def report() -> dict[str, Any]: ...\n"
                            "def counts() -> dict[str, int]: ...\n"
                            "def loose() -> dict: ...\n"
                            "def _inner() -> dict[str, Any]: ...\n"
                            "class Rec:\n    def to_dict(self) -> dict[str, Any]: ...\n"
                            "    def info(self) -> dict[str, Any] | None: ...\n",
                            "hade/apps/__init__.py": "", "hade/apps/cmd.py": "def run() -> dict[str, Any]: ...\n",
                            "hade/experiments/__init__.py": "",
                            "hade/experiments/study.py": "def report() -> dict[str, Any]: ...\n"})
    assert mixed_dict_returns(root) == {"hade.index.thing:report", "hade.index.thing:loose", "hade.index.thing:Rec.info",
                                        "hade.experiments.study:report"}
