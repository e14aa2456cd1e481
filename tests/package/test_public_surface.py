"""The package's shape, read from its source (no import: CuPy-only modules count too): every module
declares ``__all__`` naming only what it binds, and imports keep the layers' direction
(README "Layout") without cycles at import time."""
from __future__ import annotations

import ast

import pytest
from support import REPO

PACKAGE = REPO / "sentry"
# Top-level part of sentry -> its layer: a module may import from its own part and from lower layers
# only (lazily inside a function too: a lazy import hides a cycle, it does not remove the dependency;
# an import under `if TYPE_CHECKING` names a type for annotations and runs nothing, so it may look up).
LAYERS = {
    "errors": 0, "_json": 0, "_optional": 0, "progress": 0,
    "io": 1, "crypto": 1, "_gpu": 1,
    "hashing": 2,
    "manifest": 3,
    "signing": 4, "protection": 4,
    "api": 5,
    "image": 6, "data": 6, "audit": 6,
    "doctor": 7, "cli": 7, "_cli_output": 7,
    "__main__": 8, "__init__": 8,
}


def modules() -> dict[str, ast.Module]:
    """Dotted module name -> its parsed source, for every .py file of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(path.read_text(), str(path))
    return out


MODULES = modules()


def is_package(name: str) -> bool:
    return (REPO / name.replace(".", "/") / "__init__.py").is_file()


def imported(name: str, node: ast.ImportFrom | ast.Import) -> list[str]:
    """The sentry modules an import statement of module ``name`` loads (a name imported from a
    package counts as its submodule when there is one)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "sentry"]
    if node.level:
        base = name.split(".") if is_package(name) else name.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + (node.module.split(".") if node.module else []))
    else:
        target = node.module or ""
    if target.split(".")[0] != "sentry":
        return []
    if target == "sentry" and all(a.name.startswith("__") for a in node.names):
        return []  # sentry.__version__: data the package root binds before importing anything
    subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES]
    return subs or [target]


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS["__init__" if len(parts) == 1 else parts[1]]


def part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_module_is_in_a_layer():
    assert {part(m) for m in MODULES if part(m)} <= set(LAYERS)


def type_checking_only(tree: ast.Module) -> set[ast.AST]:
    """The import statements under ``if TYPE_CHECKING:``: names for annotations, never run."""
    return {n for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))}


def test_imports_go_down_the_layers_only():
    upward = []
    for name, tree in MODULES.items():
        annotations_only = type_checking_only(tree)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and node not in annotations_only:
                for target in imported(name, node):
                    if part(target) != part(name) and layer(target) > layer(name):
                        upward.append(f"{name} (layer {layer(name)}) imports {target} (layer {layer(target)}), line {node.lineno}")
    assert not upward, "\n".join(upward)


def import_time_edges() -> dict[str, set[str]]:
    """Module -> the sentry modules it imports when it is imported: top-level statements only
    (not inside functions, nor under ``if TYPE_CHECKING``)."""
    edges: dict[str, set[str]] = {}
    for name, tree in MODULES.items():
        found = edges.setdefault(name, set())
        for node in tree.body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            statements = [node] if not isinstance(node, (ast.If, ast.Try)) else list(ast.walk(node))
            for stmt in statements:
                if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                    found.update(t for t in imported(name, stmt) if t in MODULES and t != name)
    return edges


def test_no_import_cycles_at_import_time():
    edges, state, cycles = import_time_edges(), {}, []

    def visit(module, stack):
        state[module] = "open"
        for target in sorted(edges[module]):
            if target.startswith(module + "."):
                continue  # a package importing its own submodules: Python runs them first
            if state.get(target) == "open":
                cycles.append(" -> ".join([*stack[stack.index(target):], target]))
            elif target not in state:
                visit(target, [*stack, target])
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)


def declared_all(tree: ast.Module) -> ast.expr | None:
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            return node.value
    return None


def bound_names(tree: ast.Module) -> set[str]:
    """Names a module binds at its top level (in any branch: a fallback import counts)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node in tree.body:
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names.update(e.id for e in ast.walk(target) if isinstance(e, ast.Name))
    return names


@pytest.mark.parametrize("name", [m for m in MODULES if not m.endswith("__main__")])
def test_module_declares_all_and_binds_every_name_in_it(name):
    tree = MODULES[name]
    value = declared_all(tree)
    assert value is not None, f"{name} has no __all__"
    if not isinstance(value, (ast.List, ast.Tuple)):
        return  # computed (sentry.data: from its table of lazy names); the module's own tests check it
    listed = [ast.literal_eval(e) for e in value.elts]
    assert len(listed) == len(set(listed)), f"{name}: __all__ repeats a name"
    missing = [n for n in listed if n not in bound_names(tree)]  # sentry's lazy names: under TYPE_CHECKING
    assert not missing, f"{name}: __all__ names what it does not bind: {missing}"
    assert not [n for n in listed if n.startswith("_")], f"{name}: __all__ lists a private name"
