"""Imports only ever point down the layers of shared/DESIGN.md (parsed with ast, so an
import inside a function counts too)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# rank of each part of the package: a module may import its own rank or lower ranks only
RANKS = [
    ("minillm.kernels", 0), ("minillm.errors", 0), ("minillm._env", 0),
    ("minillm.backend", 1),
    ("minillm.autograd", 2), ("minillm.tensor", 2), ("minillm.ops", 2), ("minillm.functional", 2),
    ("minillm.testing", 2),
    ("minillm.nn", 3),
    ("minillm.models", 4), ("minillm.optim", 4),
    ("minillm.tokenizers", 5), ("minillm.data", 5),
    ("minillm.checkpoints", 5.5),  # file formats and the loader: above models and tokenizers
    ("minillm.checkpoints.atomic", 0),  # stdlib only: every layer that writes files uses it
    ("minillm.train", 6), ("minillm.sample", 6), ("minillm.finetune", 6),
    ("minillm.cli", 7), ("minillm.__main__", 7), ("minillm", 7),
    ("minillm.configs", 0),  # data files only
]
DATA_LAYER = ("minillm.tokenizers", "minillm.data")  # numpy-only: no tensors, no models
DATA_LAYER_MAY_USE = ("minillm.errors", "minillm.checkpoints.atomic")


def rank(module):
    best = None
    for prefix, r in RANKS:
        if module == prefix or module.startswith(prefix + "."):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, r)
    return best


def module_name(path):
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[0] == "kernels":
        parts[0] = "minillm.kernels"
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported(path, modname):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    pkg = modname if path.name == "__init__.py" else modname.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
                if node.module is None:
                    for a in node.names:
                        yield f"{mod}.{a.name}"
                    continue
                yield mod
            else:  # `from minillm import backend` imports minillm.backend
                for a in node.names:
                    yield f"{node.module}.{a.name}"


def sources():
    for top in ("minillm", "kernels"):
        yield from sorted((ROOT / top).rglob("*.py"))


def test_imports_point_down():
    problems = []
    for path in sources():
        mod = module_name(path)
        me = rank(mod)
        for target in imported(path, mod):
            if target.split(".")[0] in ("torch", "jax", "tensorflow"):
                problems.append(f"{mod} imports a deep-learning framework ({target})")
            if target.split(".")[0] == "cupy" and not (mod.startswith("minillm.kernels") or mod == "minillm.backend"):
                problems.append(f"{mod} imports cupy outside kernels/ and backend")
            if mod.startswith("minillm.kernels") and target.startswith("minillm") and not target.startswith("minillm.kernels"):
                problems.append(f"{mod} (kernels) imports {target}")
            other = rank(target) if target.startswith("minillm") else None
            if me and other and other[1] > me[1]:
                problems.append(f"{mod} (layer {me[1]}) imports {target} (layer {other[1]})")
            if me and me[0] in DATA_LAYER and other and other[0] not in DATA_LAYER + DATA_LAYER_MAY_USE:
                problems.append(f"{mod} (data layer) imports {target}")
    assert not problems, "\n".join(problems)


def test_the_table_covers_every_module():
    missing = [module_name(p) for p in sources() if rank(module_name(p)) is None]
    assert not missing, missing
