"""The code's shape: one module knows the run directory's layout, and no import cycles."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "tasks", "analysis", "annotation")
FOLDERS = ("scores", "generations", "cells", "checkpoints", "annotation", "report", "bench")
# a folder name as a path component: `/ "cells"`, `"cells/..."`, f"scores/{key}..."
LAYOUT = re.compile(r"""(/\s*f?["'](%s)["'])|(f?["'](%s)/)""" % ("|".join(FOLDERS), "|".join(FOLDERS)))


def _sources(*tops: str):
    for top in tops:
        yield from sorted((ROOT / top).rglob("*.py"))


def test_only_the_store_spells_the_run_directory_layout():
    offenders = []
    for path in _sources(*PACKAGES, "benchmarks"):
        if path == ROOT / "harness" / "store.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if LAYOUT.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_the_layout_check_catches_a_path_literal():
    assert LAYOUT.search('root / "scores" / f"{key}.parquet"')
    assert LAYOUT.search('rel = f"generations/{info.key}.jsonl"')
    assert not LAYOUT.search('manifest.get("cells", {})')


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """Project modules ``path`` imports, at module level or inside a function (a deferred
    import still ties the two modules together)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def test_no_import_cycles():
    paths = {_module_name(p): p for p in _sources(*PACKAGES)}
    modules = set(paths)
    graph = {name: _imports(path, name, modules) for name, path in paths.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]) if nxt in stack else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "\n".join(cycles)
