"""Size and cyclomatic complexity of every function and method in src/ (radon, a dev extra).

    .venv/bin/python benchmarks/complexity.py [--root src] [--worst 5] [--json]

Prints the number of functions (functions and methods, as `radon cc` lists them; closures count as part
of the function around them), their mean cyclomatic complexity, the worst few, and every function over
the limits of the style guide (tests/test_complexity.py fails on those): more than MAX_LINES lines
(from `def` to its last line, docstring included) or a complexity over MAX_CC. Exit code 1 when any is.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from radon.complexity import cc_visit
from radon.visitors import Function

MAX_LINES = 80
MAX_CC = 25
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class FunctionSize:
    """One function or method: where it is, how long, how complex."""

    path: str  # relative to the repository root
    name: str  # Class.method or function
    line: int
    lines: int
    complexity: int

    def over_limits(self) -> bool:
        return self.lines > MAX_LINES or self.complexity > MAX_CC

    def describe(self) -> str:
        return f"{self.path}:{self.line} {self.name}: {self.lines} lines, complexity {self.complexity}"


def measure_file(path: Path, root: Path = ROOT) -> list[FunctionSize]:
    """Every function and method of one Python file."""
    rel = path.resolve().relative_to(root.resolve()).as_posix() if path.resolve().is_relative_to(root.resolve()) \
        else str(path)
    out = []
    for block in cc_visit(path.read_text(encoding="utf-8")):
        if isinstance(block, Function):
            name = f"{block.classname}.{block.name}" if block.classname else block.name
            out.append(FunctionSize(rel, name, block.lineno, block.endline - block.lineno + 1, block.complexity))
    return out


def measure(src: Path) -> list[FunctionSize]:
    """Every function and method of the .py files under `src`, in path order."""
    return [f for path in sorted(src.rglob("*.py")) for f in measure_file(path)]


def summary(functions: list[FunctionSize], worst: int = 5) -> dict:
    """{"functions", "mean_complexity", "worst": [...], "over_limits": [...]} (dicts of FunctionSize)."""
    by_cc = sorted(functions, key=lambda f: (-f.complexity, -f.lines, f.path, f.line))
    return {"functions": len(functions),
            "mean_complexity": round(statistics.fmean(f.complexity for f in functions), 2) if functions else 0.0,
            "limits": {"lines": MAX_LINES, "complexity": MAX_CC},
            "worst": [asdict(f) for f in by_cc[:worst]],
            "over_limits": [asdict(f) for f in functions if f.over_limits()]}


def format_summary(s: dict) -> str:
    lines = [f"{s['functions']} functions, mean cyclomatic complexity {s['mean_complexity']:.2f}",
             f"worst {len(s['worst'])}:"]
    lines += [f"  {FunctionSize(**f).describe()}" for f in s["worst"]]
    over = s["over_limits"]
    lines.append(f"over {MAX_LINES} lines or complexity {MAX_CC}: {len(over) or 'none'}")
    lines += [f"  {FunctionSize(**f).describe()}" for f in over]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT / "src", help="folder to measure (default: src)")
    parser.add_argument("--worst", type=int, default=5, help="how many of the most complex functions to show")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    s = summary(measure(args.root), args.worst)
    print(json.dumps(s, indent=2) if args.json else format_summary(s))
    return 1 if s["over_limits"] else 0


if __name__ == "__main__":
    sys.exit(main())
