"""The figures of docs/index-map.md: import circles, upward imports, codec state readers, long index modules.

    .venv/bin/python benchmarks/index_map.py [--root src] [--json]

Reads the source only (AST; nothing is imported). An import is every `hade` import of a module, at module
level or inside a function; `from pkg import name` counts as an import of the submodule pkg.name when that
is a module, else of pkg. Circles are the strongly connected components of more than one module. The
application modules are those of tests/test_architecture.py (hade.cli, hade.apps, hade.serve, hade.demo,
hade.experiments, hade.train.__main__); the codec state readers are the modules that touch
`meta.token_codec` or `CodecState` outside an import line, besides hade/index/meta.py where the record is
defined (tests/test_architecture.py checks the same). Long modules are those of hade.index over
MODULE_LINES lines (STYLE.md: "Modules stay under ~400 lines"), with their line counts.
"""
from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APPLICATIONS = ("hade.cli", "hade.apps", "hade.serve", "hade.demo", "hade.experiments", "hade.train.__main__")
CODEC_STATE_ACCESS = re.compile(r"\bmeta(\(\))?\.token_codec\b|\bCodecState\b")
CODEC_STATE_RECORD = "hade/index/meta.py"  # where CodecState is defined (and turned into JSON for Store)
MODULE_LINES = 400  # STYLE.md's house limit for a module


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def modules(src: Path) -> dict[str, Path]:
    """{dotted name: file} of every module under src/hade."""
    out = {}
    for path in sorted((src / "hade").rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The hade modules `name` imports when it runs (resolved to known modules)."""
    out = set()
    package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    # imports under `if TYPE_CHECKING:` never run: a type-only reference is no dependency (as the test holds)
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                   for stmt in node.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".") if package else name.split(".")[:-1]
                base = ".".join(parts[:len(parts) - (node.level - 1)] + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start), on.add(start)
        while work:
            v, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child), on.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on:
                    low[v] = min(low[v], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return sorted(out)


def report(src: Path) -> dict:
    known = modules(src)
    graph = {name: imports(name, path, known) for name, path in known.items()}
    # a package's __init__ re-exporting its submodules is not a circle with them: drop module -> own package
    graph = {name: {t for t in ts if not _within(name, t) or t == name} for name, ts in graph.items()}
    is_app = lambda m: any(_within(m, a) for a in APPLICATIONS)  # noqa: E731
    upward = sorted(f"{m} -> {t}" for m, ts in graph.items() if not is_app(m) for t in ts if is_app(t))
    readers = sorted(rel for m in known if (rel := known[m].relative_to(src).as_posix()) != CODEC_STATE_RECORD
                     and any(CODEC_STATE_ACCESS.search(line) for line in known[m].read_text().splitlines()
                            if not line.lstrip().startswith(("import ", "from "))))
    eval_index = sorted(f"{m} -> {t}" for m, ts in graph.items() if _within(m, "hade.eval")
                        for t in ts if _within(t, "hade.index"))
    long_modules = {rel: n for m in known if _within(m, "hade.index")
                    if (n := len(known[m].read_text(encoding="utf-8").splitlines())) > MODULE_LINES
                    for rel in [known[m].relative_to(src).as_posix()]}
    return {"modules": len(known), "circles": circles(graph), "library_to_application": upward,
            "codec_state_readers": readers, "eval_imports_index": eval_index,
            "index_modules_over_limit": dict(sorted(long_modules.items()))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT / "src")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    r = report(args.root)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    print(f"modules: {r['modules']}")
    print(f"import circles: {len(r['circles'])}" + "".join(f"\n  {' <-> '.join(c)}" for c in r["circles"]))
    print(f"library -> application imports: {len(r['library_to_application'])}"
          + "".join(f"\n  {e}" for e in r["library_to_application"]))
    print(f"modules reading the token codec state (besides {CODEC_STATE_RECORD}, its record): "
          f"{len(r['codec_state_readers'])}"
          + "".join(f"\n  {m}" for m in r["codec_state_readers"]))
    print(f"hade.eval -> hade.index imports: {len(r['eval_imports_index'])}"
          + "".join(f"\n  {e}" for e in r["eval_imports_index"]))
    print(f"hade.index modules over {MODULE_LINES} lines: {len(r['index_modules_over_limit'])}"
          + "".join(f"\n  {m}: {n}" for m, n in r["index_modules_over_limit"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
