"""The package's shape: no import cycle among its modules, no module over 500 lines."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "convprop"
MAX_LINES = 500


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The convprop modules ``path`` imports, at any depth of the file (a function-level
    import still makes a cycle at run time).  ``from convprop.x import y`` counts as an
    import of ``convprop.x.y`` when that is a module, else of ``convprop.x``."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules
                     else node.module for a in node.names]
        else:
            continue
        out |= {n for n in names if n in modules}
    return out


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    return {m: imports_of(p, modules) - {m} for m, p in files.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph as a list of nodes, or None.  A package's own
    ``__init__`` importing its submodules is not a cycle with them (Python imports the
    package first): edges from a package to the modules inside it are left out."""
    def inside(a: str, b: str) -> bool:
        return b.startswith(a + ".")

    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if inside(node, nxt):
                continue
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if state.get(nxt) is None:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if state.get(node) is None:
            found = visit(node)
            if found:
                return found
    return None


def test_the_cycle_finder_finds_a_cycle_and_ignores_a_package_init():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"p": {"p.x"}, "p.x": {"p"}}) is None
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_among_the_package_modules():
    edges = graph()
    assert "convprop.training.jobs" in edges and edges["convprop.training.jobs"]
    cycle = find_cycle(edges)
    assert cycle is None, " -> ".join(cycle)


def test_no_module_over_500_lines():
    sizes = {module_name(p): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    big = {m: n for m, n in sizes.items() if n > MAX_LINES}
    assert not big, big


def test_nothing_imports_the_cli():
    edges = graph()
    outside = [m for m in edges if not m.startswith(("convprop.cli", "convprop.__main__"))]
    users = {m for m in outside if any(d.startswith("convprop.cli") for d in edges[m])}
    assert not users, users
