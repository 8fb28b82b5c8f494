"""The installed package declares what it imports.

Once the README's first command died on a fresh machine: `fastvision demo` imported scipy, which
only the `test` extra installed, so the test command (which installs `.[test]`) stayed green. These
tests read every module of the installed package with `ast` and check each third-party import
against the distribution's own metadata (`importlib.metadata.requires("fastvision")`, i.e. what
pip really installs): an import must come from a distribution in `[project].dependencies`, or sit
in a `try:` that handles `ImportError` (an optional backend with a fallback). CI proves the same
end to end by running the README's demo command in a fresh venv before anything else.
"""
from __future__ import annotations

import ast
import importlib.metadata as metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest

import fastvision

PACKAGE_DIR = Path(fastvision.__file__).parent


def _core_requirements() -> set[str]:
    """Normalised names of the distributions that `pip install fastvision` installs."""
    names = set()
    for requirement in metadata.requires("fastvision") or []:
        if "extra ==" in requirement:
            continue
        names.add(_normalise(re.split(r"[ ;<>=!~\[(]", requirement, maxsplit=1)[0]))
    return names


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _guarded_by_import_error(handlers: list[ast.ExceptHandler]) -> bool:
    def names(node):
        if node is None:
            return {"BaseException"}
        if isinstance(node, ast.Tuple):
            return {n for elt in node.elts for n in names(elt)}
        return {getattr(node, "id", getattr(node, "attr", ""))}

    caught = set().union(*(names(h.type) for h in handlers)) if handlers else set()
    return bool(caught & {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"})


def third_party_imports(source: str, filename: str = "<string>") -> list[tuple[str, int, bool]]:
    """(top-level module, line, optional) for every absolute import that is not stdlib or
    fastvision; `optional` when the import sits in a try that handles ImportError."""
    tree = ast.parse(source, filename)
    found = []

    def visit(node, optional):
        if isinstance(node, ast.Try):
            guarded = optional or _guarded_by_import_error(node.handlers)
            for child in node.body:
                visit(child, guarded)
            for child in node.handlers + node.orelse + node.finalbody:
                visit(child, optional)
            return
        modules = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
        for module in modules:
            top = module.split(".")[0]
            if top != "fastvision" and top not in sys.stdlib_module_names and top != "__future__":
                found.append((top, node.lineno, optional))
        for child in ast.iter_child_nodes(node):
            visit(child, optional)

    visit(tree, False)
    return found


def undeclared_imports(files: dict[str, str], declared: set[str],
                       providers: dict[str, list[str]]) -> list[str]:
    """Problems: a required import whose distribution is not declared (or not known)."""
    problems = []
    for filename, source in sorted(files.items()):
        for top, line, optional in third_party_imports(source, filename):
            if optional:
                continue
            dists = {_normalise(d) for d in providers.get(top, [])}
            if not dists:
                problems.append(f"{filename}:{line}: `{top}` comes from no installed distribution")
            elif not dists & declared:
                problems.append(f"{filename}:{line}: `{top}` (from {', '.join(sorted(dists))}) is "
                                f"not in [project].dependencies")
    return problems


def _package_sources() -> dict[str, str]:
    return {str(p.relative_to(PACKAGE_DIR.parent)): p.read_text()
            for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def test_every_runtime_import_is_a_declared_dependency():
    sources = _package_sources()
    assert len(sources) > 30, f"expected the whole package under {PACKAGE_DIR}, found {len(sources)}"
    problems = undeclared_imports(sources, _core_requirements(), metadata.packages_distributions())
    assert not problems, "imports missing from [project].dependencies:\n" + "\n".join(problems)


def test_checker_catches_the_scipy_regression():
    # The regression this file exists for: a module-level scipy import with scipy only in extras.
    sources = {"fastvision/metrics/particles.py":
               "import numpy as np\nfrom scipy.optimize import linear_sum_assignment\n",
               "fastvision/lazy.py": "def f():\n    from PIL import Image\n",
               "fastvision/optional.py": "try:\n    import pycocotools\nexcept ImportError:\n"
                                         "    pycocotools = None\n"}
    providers = {"numpy": ["numpy"], "scipy": ["scipy"], "PIL": ["Pillow"]}
    problems = undeclared_imports(sources, {"numpy", "pillow"}, providers)
    assert problems == ["fastvision/metrics/particles.py:2: `scipy` (from scipy) is not in "
                        "[project].dependencies"]
    # A function-level import counts too: lazy is not optional.
    assert undeclared_imports(sources, {"numpy", "scipy"}, providers) == [
        "fastvision/lazy.py:2: `PIL` (from pillow) is not in [project].dependencies"]


def test_declared_dependencies_are_bounded():
    for requirement in metadata.requires("fastvision") or []:
        if "extra ==" in requirement:
            continue
        assert re.search(r"(==|>=|~=)", requirement), f"unbounded dependency: {requirement!r}"


@pytest.mark.parametrize("module, heavy", [
    ("fastvision.ops", ("matplotlib", "scipy", "PIL", "h5py")),
    ("fastvision.models", ("matplotlib", "scipy", "h5py")),
])
def test_library_import_stays_light(module, heavy):
    code = (f"import sys, {module}\n"
            f"print(','.join(m for m in {heavy!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"`import {module}` loads {out.stdout.strip()}"
