"""No import cycle among lithovae's modules. Every import counts, at module level or inside a
function (a function-level import hides a cycle until the function runs), and importing
``a.b.c`` imports the packages ``a.b`` and ``a`` (their ``__init__``) first."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import lithovae

PACKAGE_DIR = Path(lithovae.__file__).parent


def _modules(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (a package by its __init__)."""
    found = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imported(node: ast.AST, module: str, is_package: bool, known: dict[str, Path]) -> list[str]:
    """The names an import statement imports, absolute: ``from a import b`` imports module
    ``a.b`` where there is one, else ``a``."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        anchor = module.split(".") if is_package else module.split(".")[:-1]
        anchor = anchor[:len(anchor) - node.level + 1]
        base = ".".join([*anchor, base] if base else anchor)
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports, anywhere in its file."""
    known = _modules(package_dir)
    graph: dict[str, set[str]] = {name: set() for name in known}
    for module, path in known.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            for name in _imported(node, module, is_package, known):
                while name and name not in known:  # an attribute of a module: the module
                    name = name.rpartition(".")[0]
                if not name:
                    continue
                # the module and the packages above it that the importer is not inside
                while name:
                    if name in known and name != module and not module.startswith(name + "."):
                        graph[module].add(name)
                    name = name.rpartition(".")[0]
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a path back to its start) through each strongly connected group of modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    found = []
    for group in groups:
        start = min(group)
        paths = {start: [start]}
        queue = [start]
        while queue:  # the shortest way back to start inside the group
            node = queue.pop(0)
            for nxt in sorted(graph[node] & group):
                if nxt == start:
                    found.append(paths[node] + [start])
                    queue = []
                    break
                if nxt not in paths:
                    paths[nxt] = paths[node] + [nxt]
                    queue.append(nxt)
    return found


def _package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_the_graph_sees_imports_inside_functions_relative_ones_and_package_inits(tmp_path):
    pkg = _package(tmp_path, {
        "__init__.py": "",
        "a.py": "import os\nfrom pkg.sub import helper\n",
        "sub/__init__.py": "from pkg.sub.helper import f\n",
        "sub/helper.py": "def f():\n    from .. import b\n",
        "b.py": "def g():\n    from pkg import a\n",
        "c.py": "from pkg.sub.helper import f\n",
    })
    graph = import_graph(pkg)
    assert graph["pkg.a"] == {"pkg.sub", "pkg.sub.helper"}
    assert graph["pkg.sub"] == {"pkg.sub.helper"}  # its own package is not an edge
    assert graph["pkg.sub.helper"] == {"pkg.b"}
    assert graph["pkg.c"] == {"pkg.sub", "pkg.sub.helper"}  # the package's __init__ runs first
    (cycle,) = cycles(graph)
    assert cycle == ["pkg.a", "pkg.sub.helper", "pkg.b", "pkg.a"]  # b imports a inside a function
    (pkg / "b.py").write_text("def g():\n    import os\n")
    assert cycles(import_graph(pkg)) == []


def test_no_import_cycle_among_lithovaes_modules():
    found = cycles(import_graph(PACKAGE_DIR))
    assert not found, "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in found)


# -- imports at the top, unless start-up time needs otherwise, said where ------------------------
REASON = re.compile(r"#.*(not at the top|imported inside)")
STDLIB = frozenset(sys.stdlib_module_names)


def function_imports(source: str) -> list[tuple[int, str]]:
    """(line, module) of each import inside a function."""
    found = []
    for fn in ast.walk(ast.parse(source)):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    found += [(node.lineno, alias.name) for alias in node.names]
                elif isinstance(node, ast.ImportFrom):
                    found.append((node.lineno, "." * node.level + (node.module or "")))
    return found


def unexplained_function_imports(source: str) -> list[str]:
    """A module that imports inside functions says why in a comment (``# not at the top: ...``);
    the standard library, which costs nothing to import, belongs at the top anyway."""
    imports = function_imports(source)
    found = [f"{line}: {module} (standard library)" for line, module in imports
             if module.split(".")[0] in STDLIB]
    if imports and not REASON.search(source):
        found += [f"{line}: {module} (no '# not at the top: <why>' comment in the module)" for line, module in imports]
    return found


def test_the_import_rule_finds_an_unexplained_or_stdlib_import_inside_a_function():
    lazy = "def f():\n    import torch\n"
    assert unexplained_function_imports(lazy) == ["2: torch (no '# not at the top: <why>' comment in the module)"]
    assert unexplained_function_imports("# not at the top: torch takes seconds\n" + lazy) == []
    assert unexplained_function_imports("# not at the top: x\ndef f():\n    import json\n") == ["3: json (standard library)"]
    assert unexplained_function_imports("import json\n") == []


def test_imports_sit_at_the_top_unless_the_module_says_why():
    found = {str(path.relative_to(PACKAGE_DIR.parent)): bad for path in sorted(PACKAGE_DIR.rglob("*.py"))
             if (bad := unexplained_function_imports(path.read_text(encoding="utf-8")))}
    assert not found, found
