"""The import rule of ARCHITECTURE.md, checked on the source of ``python/fastvision``: a module
imports only its own layer's folder or layers listed below it, no import circle exists (imports
inside functions included), and no private name (``_x``) is imported from another folder.

The layer order is read from ARCHITECTURE.md (the fenced block after ``<!-- layers -->``), so the
document and the check cannot drift apart."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "python" / "fastvision"

# Private modules that other folders may import, and why.
ALLOWED_PRIVATE = {
    # The pure-PyTorch oracle of every op (design.md): the tests, the demo's checks and the
    # benchmarks compare against it by design.
    "fastvision.ops._reference",
}


def read_layers(architecture_md: Path) -> dict[str, int]:
    """{unit: rank} from the ``<!-- layers -->`` block: one line per rank, lowest first, units
    separated by spaces (``ops``, ``nn compat``, ...). ``fastvision`` names the package root."""
    text = architecture_md.read_text()
    match = re.search(r"<!-- layers -->\s*```[a-z]*\n(.*?)```", text, re.S)
    if match is None:
        raise ValueError(f"{architecture_md}: no fenced block after <!-- layers -->")
    ranks = {}
    for rank, line in enumerate(l for l in match.group(1).splitlines() if l.strip()):
        for unit in line.split("#", 1)[0].split():
            ranks[unit] = rank
    return ranks


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def unit_of(module: str) -> str:
    """The layer unit of a module: its folder (or file) right under the package; the package's
    own ``__init__`` and its private top-level modules (``_loader``, ``_C``) form ``fastvision``;
    ``__main__`` is a unit of its own."""
    parts = module.split(".")
    if len(parts) == 1 or (parts[1].startswith("_") and parts[1] != "__main__"):
        return parts[0]
    return parts[1]


def folder_of(module: str, is_package: bool) -> str:
    return module if is_package else module.rpartition(".")[0]


def collect_imports(root: Path) -> dict[str, list[tuple[str, str, int]]]:
    """{module: [(imported module, imported name or "", line)]} for every ``fastvision`` import
    of every module under ``root``, at any depth (function-level imports included)."""
    modules = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    out = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        found = []
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found += [(a.name, "", node.lineno) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name if is_package else name.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        base = base.rpartition(".")[0]
                    target = f"{base}.{node.module}" if node.module else base
                else:
                    target = node.module or ""
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    # ``from pkg import submodule`` imports the submodule.
                    if sub in modules:
                        found.append((sub, "", node.lineno))
                    else:
                        found.append((target, alias.name, node.lineno))
        out[name] = [(m, n, line) for m, n, line in found
                     if m == root.name or m.startswith(root.name + ".")]
    return out


def violations(root: Path, ranks: dict[str, int]) -> list[str]:
    imports = collect_imports(root)
    packages = {module_name(p, root) for p in root.rglob("__init__.py")}
    problems = []
    for module, found in imports.items():
        unit = unit_of(module)
        if unit not in ranks:
            problems.append(f"{module}: its folder {unit!r} is not in the layer list")
            continue
        for target, name, line in found:
            target_unit = unit_of(target)
            if target_unit != unit:
                if target_unit not in ranks:
                    problems.append(f"{module}:{line} imports {target} (folder {target_unit!r} is "
                                    "not in the layer list)")
                elif ranks[target_unit] >= ranks[unit]:
                    problems.append(f"{module}:{line} imports {target}: {target_unit!r} is not "
                                    f"below {unit!r}")
            if folder_of(module, module in packages) == folder_of(target, target in packages):
                continue
            private_module = next((p for p in target.split(".") if p.startswith("_")
                                   and not p.startswith("__")), None)
            if private_module and not any(target == a or target.startswith(a + ".")
                                          for a in ALLOWED_PRIVATE):
                problems.append(f"{module}:{line} imports the private module {target}")
            if name.startswith("_") and not name.startswith("__"):
                problems.append(f"{module}:{line} imports the private name {name} from {target}")
    # Circles: strongly connected components of the module graph (Tarjan).
    graph = {m: sorted({t for t, _, _ in found if t in imports and t != m})
             for m, found in imports.items()}
    index, low, stack, on_stack, counter = {}, {}, [], set(), [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                problems.append("import circle: " + " -> ".join(sorted(component)))

    for v in graph:
        if v not in index:
            visit(v)
    return problems


def test_the_package_follows_the_import_rule():
    ranks = read_layers(REPO / "ARCHITECTURE.md")
    assert violations(PACKAGE, ranks) == []


def test_every_folder_of_the_package_has_a_layer():
    ranks = read_layers(REPO / "ARCHITECTURE.md")
    units = {p.name if p.is_dir() else p.stem for p in PACKAGE.iterdir()
             if (p.is_dir() and any(p.rglob("*.py"))) or p.suffix == ".py"}
    units = {u for u in units if not u.startswith("_") or u == "__main__"}
    assert units - set(ranks) == set()


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "fastvision"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


RANKS = {"ops": 0, "fastvision": 1, "models": 2, "tasks": 3}
CLEAN = {"__init__.py": "from fastvision import ops\n",
         "ops/__init__.py": "from fastvision.ops._impl import knn\n",
         "ops/_impl.py": "def knn(): pass\ndef _helper(): pass\n",
         "models/__init__.py": "from .net import Net\n",
         "models/net.py": "from fastvision.ops import knn\n",
         "tasks/__init__.py": "",
         "tasks/a/__init__.py": "",
         "tasks/a/run.py": "def f():\n    from fastvision.models import Net\n",
         "tasks/b/__init__.py": "",
         "tasks/b/run.py": "from fastvision.tasks.a.run import f\n"}


def test_the_checker_accepts_a_clean_tree(tmp_path):
    assert violations(_tree(tmp_path, CLEAN), RANKS) == []


@pytest.mark.parametrize("rel, text, expected", [
    ("ops/_impl.py", "def f():\n    from fastvision.models.net import Net\n", "is not below 'ops'"),
    ("models/net.py", "from fastvision.ops._impl import _helper\n", "private module"),
    ("tasks/b/run.py", "from fastvision.tasks.a.run import _g\n", "private name _g"),
    ("tasks/a/run.py", "from fastvision.tasks.b.run import f\n", "import circle"),
    ("extra/x.py", "import fastvision.ops\n", "not in the layer list"),
])
def test_the_checker_finds_planted_violations(tmp_path, rel, text, expected):
    problems = violations(_tree(tmp_path, {**CLEAN, rel: text}), RANKS)
    assert any(expected in p for p in problems), problems


def test_the_layer_block_is_read_in_order(tmp_path):
    doc = tmp_path / "ARCHITECTURE.md"
    doc.write_text("x\n<!-- layers -->\n```text\nops fastvision   # root\nnn compat\nmodels\n```\n")
    assert read_layers(doc) == {"ops": 0, "fastvision": 0, "nn": 1, "compat": 1, "models": 2}
