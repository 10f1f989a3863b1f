"""The package's layout holds: no import circle, command modules independent, layers downward.

The graph counts every ``import`` in a module, at the top and inside functions (lazy imports
close a circle as surely as eager ones). ``from a.b import c`` is an edge to the module a.b.c when
it is one, else to a.b (a package's ``__init__`` when a.b is a package), as import-linter counts.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cema_cli"
COMMAND_MODULES = {"cema_cli.cli.run", "cema_cli.cli.sweep", "cema_cli.cli.results", "cema_cli.cli.corrupt",
                   "cema_cli.cli.catalog", "cema_cli.cli.serve"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path, name: str) -> set[str]:
    """Dotted names a module imports: ``from a.b import c`` gives a.b.c (a module, or a name in a.b)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for dotted in imported_names(path, name):
            while dotted and dotted not in modules:  # a.b.func -> a.b
                dotted = dotted.rpartition(".")[0]
            if dotted and dotted != name:
                targets.add(dotted)
        graph[name] = targets
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_circle_finder_sees_a_circle() -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_the_import_graph_has_no_circle() -> None:
    assert circles(import_graph()) == []


def test_command_modules_never_import_each_other() -> None:
    graph = import_graph()
    crossings = {(m, t) for m in COMMAND_MODULES for t in graph[m] if t in COMMAND_MODULES}
    assert crossings == set()


def test_layers_import_downward_only() -> None:
    """Nothing below the CLI imports it; strategies, data, models and corruptions never import the
    run, link or results packages (they receive what they need)."""
    graph = import_graph()
    upward = {(m, t) for m, targets in graph.items() for t in targets
              if (t.startswith("cema_cli.cli") and not m.startswith(("cema_cli.cli", "cema_cli.__main__")))
              or (m.split(".")[1] in {"strategies", "data", "models", "corruptions"}
                  and t.split(".")[1:2] and t.split(".")[1] in {"run", "results", "cli"})}
    assert upward == set()


def test_results_and_cli_never_import_torch() -> None:
    """Reports, plots and `cema --help` answer without torch: only the run and the link need it."""
    heavy = {m for m, path in ((module_name(p), p) for p in PACKAGE.rglob("*.py"))
             if m.split(".")[1:2] and m.split(".")[1] in {"results", "cli"}
             and any(n == "torch" or n.startswith("torch.") for n in imported_names(path, m))}
    assert heavy == set()
