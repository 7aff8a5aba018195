"""No import cycles inside the `inspo` package, found statically (`ast`) so that imports inside functions count too.

The graph has one node per module of `python/inspo` (a package's `__init__.py` is the package's node). An edge
A -> B is every import in A (at module level, in a function or class body, in a `try` or an `if`) that makes
Python run B:

- `import inspo.a.b`, `from inspo.a.b import x`, `from .b import x` (relative imports resolved against A's
  package): B = `inspo.a.b`. `from inspo.a import b`: B = `inspo.a` when `inspo/a/__init__.py` binds `b` itself,
  else `b` is a submodule and B = `inspo.a.b` (a compiled extension such as `inspo._C` is a node without edges).
- Parent packages: importing `inspo.a.b` runs `inspo/a/__init__.py` first, so it is an edge to `inspo.a` too,
  except when `inspo.a` is a package that A itself is inside: that package has already started running before A
  did (Python imports a module's packages first), so the implicit edge is no import A makes. An explicit
  `from inspo.a import x` inside `inspo/a/` is an edge to `inspo.a` like any other (it is the cycle that a
  package's `__init__` importing its submodules, which import names back from it, makes).
- Imports under `if TYPE_CHECKING:` never run and are left out.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "python" / "inspo"


def _module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(package: Path) -> dict[str, Path]:
    """Every module of the package: Python files and compiled extensions (`_C.<abi>.so`, a node without edges)."""
    found = {_module_name(p, package): p for p in sorted(package.rglob("*.py"))}
    for ext in sorted(package.rglob("*.so")) + sorted(package.rglob("*.pyd")):
        found.setdefault(_module_name(ext.with_name(ext.name.split(".")[0] + ".py"), package), ext)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement of the tree, at any depth, except those under `if TYPE_CHECKING:`."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _bound_names(path: Path) -> set[str]:
    """The names that a module's own top-level code binds (definitions, assignments, imports)."""
    if path.suffix != ".py":
        return set()
    names: set[str] = set()
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
    return names


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:k]) for k in range(1, len(parts))]


def import_graph(package: Path = PACKAGE) -> dict[str, dict[str, int]]:
    """module -> {imported module: line of the first import that makes it run}, for the package in `package`."""
    root = package.name
    modules = _modules(package)
    graph: dict[str, dict[str, int]] = {name: {} for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        own_package = name if is_package else name.rpartition(".")[0]
        inside = set(_ancestors(name)) | ({name} if is_package else set())  # packages already running
        if path.suffix != ".py":
            continue
        for node in _imports(ast.parse(path.read_text(), str(path))):
            explicit: list[str] = []
            if isinstance(node, ast.Import):
                explicit = [alias.name for alias in node.names]
            else:
                if node.level:
                    base = own_package.split(".")
                    base = base[:len(base) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                # `from P import x` takes x from P's namespace when P's own code binds x (an edge to P);
                # otherwise, for a package P, x is a submodule (a file here, or a compiled extension such as `_C`,
                # which a source checkout may lack), and P is only its parent.
                bound = _bound_names(modules[target]) if target in modules else set()
                package = target in modules and modules[target].name == "__init__.py"
                submodules = [f"{target}.{a.name}" for a in node.names
                              if a.name not in bound and f"{target}.{a.name}" in modules]
                from_target = [a for a in node.names if a.name in bound or not package]
                explicit = ([target] if from_target else []) + submodules
            for target in explicit:
                if target != root and not target.startswith(root + "."):
                    continue
                implicit = [a for a in _ancestors(target) if a not in inside]
                for imported in [target, *implicit]:
                    if imported in modules and imported != name:
                        graph[name].setdefault(imported, node.lineno)
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The cycles of the graph, as closed paths of module names: for every module of a strongly connected component
    with more than one module (Tarjan's algorithm), a shortest path from it back to itself; each cycle once."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    found: list[list[str]] = []
    seen: set[frozenset[str]] = set()
    for component in components:
        members = set(component)
        for start in component:
            cycle = _shortest_cycle(graph, start, members)
            if frozenset(cycle) not in seen:
                seen.add(frozenset(cycle))
                found.append(cycle)
    return found


def _shortest_cycle(graph: dict[str, dict[str, int]], start: str, members: set[str]) -> list[str]:
    """Breadth-first search from `start` back to it, through `members` only (its strongly connected component)."""
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v]):
                if w == start:
                    return paths[v] + [start]
                if w in members and w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"{start} is in a strongly connected component but on no cycle")


def _describe(graph: dict[str, dict[str, int]], cycle: list[str]) -> str:
    steps = [f"{a} (line {graph[a][b]}) -> {b}" for a, b in zip(cycle, cycle[1:])]
    return "; ".join(steps)


def test_graph_sees_imports_inside_functions_and_relative_ones() -> None:
    graph = import_graph()
    assert "inspo.training" in graph["inspo"]  # a package __init__ is a node
    assert "inspo.envs.smax" in graph["inspo.envs"]  # imported inside a function
    assert "inspo.algos.networks" in graph["inspo.training"] or "inspo.policy" in graph["inspo.training"]


def test_graph_finds_the_cycles_of_a_small_package(tmp_path: Path) -> None:
    files = {
        "__init__.py": "from pkg.a import f\n",
        "a.py": "def f():\n    from . import b\n",  # inside a function, relative
        "b.py": "import pkg.a\n",
        "base.py": "X = 1\n",
        "sub/__init__.py": "from pkg.sub.leaf import Leaf\n",
        "sub/leaf.py": "from pkg.sub import helper\nfrom pkg.base import X\n",  # helper: a submodule
        "sub/helper.py": "from pkg.sub import Leaf\n",  # a name the package binds: the package runs
        "ext.py": "from pkg import _C, base\n",  # _C: a compiled submodule, absent from a source checkout
        "c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.d\n",
        "d.py": "import pkg.c\n",
    }
    for name, text in files.items():
        (tmp_path / "pkg" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "pkg" / name).write_text(text)
    graph = import_graph(tmp_path / "pkg")
    assert graph["pkg.sub.leaf"] == {"pkg.sub.helper": 1, "pkg.base": 2}  # pkg.sub and pkg are already running
    assert graph["pkg.ext"] == {"pkg.base": 1}
    assert sorted(map(tuple, cycles(graph))) == [("pkg.a", "pkg.b", "pkg.a"),
                                                 ("pkg.sub", "pkg.sub.leaf", "pkg.sub.helper", "pkg.sub")]


def test_no_import_cycles() -> None:
    graph = import_graph()
    found = cycles(graph)
    assert not found, "import cycles in python/inspo:\n" + "\n".join(_describe(graph, c) for c in found)
