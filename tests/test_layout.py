"""The package layout: floors, import cycles, and the docs images the markdown files link to.

The floors are ``data <- encoders <- index <- recsys <- app``: a module may import its own package and the
packages below it, never one above. Imports are read with ``ast`` (top level and inside functions, relative
imports resolved), so the checks need no heavy dependency and see imports that only run on some code paths.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLOORS = ("data", "encoders", "index", "recsys", "app")


# ----------------------------------------------------------------------------------------------------------
# Import graph
# ----------------------------------------------------------------------------------------------------------

def project_modules(root: Path = ROOT, packages=FLOORS) -> dict[str, Path]:
    """``{dotted module name: file}`` for every ``.py`` file of the given packages (``pkg/__init__.py`` is ``pkg``)."""
    modules = {}
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if "__pycache__" in parts:
                continue
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _relpath(module: str, path: Path) -> str:
    """``encoders/x.py`` for module ``encoders.x`` (``pkg/__init__.py`` for a package)."""
    depth = len(module.split(".")) + (path.name == "__init__.py")
    return "/".join(path.parts[-depth:])


def _ancestors(name: str) -> list[str]:
    """``a.b.c`` -> ``["a", "a.b"]``."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module that ``import name`` loads (the longest project-module prefix), or None."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        candidate = ".".join(parts[:i])
        if candidate in modules:
            return candidate
    return None


def imports_of(module: str, modules: dict[str, Path]) -> list[tuple[str, int]]:
    """``[(imported project module, line)]`` for every import statement anywhere in ``module``.

    ``from pkg import name`` counts as importing ``pkg.name`` when that is a module, else ``pkg``. Importing
    ``a.b`` also runs ``a/__init__.py``, so ``a`` is listed too, unless ``a`` encloses ``module`` itself
    (then it is loaded before ``module`` runs).
    """
    path = modules[module]
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    targets: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                keep = len(package) - (node.level - 1)
                if keep <= 0:
                    raise AssertionError(f"{path}:{node.lineno}: relative import goes above the top package")
                base = ".".join(package[:keep] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        for name in names:
            target = _resolve(name, modules)
            if target is None:
                continue  # standard library or a third-party package
            enclosing = set(_ancestors(module)) | ({module} if is_package else set())
            for t in [*_ancestors(target), target]:
                if t != module and t not in enclosing:
                    targets.append((t, node.lineno))
    return targets


def import_graph(root: Path = ROOT, packages=FLOORS) -> tuple[dict[str, dict[str, int]], dict[str, Path]]:
    """``({module: {imported module: first line}}, modules)`` over the project's packages."""
    modules = project_modules(root, packages)
    graph: dict[str, dict[str, int]] = {}
    for module in modules:
        edges: dict[str, int] = {}
        for target, line in imports_of(module, modules):
            edges.setdefault(target, line)
        graph[module] = edges
    return graph, modules


def upward_imports(graph: dict[str, dict[str, int]], modules: dict[str, Path], packages=FLOORS) -> list[str]:
    """One message per import of a package on a higher floor than the importing module's."""
    floor = {pkg: i for i, pkg in enumerate(packages)}
    found = []
    for module, edges in graph.items():
        for target, line in edges.items():
            if floor[target.split(".")[0]] > floor[module.split(".")[0]]:
                found.append(f"{_relpath(module, modules[module])}:{line}: {module} (floor {module.split('.')[0]}) imports {target} "
                             f"(floor {target.split('.')[0]}, higher)")
    return found


def import_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle ``[m0, m1, ..., m0]`` for every strongly connected group of modules that import each other
    (Tarjan's algorithm, then a shortest cycle through the group's first module)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1 or v in graph.get(v, {}):
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            connect(v)

    return [_cycle_through(group[0], set(group), graph) for group in groups]


def _cycle_through(start: str, members: set[str], graph: dict[str, dict[str, int]]) -> list[str]:
    """A shortest cycle ``[start, ..., start]`` inside ``members`` (breadth-first search)."""
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v]):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [*reversed(path), start]
                if w in members and w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start}")  # pragma: no cover - members is a cycle group


def _describe(cycle: list[str], graph: dict[str, dict[str, int]]) -> str:
    return " -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:])) + f" -> {cycle[-1]}"


def test_no_module_imports_a_higher_floor():
    graph, modules = import_graph()
    assert graph, "no project modules found"
    found = upward_imports(graph, modules)
    assert not found, "imports of a higher floor (data <- encoders <- index <- recsys <- app):\n" + "\n".join(found)


def test_no_import_cycles():
    graph, _ = import_graph()
    cycles = import_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(_describe(c, graph) for c in cycles)


def test_the_checks_see_function_level_relative_and_package_imports(tmp_path):
    """The checker itself, on a small tree: a cycle closed by an import inside a function, a relative import,
    ``from pkg import name`` of a module, and an upward import."""
    files = {
        "data/__init__.py": "",
        "data/a.py": "def f():\n    from .b import g\n",
        "data/b.py": "from data import a\n",
        "data/c.py": "import os\nimport numpy\n",
        "encoders/__init__.py": "from encoders.x import X\n",
        "encoders/x.py": "from data.c import os\n\ndef load():\n    import recsys.r\n",
        "recsys/__init__.py": "",
        "recsys/r.py": "from encoders import X\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    packages = ("data", "encoders", "recsys")
    graph, modules = import_graph(tmp_path, packages)
    assert graph["data.a"] == {"data.b": 2}
    assert graph["data.b"] == {"data.a": 1}
    assert graph["data.c"] == {}
    assert graph["encoders.x"] == {"data": 1, "data.c": 1, "recsys": 4, "recsys.r": 4}
    assert graph["encoders"] == {"encoders.x": 1}
    cycles = {tuple(c) for c in import_cycles(graph)}
    assert ("data.a", "data.b", "data.a") in cycles
    assert ("encoders", "encoders.x", "recsys.r", "encoders") in cycles
    assert len(cycles) == 2
    up = upward_imports(graph, modules, packages)
    assert len(up) == 2 and all("encoders.x (floor encoders) imports recsys" in m for m in up)
    assert up[0].startswith("encoders/x.py:4: ")


# ----------------------------------------------------------------------------------------------------------
# Docs images
# ----------------------------------------------------------------------------------------------------------

IMAGE = re.compile(r"\.(png|jpe?g|gif|svg|webp)$", re.IGNORECASE)


def docs_links(text: str) -> list[str]:
    """``docs/...`` targets of markdown links and images (``![alt](docs/x.png)``, ``[text](docs/y)``) and of
    image paths quoted in backticks (`` `docs/x.png` ``)."""
    links = re.findall(r"\]\(\s*(docs/[^)\s#]+)", text)
    links += [m for m in re.findall(r"`(docs/[^`\s]+)`", text) if IMAGE.search(m)]
    return sorted(set(links))


@pytest.mark.parametrize("doc", ["README.md", "BENCHMARKS.md"])
def test_docs_images_linked_from_markdown_exist(doc):
    links = docs_links((ROOT / doc).read_text(encoding="utf-8"))
    missing = [link for link in links if not (ROOT / link).is_file()]
    assert not missing, f"{doc} links to docs files that do not exist: {missing}"


def test_readme_links_its_screenshot():
    """The link pattern matches the README's image link (so the check above is not vacuous)."""
    assert "docs/app_screenshot.png" in docs_links((ROOT / "README.md").read_text(encoding="utf-8"))
    assert docs_links("![a](docs/x.png) [b](docs/y.md#part) `docs/z.svg` `docs/notes.txt`") == [
        "docs/x.png", "docs/y.md", "docs/z.svg"]
