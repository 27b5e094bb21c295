"""The package is a house with floors (docs/architecture.md): every import, at module level or inside a function,
goes to the same floor or a lower one, never to a private name of another module, and never round in a cycle."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "crossmodalnet"

# lowest floor first; a module may import its own floor (without cycles) and every floor below
FLOORS: list[tuple[str, ...]] = [
    ("crossmodalnet.errors", "crossmodalnet.utils", "crossmodalnet.reporting"),
    ("crossmodalnet.data",),
    ("crossmodalnet.models",),
    ("crossmodalnet.baselines",),
    ("crossmodalnet.inference",),
    ("crossmodalnet.interpret",),
    ("crossmodalnet.training",),
    ("crossmodalnet.tune",),
    ("crossmodalnet.api", "crossmodalnet.cli", "crossmodalnet"),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def floor(module: str) -> int:
    best, best_len = None, -1
    for level, prefixes in enumerate(FLOORS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = level, len(prefix)
    assert best is not None, f"{module} is on no floor: add it to FLOORS and docs/architecture.md"
    return best


def resolve(target: str) -> str | None:
    """The package module an import names (``a.b.c`` may be module ``a.b`` plus attribute ``c``)."""
    while target:
        if target in MODULES:
            return target
        target = target.rpartition(".")[0]
    return None


def imports(module: str) -> list[tuple[str, list[str], int]]:
    """(imported module, imported names, line) for every import statement in ``module``, nested ones included."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("crossmodalnet"):
                    found.append((alias.name, [], node.lineno))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if not base.startswith("crossmodalnet"):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in MODULES:  # "from pkg import module"
                    found.append((sub, [], node.lineno))
                else:
                    found.append((base, [alias.name], node.lineno))
    return found


def edges() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module in MODULES:
        for target, _, _ in imports(module):
            resolved = resolve(target)
            if resolved and resolved != module and not module.startswith(resolved + ".") and resolved != "crossmodalnet":
                graph[module].add(resolved)
    return graph


def test_every_module_sits_on_a_floor():
    for module in MODULES:
        floor(module)


def test_no_import_goes_up_a_floor():
    upward = []
    for module in MODULES:
        for target, _, line in imports(module):
            resolved = resolve(target)
            if resolved and floor(resolved) > floor(module):
                upward.append(f"{MODULES[module].relative_to(PACKAGE.parent)}:{line} {module} -> {resolved}")
    assert not upward, "imports that go up a floor:\n" + "\n".join(upward)


def test_no_private_name_imported_from_another_module():
    private = []
    for module in MODULES:
        for target, names, line in imports(module):
            resolved = resolve(target)
            if resolved and resolved != module:
                for name in names:
                    if name.startswith("_") and not name.startswith("__"):
                        private.append(f"{MODULES[module].relative_to(PACKAGE.parent)}:{line} {name} from {resolved}")
            if resolved and any(part.startswith("_") and part != "__init__" for part in resolved.split(".")):
                private.append(f"{MODULES[module].relative_to(PACKAGE.parent)}:{line} private module {resolved}")
    assert not private, "private names imported across modules:\n" + "\n".join(private)


def test_import_graph_has_no_cycle():
    graph = edges()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_checker_finds_a_cycle_and_an_upward_import(tmp_path, monkeypatch):
    """The walker must see imports inside functions: a planted cycle through a function-level import is caught."""
    pkg = tmp_path / "crossmodalnet"
    (pkg / "data").mkdir(parents=True)
    (pkg / "training").mkdir()
    for d in (pkg, pkg / "data", pkg / "training"):
        (d / "__init__.py").write_text("")
    (pkg / "data" / "a.py").write_text("def f():\n    from crossmodalnet.training.b import g\n")
    (pkg / "training" / "b.py").write_text("from crossmodalnet.data.a import f\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", pkg)
    monkeypatch.setattr(__import__(__name__), "MODULES", {module_name(p): p for p in pkg.rglob("*.py")})
    with pytest.raises(AssertionError, match="cycle"):
        test_import_graph_has_no_cycle()
    with pytest.raises(AssertionError, match="up a floor"):
        test_no_import_goes_up_a_floor()


def test_pyproject_lists_every_package_and_ships_the_configs():
    """pyproject.toml lists the packages by hand (the configs are mapped in as crossmodalnet.configs): a new
    subpackage missing from the list would be left out of the wheel."""
    import tomllib

    setup = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {module_name(p) for p in PACKAGE.rglob("__init__.py")}
    listed = set(setup["packages"])
    assert on_disk | {"crossmodalnet.configs"} == listed
    assert setup["package-dir"]["crossmodalnet.configs"] == "configs"
    assert (PACKAGE.parent / "configs" / "train.yaml").is_file()
