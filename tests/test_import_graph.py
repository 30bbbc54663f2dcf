"""The project's import graph (issue #17): model_repository -> serving -> (training, common), export and the rest above
serving, no import circles between project modules.

Read with `ast` from the source files, never by importing them. Counted: every `import x` and `from x import y`
statement anywhere in a file — module level, inside functions (lazy imports) and under `if TYPE_CHECKING` — since a
lazy import is still a dependency and a circle through one only waits for the first call. `from pkg import name`
counts as an edge to the module `pkg.name` where that exists, else to `pkg`; relative imports are resolved.
Implicit imports of parent packages (importing `a.b` runs `a/__init__.py`) are not counted.
"""
from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "training", "export", "serving", "demo", "client", "benchmarks", "pipelines", "api")
# The Triton Python models: loaded by path inside the backend stub, so named by their folder.
MODEL_CODE = "model_repository"
# What each layer may import from the project (itself always); anything else is third-party or the standard library.
ALLOWED = {
    "common": set(),
    "training": {"common"},
    "client": {"common"},
    "serving": {"training", "common"},
    MODEL_CODE: {"serving", "common"},
    "export": {"serving", "training", "common"},
}


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[0] == MODEL_CODE:
        return "/".join(parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules(root: Path) -> dict[str, Path]:
    files = [path for top in (*PACKAGES, MODEL_CODE) for path in sorted((root / top).rglob("*.py"))]
    return {module_name(root, path): path for path in files if "__pycache__" not in path.parts}


def imported_names(tree: ast.AST, module: str, is_package: bool) -> Iterable[tuple[str, list[str]]]:
    """(module, [names]) of each import statement of ``tree``: ``import a.b`` gives ("a.b", [])."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                base = ".".join([*package[: len(package) - node.level + 1], *([node.module] if node.module else [])])
            yield base, [alias.name for alias in node.names]


def import_graph(root: Path) -> dict[str, set[str]]:
    """Project module -> the project modules it imports."""
    modules = project_modules(root)
    graph = {}
    for name, path in modules.items():
        targets = set()
        for base, names in imported_names(ast.parse(path.read_text(encoding="utf-8")), name, path.name == "__init__.py"):
            # `from a import b`: the module a.b where it exists, else module a (b is a name defined there).
            found = [f"{base}.{item}" for item in names if f"{base}.{item}" in modules]
            if len(found) < len(names) or not names:
                found.append(base)
            for target in found:
                while target and target not in modules:  # `import a.b.c` of a third-party a: nothing
                    target = target.rpartition(".")[0]
                if target and target != name:
                    targets.add(target)
        graph[name] = targets
    return graph


def layer(module: str) -> str:
    return module.split("/")[0].split(".")[0]


def forbidden_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{module} imports {target}" for module, targets in graph.items() if layer(module) in ALLOWED
                  for target in targets if layer(target) not in ALLOWED[layer(module)] | {layer(module)})


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
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
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(cycles)


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(REPO)


def test_the_graph_covers_the_project(graph: dict[str, set[str]]) -> None:
    assert {"serving.catalog_index", "serving.triton_backends.onnx_cpu.model", "export.publish", "demo.run",
            "model_repository/faiss_topk/1/model", "benchmarks.gpu"} <= set(graph)
    assert "serving.catalog_index" in graph["model_repository/faiss_topk/1/model"]
    assert "common.windowing" in graph["model_repository/audio_windows/1/model"]


def test_each_layer_imports_only_the_layers_below_it(graph: dict[str, set[str]]) -> None:
    assert forbidden_imports(graph) == []


def test_no_import_cycles(graph: dict[str, set[str]]) -> None:
    assert import_cycles(graph) == []


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_the_checks_find_a_lazy_circle_and_an_upward_import(tmp_path: Path) -> None:
    write(tmp_path, {
        "serving/__init__.py": "",
        "serving/a.py": "def f():\n    from serving.b import g\n",  # lazy, inside a function
        "serving/b.py": "from . import a\nimport export.publish\n",  # relative, and up into export
        "export/__init__.py": "",
        "export/publish.py": "from serving import a\n",  # allowed: export stands above serving
        "model_repository/m/1/model.py": "import numpy\nfrom training.x import y\n",
        "training/__init__.py": "",
        "training/x.py": "y = 1\n",
        "client/__init__.py": "",
        "client/audio.py": "from training import x\n",
    })
    graph = import_graph(tmp_path)
    assert graph["serving.a"] == {"serving.b"} and graph["serving.b"] == {"serving.a", "export.publish"}
    assert graph["export.publish"] == {"serving.a"} and graph["client.audio"] == {"training.x"}
    assert import_cycles(graph) == [["export.publish", "serving.a", "serving.b"]]
    assert forbidden_imports(graph) == ["client.audio imports training.x", "model_repository/m/1/model imports training.x",
                                        "serving.b imports export.publish"]
