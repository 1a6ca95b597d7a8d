"""The package's imports run one way: from models down to the helpers.

The test reads every module's source (no import happens), collects each import
of a `tfp_deepgen` module, at module level and inside functions alike, and
checks it against the layering below. A new module must be given a layer here.
"""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "tfp_deepgen"

# Lower numbers are lower layers; a module may import its own layer or below.
LAYERS = {
    0: ["_math", "_untracked", "_validation", "random", "stick_breaking", "losses", "distribute"],
    1: ["priors", "heads"],
    2: ["posteriors"],
    3: ["layers"],
    4: ["predictive", "structure", "pruning", "metrics"],
    5: ["callbacks", "export", "datasets", "inference"],
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


def import_cycle(edges):
    """The first import cycle in `edges` as a list of modules, or None."""
    graph = {}
    for module, target, *_ in edges:
        graph.setdefault(target, set())
        if target != module:  # a module naming itself (`from . import x` in a package)
            graph.setdefault(module, set()).add(target)
    state = {}

    def visit(module, path):
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                return path + [module, target]
            if target not in state:
                cycle = visit(target, path + [module])
                if cycle:
                    return cycle
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module, [])
            if cycle:
                return cycle
    return None


def test_the_import_graph_has_no_cycle():
    cycle = import_cycle(EDGES)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def ancestor_package_imports(edges):
    """`module imports package` lines for each import of an enclosing package."""
    return [
        f"{module} imports {target}"
        for module, target, *_ in edges
        if module.startswith(target + ".")
    ]


def test_no_module_imports_an_enclosing_package():
    """A submodule never imports from a package above it, only from its siblings.

    `layers/ibp.py` writing `from tfp_deepgen.layers import X` reads the
    package's `__init__`, which itself imports `layers/ibp.py`: a cycle that
    works or fails depending on which module Python happens to import first.
    The package's own `__init__` importing its submodules is the one allowed
    direction. (`from tfp_deepgen.layers import dense` names the submodule
    `layers.dense`, not the package, and stays allowed.)
    """
    found = ancestor_package_imports(EDGES)
    assert not found, "import from the sibling module instead:\n" + "\n".join(found)


def test_the_structure_checks_catch_a_submodule_importing_its_package():
    # The checks above pass on the package; here they see the cycle they refuse.
    edges = [
        ("tfp_deepgen.layers", "tfp_deepgen.layers.ibp", None, False),
        ("tfp_deepgen.layers.ibp", "tfp_deepgen.layers", "VariationalDense", False),
        ("tfp_deepgen.layers.ibp", "tfp_deepgen.priors", "Normal", False),
    ]
    assert ancestor_package_imports(edges) == ["tfp_deepgen.layers.ibp imports tfp_deepgen.layers"]
    assert import_cycle(edges) == [
        "tfp_deepgen.layers",
        "tfp_deepgen.layers.ibp",
        "tfp_deepgen.layers",
    ]
    assert ancestor_package_imports(edges[:1]) == []
    assert import_cycle(edges[:1]) is None


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


if __name__ == "__main__":
    # `python tests/test_architecture.py`: the numbers behind the rules above.
    lines = {module: len(path.read_text().splitlines()) for module, path in MODULES.items()}
    edges = {(module, target) for module, target, _, _ in EDGES if target != module}
    largest = sorted(lines.items(), key=lambda item: -item[1])[:6]
    print(f"modules: {len(MODULES)}, lines: {sum(lines.values())}")
    print("largest: " + ", ".join(f"{name} {count}" for name, count in largest))
    print(f"internal import edges: {len(edges)}, cycle: {import_cycle(EDGES)}")
