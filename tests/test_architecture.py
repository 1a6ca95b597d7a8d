"""The package's imports run one way: from models down to the helpers.

The test reads every module's source (no import happens), collects each import
of a `tfp_deepgen` module, at module level and inside functions alike, and
checks it against the layering below. A new module must be given a layer here.
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "tfp_deepgen"

# Lower numbers are lower layers; a module may import its own layer or below.
LAYERS = {
    0: ["_math", "_untracked", "_validation", "random", "stick_breaking", "losses"],
    1: ["priors", "heads"],
    2: ["posteriors"],
    3: ["layers"],
    4: ["predictive", "structure", "pruning", "metrics"],
    5: ["callbacks", "export", "datasets"],
    6: ["models"],
    7: [""],  # the package's __init__
}
RANK = {name: rank for rank, names in LAYERS.items() for name in names}


def module_names():
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("tfp_deepgen",) + path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


MODULES = module_names()


def rank(module):
    top = module.split(".")[1] if "." in module else ""
    if top not in RANK:
        raise AssertionError(f"{module} has no layer in tests/test_architecture.py LAYERS")
    return RANK[top]


def imports_of(module, node):
    """`(imported module, imported name or None, False)` for one import node."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    if isinstance(node, ast.Import):
        found = [(alias.name, None, False) for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            base = ".".join(anchor + ([base] if base else []))
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            found.append(
                (submodule, None, False) if submodule in MODULES else (base, alias.name, False)
            )
    return found  # one entry per imported name, tfp_deepgen or not


def imports(module):
    """(imported module, imported name or None, inside a function) per import."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), filename=str(path))
    in_function = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            in_function.update(id(child) for child in ast.walk(node) if child is not node)
    return [
        (target, name, id(node) in in_function)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for target, name, _ in imports_of(module, node)
        if target in MODULES
    ]


EDGES = [(module, *edge) for module in sorted(MODULES) for edge in imports(module)]


def test_the_walk_sees_the_package():
    assert len(MODULES) > 30
    reads = attribute_reads("tfp_deepgen.layers.variational_dropout")
    assert ("tfp_deepgen.layers.dense", "VariationalDense") in reads
    linear_imports = [edge for edge in EDGES if edge[0] == "tfp_deepgen.layers.linear"]
    assert ("tfp_deepgen.layers.linear", "tfp_deepgen.posteriors", "MeanFieldNormal", False) in (
        linear_imports
    )


def test_no_import_hides_inside_a_function():
    hidden = [(module, target) for module, target, _, nested in EDGES if nested]
    assert not hidden, f"imports inside functions (move them to module level): {hidden}"


def test_imports_never_point_to_a_higher_layer():
    upward = [
        f"{module} (layer {rank(module)}) imports {target} (layer {rank(target)})"
        for module, target, _, _ in EDGES
        if rank(target) > rank(module)
    ]
    assert not upward, "\n".join(upward)


def test_the_import_graph_has_no_cycle():
    graph = {module: set() for module in MODULES}
    for module, target, _, _ in EDGES:
        # A package's own __init__ re-exporting its submodules is not a cycle.
        if target != module and not module.startswith(target + "."):
            graph[module].add(target)
    state = {}

    def visit(module, path):
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                pytest.fail("import cycle: " + " -> ".join(path + [module, target]))
            if target not in state:
                visit(target, path + [module])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def attribute_reads(module):
    """`(target module, name)` for each `alias.name` read through an imported module."""
    tree = ast.parse(MODULES[module].read_text())
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for alias, (target, name, _) in zip(node.names, imports_of(module, node), strict=True):
                if name is None and target in MODULES:
                    aliases[alias.asname or alias.name] = target
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname and alias.name in MODULES:
                    aliases[alias.asname] = alias.name
    return [
        (aliases[node.value.id], node.attr)
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id in aliases
    ]


def is_private(name):
    return name.startswith("_") and not name.startswith("__")


def test_no_module_uses_private_names_of_another_module():
    # What one module needs from another is public there; a package's own
    # __init__ may still re-export from its submodules.
    private = [
        f"{module} imports {name} from {target}"
        for module, target, name, _ in EDGES
        if name is not None and is_private(name) and target != module
    ]
    private += [
        f"{module} reads {target}.{name}"
        for module in sorted(MODULES)
        for target, name in attribute_reads(module)
        if is_private(name) and target != module
    ]
    assert not private, "\n".join(private)
