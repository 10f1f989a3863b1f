"""The package's shape (not a test): modules with line counts, function sizes, import circles.

    python benchmarks/code_shape.py                 # this checkout
    python benchmarks/code_shape.py --root OTHER    # another checkout, e.g. before a refactor

Function size is the lines of a ``def`` (decorators excluded, docstring included), over every
function and method of ``cema_cli``. Circles use the graph of ``tests/test_architecture.py``
(every import, lazy ones too).
"""

from __future__ import annotations

import argparse
import ast
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import test_architecture as graph  # noqa: E402 - the one definition of the import graph


def function_sizes(package: Path) -> list[int]:
    sizes = []
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                sizes.append(node.end_lineno - node.lineno + 1)
    return sorted(sizes)


def print_tree(package: Path) -> None:
    for path in sorted(package.rglob("*.py"), key=lambda p: (len(p.relative_to(package).parts) > 1, str(p))):
        print(f"{len(path.read_text().splitlines()):6d}  {path.relative_to(package.parent)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--no-tree", action="store_true")
    args = parser.parse_args()
    package = args.root / "cema_cli"
    graph.PACKAGE = package
    if not args.no_tree:
        print_tree(package)
    sizes = function_sizes(package)
    p90 = sizes[int(0.9 * (len(sizes) - 1))]
    print(f"functions {len(sizes)}: median {statistics.median(sizes):g} lines, p90 {p90}, max {sizes[-1]}")
    found = graph.circles(graph.import_graph())
    print(f"import circles: {len(found)}" + "".join(f"\n  {len(c)} modules: {', '.join(c)}" for c in found))


if __name__ == "__main__":
    main()
