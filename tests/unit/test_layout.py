"""The dependency rule of the layout (README, Development), checked by reading the import statements.

- ``verify`` and ``codebook`` build on ``probe``'s public names; ``probe`` never imports ``verify`` or
  ``codebook`` at module level (the command line loads their command groups lazily).
- No module imports another package's or subpackage's ``_private`` name or ``_private`` module; benchmarks,
  scripts and tutorials use public names only.
- The module-level imports between the toolkit's modules form no circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("probe", "verify", "codebook")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _library_files() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def _user_files() -> list[Path]:
    """Code that stands where a user stands: it may use public names only."""
    return sorted([*(ROOT / "benchmarks").glob("*.py"), *(ROOT / "scripts").glob("*.py"),
                   *(ROOT / "tutorials").glob("*.py")])


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: Path, module_level_only: bool) -> list[tuple[str, list[str], int]]:
    """``(imported module, imported names, line)`` for every import of a toolkit module in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[str, list[str], int]] = []

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.split(".")[0] in PACKAGES:
                    found.append((node.module, [a.name for a in node.names], node.lineno))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] in PACKAGES:
                        found.append((alias.name, [], node.lineno))
            elif isinstance(node, ast.If) and _is_type_checking(node):
                continue
            elif module_level_only and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            else:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    visit([n for n in getattr(node, field, []) if isinstance(n, ast.AST)])

    visit(tree.body)
    return found


def _package_of(module: str, is_package: bool) -> str:
    return module if is_package else module.rpartition(".")[0]


def _private_parts(module: str) -> list[str]:
    return [p for p in module.split(".") if p.startswith("_") and not p.startswith("__")]


def _resolve(module: str, name: str) -> tuple[str, str]:
    """``from module import name``: the module a name comes from when ``name`` is itself a submodule."""
    candidate = ROOT / Path(*module.split("."), name)
    if candidate.with_suffix(".py").exists() or (candidate / "__init__.py").exists():
        return f"{module}.{name}", ""
    return module, name


def _violations(files: list[Path], user_code: bool) -> list[str]:
    bad = []
    for path in files:
        here = _module_name(path)
        here_pkg = _package_of(here, path.name == "__init__.py")
        for module, names, line in _imports(path, module_level_only=False):
            where = f"{path.relative_to(ROOT)}:{line}"
            targets = [_resolve(module, n) for n in names] or [(module, "")]
            for target, name in targets:
                target_pkg = target.rpartition(".")[0] if name == "" else _package_of(
                    target, (ROOT / Path(*target.split(".")) / "__init__.py").exists())
                same_package = not user_code and target_pkg == here_pkg
                if _private_parts(target) and not same_package:
                    bad.append(f"{where} imports the private module {target}")
                if name.startswith("_") and not name.startswith("__") and not same_package:
                    bad.append(f"{where} imports the private name {target}.{name}")
    return bad


def test_no_private_names_across_packages():
    assert _violations(_library_files(), user_code=False) == []


def test_benchmarks_scripts_and_tutorials_use_public_names():
    assert _violations(_user_files(), user_code=True) == []


def test_probe_never_imports_verify_or_codebook_at_module_level():
    bad = [f"{p.relative_to(ROOT)}:{line} imports {module}"
           for p in (ROOT / "probe").rglob("*.py")
           for module, _, line in _imports(p, module_level_only=True)
           if module.split(".")[0] in ("verify", "codebook")]
    assert bad == []


def test_verify_and_codebook_do_not_import_each_other():
    bad = [f"{p.relative_to(ROOT)}:{line} imports {module}"
           for pkg, other in (("verify", "codebook"), ("codebook", "verify"))
           for p in (ROOT / pkg).rglob("*.py")
           for module, _, line in _imports(p, module_level_only=False)
           if module.split(".")[0] == other]
    assert bad == []


def test_no_import_circle_at_module_level():
    modules = {_module_name(p): p for p in _library_files()}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        for module, names, _ in _imports(path, module_level_only=True):
            for target, _name in ([_resolve(module, n) for n in names] or [(module, "")]):
                if target in modules and target != mod:
                    graph[mod].add(target)
    # A package's __init__ re-exporting its own submodules is not a circle: a submodule that imports a
    # sibling imports the sibling, never the package's __init__ (that edge would be reported).
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def dfs(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt):], nxt] if nxt in stack else [node, nxt])
            elif nxt not in state:
                dfs(nxt, [*stack, nxt])
        state[node] = 2

    for m in sorted(graph):
        if m not in state:
            dfs(m, [m])
    assert cycles == []


@pytest.mark.parametrize("method,start", [("nap", "probe/nap.py"), ("moe", "probe/moe/__init__.py"),
                                          ("complexity", "probe/complexity/__init__.py"),
                                          ("verify", "verify/__init__.py"), ("codebook", "codebook/__init__.py")])
def test_every_method_has_one_home(method: str, start: str):
    assert (ROOT / start).exists(), f"{method} is documented to start in {start}"
