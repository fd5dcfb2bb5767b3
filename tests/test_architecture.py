"""The shape of the house: imports point one way, with no cycle, and probes never reaches into analysis."""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("probes", "analysis")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    return {module_name(path, root): path for package in packages for path in sorted((root / package).rglob("*.py"))}


def imports_of(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """Project modules that `name` imports anywhere in its body (functions included).

    `from a.b import c` counts as an import of `a.b.c` when that is a module, else of `a.b`.
    """
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {target for target in found if target in modules and target != name}


def import_graph(root: Path, packages: Iterable[str]) -> dict[str, set[str]]:
    modules = project_modules(root, packages)
    return {name: imports_of(path, name, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
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


def test_no_import_cycle() -> None:
    assert cycles(import_graph(ROOT, PACKAGES)) == []


def test_probes_never_imports_analysis() -> None:
    graph = import_graph(ROOT, PACKAGES)
    backward = sorted(
        (source, target)
        for source, targets in graph.items()
        if source.startswith("probes")
        for target in targets
        if target.startswith("analysis")
    )
    assert backward == []


def test_no_search_path_edits() -> None:
    """Modules are found by the installed package, never by editing sys.path at run time."""
    offenders = [
        name
        for name, path in project_modules(ROOT, PACKAGES).items()
        if "sys.path.insert" in path.read_text(encoding="utf-8") or "sys.path.append" in path.read_text("utf-8")
    ]
    assert offenders == []


@pytest.fixture
def tangled(tmp_path: Path) -> Path:
    """A package with a two-module cycle (through a function-level import) and a back door."""
    (tmp_path / "probes").mkdir()
    (tmp_path / "analysis").mkdir()
    (tmp_path / "probes" / "__init__.py").write_text("")
    (tmp_path / "probes" / "a.py").write_text("from probes.b import thing\n")
    (tmp_path / "probes" / "b.py").write_text("def thing():\n    from probes import a\n    return a\n")
    (tmp_path / "probes" / "c.py").write_text("from . import a\nimport analysis.report\n")
    (tmp_path / "analysis" / "__init__.py").write_text("")
    (tmp_path / "analysis" / "report.py").write_text("from probes.c import x\n")
    return tmp_path


def test_the_checks_catch_a_tangle(tangled: Path) -> None:
    graph = import_graph(tangled, PACKAGES)
    assert graph["probes.c"] == {"probes.a", "analysis.report"}
    assert sorted(cycles(graph)) == [["analysis.report", "probes.c"], ["probes.a", "probes.b"]]


def test_the_public_api_resolves() -> None:
    import probes

    for name in probes.PUBLIC_API:
        assert getattr(probes, name) is not None, name
    with pytest.raises(AttributeError):
        _ = probes.no_such_name


def test_every_subcommand_has_a_config_and_a_runner() -> None:
    from probes.cli import SUBCOMMANDS, load_command

    for name in SUBCOMMANDS:
        command = load_command(name)
        assert callable(command.run), name
        assert hasattr(command.config, "__dataclass_fields__"), name
