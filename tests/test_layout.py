"""The layers of `vzero/`: every import (function-local ones included) points down, and none closes a circle.

Each line of ``LAYERS`` may import the lines above it and its own package, never a line below it, and never a sibling
on its own line.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = [
    ["vzero.offline"],  # environment defaults that keep a run offline (imports nothing)
    ["vzero.game"],  # rules, prompts, parsing, rewards (no torch)
    ["vzero.data", "vzero.rl"],  # pair sources; RL maths, the non-finite guard, the stage rule and the modes
    ["vzero.suites"],  # question suites with exact answers (no torch)
    ["vzero.model"],  # loading any HF model, model inputs, the Policy, the decoders, the prompt store, sampling
    ["vzero.rollout", "vzero.tiny"],  # the engine, the match, the batch and data module; the embedded toy model
    ["vzero.checkpoint"],  # verified, atomic checkpoint files and what they hold; the random state a resume restores
    ["vzero.module", "vzero.callbacks"],  # Lightning glue
    ["vzero.cli"],  # commands
    ["vzero.__main__"],  # `vzero`: one function per command
]
RANK = {package: rank for rank, line in enumerate(LAYERS) for package in line}


def modules() -> dict[str, Path]:
    out = {}
    for path in (ROOT / "vzero").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The vzero modules ``name`` imports, anywhere in its body."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            targets = [base, *(f"{base}.{a.name}" for a in node.names)]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def package(module: str) -> str:
    return next(p for p in sorted(RANK, key=len, reverse=True) if module == p or module.startswith(p + "."))


GRAPH = {name: imports(name, path, modules()) for name, path in modules().items()}


def test_every_package_has_a_layer():
    unplaced = {m for m in GRAPH if m != "vzero" and not any(m == p or m.startswith(p + ".") for p in RANK)}
    assert not unplaced, f"add these to LAYERS: {sorted(unplaced)}"


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m != "vzero"))
def test_imports_point_down(module):
    mine = package(module)
    wrong = {
        target
        for target in GRAPH[module]
        if target != "vzero" and package(target) != mine and RANK[package(target)] >= RANK[mine]
    }
    assert not wrong, f"{module} (layer {RANK[mine]}) imports {sorted(wrong)} from its own layer or above"


def test_no_import_circles():
    # Edges from a package's __init__ to its own children only re-export them.
    edges = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in GRAPH.items()}
    state: dict[str, int] = {}

    def visit(m: str, trail: list[str]) -> None:
        state[m] = 1
        for t in edges[m]:
            if state.get(t) == 1:
                raise AssertionError("import circle: " + " -> ".join([*trail[trail.index(t) :], t]))
            if t not in state:
                visit(t, [*trail, t])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])


def test_the_loader_knows_nothing_of_the_tiny_model_or_the_game():
    reach, todo = set(), ["vzero.model.load"]
    while todo:
        for t in GRAPH[todo.pop()]:
            if t not in reach:
                reach.add(t)
                todo.append(t)
    assert not {m for m in reach if package(m) in ("vzero.tiny", "vzero.data", "vzero.game", "vzero.rollout")}


def test_the_game_imports_neither_torch_nor_lightning():
    for name, path in modules().items():
        if not name.startswith("vzero.game"):
            continue
        tree = ast.parse(path.read_text())
        names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not names & {"torch", "lightning"}, name


def test_function_local_and_relative_imports_are_seen(tmp_path):
    path = tmp_path / "engine.py"
    path.write_text("def f():\n    from vzero.tiny import resolve\n\nfrom .batch import TrainBatch\n")
    known = {"vzero.tiny": path, "vzero.rollout.batch": path, "vzero.rollout.engine": path}
    assert imports("vzero.rollout.engine", path, known) == {"vzero.tiny", "vzero.rollout.batch"}


def test_the_readme_layout_lists_the_layers_top_down():
    """Each ``vzero/...`` line of the README's Layout block names the packages of one layer, highest first."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Layout", 1)[1].split("```", 2)[1]
    lines = []
    for line in block.splitlines():
        if line.startswith("vzero/"):
            names = [n.strip() for n in line[:32].split(",")]
            lines.append(["vzero." + n.removeprefix("vzero/").removesuffix("/").removesuffix(".py") for n in names])
    dotted = [[n.replace("/", ".") for n in line] for line in lines]
    assert len(dotted) == len(LAYERS)
    for readme_line, layer in zip(dotted, reversed(LAYERS)):
        assert len(readme_line) == len(layer) and all(
            any(name == p or name.startswith(p + ".") for name in readme_line) for p in layer
        ), (readme_line, layer)
