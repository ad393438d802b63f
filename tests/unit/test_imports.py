"""No import cycles in the package, counting imports made only for type checking.

A cycle hidden behind ``if TYPE_CHECKING:`` still ties two modules together (neither can be
read, changed or tested without the other) and turns into an ImportError the day the import is
needed at run time, so it counts here like any other import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import fhir_tailor

PACKAGE = Path(fhir_tailor.__file__).parent


def module_names(root: Path) -> dict[str, Path]:
    """Every module under the package folder ``root``, by dotted name."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def import_graph(root: Path) -> dict[str, set[str]]:
    """Which package modules each module imports, wherever the import statement is (module
    level, ``if TYPE_CHECKING:``, inside a function). ``from pkg import name`` depends on the
    module ``pkg.name`` when there is one, else on ``pkg`` itself (its ``__init__``)."""
    modules = module_names(root)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names if alias.name in modules}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    source = node.module or ""
                for alias in node.names:
                    if f"{source}.{alias.name}" in modules:
                        imported.add(f"{source}.{alias.name}")
                    elif source in modules:
                        imported.add(source)
        graph[name] = imported - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as the list of modules along it (first and last the same), or None."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(module: str) -> list[str] | None:
        path.append(module)
        on_path.add(module)
        for target in sorted(graph.get(module, ())):
            if target in on_path:
                return [*path[path.index(target) :], target]
            if target not in done and (cycle := visit(target)):
                return cycle
        on_path.discard(path.pop())
        done.add(module)
        return None

    for module in sorted(graph):
        if module not in done and (cycle := visit(module)):
            return cycle
    return None


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph(PACKAGE)
    assert "fhir_tailor.rules" in graph and "fhir_tailor.web.page" in graph  # it walked them
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or ())


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_a_cycle_through_a_type_checking_import_is_found(tmp_path: Path) -> None:
    root = tmp_path / "pkg"
    write(root / "__init__.py", "")
    write(root / "a.py", "from .sub.b import B\n")
    write(root / "sub" / "__init__.py", "")
    write(
        root / "sub" / "b.py",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..a import A\nB = 1\n",
    )
    write(root / "c.py", "import pkg.a\n")
    graph = import_graph(root)
    assert graph["pkg.c"] == {"pkg.a"}
    assert find_cycle(graph) == ["pkg.a", "pkg.sub.b", "pkg.a"]


def test_importing_a_name_from_the_package_itself_is_an_edge_to_its_init(tmp_path: Path) -> None:
    root = tmp_path / "pkg"
    write(root / "__init__.py", "from .client import Client\nversion = '1'\n")
    write(root / "client.py", "from pkg import version\nClient = 1\n")
    graph = import_graph(root)
    assert find_cycle(graph) == ["pkg", "pkg.client", "pkg"]


def test_a_package_without_cycles_passes(tmp_path: Path) -> None:
    root = tmp_path / "pkg"
    write(root / "__init__.py", "from .a import A\n")
    write(root / "a.py", "from . import b\nA = b.B\n")
    write(root / "b.py", "B = 1\n")
    assert import_graph(root) == {"pkg": {"pkg.a"}, "pkg.a": {"pkg.b"}, "pkg.b": set()}
    assert find_cycle(import_graph(root)) is None
