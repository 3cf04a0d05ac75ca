"""The library's shape, as the README's module map describes it: sub-packages by stage that import one way, no
import circle (imports inside functions count), short functions, and a map that lists every module once."""
from __future__ import annotations

import ast
import re
from pathlib import Path

from support import REPO

SRC = REPO / "src"
PACKAGE = SRC / "emotion"
# The stages in import order: a sub-package may import from those before it, never from those after it.
STAGES = ["common", "data", "model", "evaluation", "training", "runtime", "serving"]
MAX_FUNCTION_LINES = 60


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, dict[str, int]]:
    """{module: {imported project module: line}} for every module of src/, imports inside functions included."""
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, dict[str, int]] = {m: {} for m in modules}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join((package[:len(package) - node.level + 1] if node.level else [])
                                + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            for target in targets:
                if target in modules and target != name:
                    graph[name].setdefault(target, node.lineno)
    return graph


def _cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One import circle of graph, or None (depth-first search, three colours)."""
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt, stack + [nxt])):
                return found
        state[node] = 2
        return None
    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_no_import_circle_among_the_modules():
    assert _cycle(_imports()) is None, " -> ".join(_cycle(_imports()))


def test_the_cycle_check_finds_a_circle():
    """The check itself: a circle hidden behind a function-level import is found."""
    assert _cycle({"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {"a": 1}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b": 1}, "b": {}, "c": {"a": 1, "b": 1}}) is None


def test_sub_packages_import_one_way():
    upward = []
    for module, targets in _imports().items():
        parts = module.split(".")
        if parts[0] != "emotion" or len(parts) < 3:
            continue
        for target, line in targets.items():
            stage, target_stage = parts[1], target.split(".")[1] if target.count(".") >= 2 else None
            if target_stage in STAGES and STAGES.index(target_stage) > STAGES.index(stage):
                upward.append(f"{module}:{line} imports {target}")
    assert upward == []


def test_every_module_sits_in_a_stage():
    """Directly in emotion/: only __init__.py; each sub-package is a stage of the map."""
    assert sorted(p.name for p in PACKAGE.glob("*.py")) == ["__init__.py"]
    assert sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__") == sorted(STAGES)


def test_no_function_is_over_60_lines():
    long = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = node.decorator_list[0].lineno if node.decorator_list else node.lineno
                if node.end_lineno - start + 1 > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} "
                                f"({node.end_lineno - start + 1} lines)")
    assert long == []


def test_the_readme_map_lists_every_module_once():
    """The README's tree names each module of emotion/ once, under its sub-package, and no module that is gone."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    tree = text[text.index("## The code: a module map"):text.index("## Tests and benchmarks")]
    tree = tree[tree.index("```"):tree.rindex("```")]
    listed, package = [], None
    for line in tree.splitlines():
        if m := re.match(r"^    (\w+)/", line):
            package = m[1]
        elif package and line.startswith("      ") and not line.startswith("       "):
            names = re.match(r"(?:\w+\.py(?:, )?)+", line.strip())[0]  # the left column: "plots.py, colours.py"
            listed += [f"{package}/{name.strip()}" for name in names.split(",")]
    actual = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if p.name != "__init__.py")
    assert sorted(listed) == actual
    assert len(listed) == len(set(listed))
