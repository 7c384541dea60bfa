"""The import graph follows the layers of shared/DESIGN.md: no import points up, and the only
import circle is the Tensor <-> op one inside the autograd core.

Imports are read with ast from every module of minillm/ and kernels/ (installed as
minillm.kernels), imports inside functions included: a lazy import is still a dependency.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# DESIGN.md's layers, bottom to top: a module may import its own layer or lower ones. The
# longest matching prefix decides (minillm.ops.composite is in minillm.ops's layer).
LAYERS = {
    "minillm.kernels": 1,  # pure array functions; imports nothing of minillm
    # 2: devices and arrays, and the stdlib-only pieces every layer may use
    "minillm.backend": 2, "minillm.errors": 2, "minillm._env": 2, "minillm.configs": 2,
    "minillm.fetch": 2, "minillm.checkpoints.atomic": 2, "minillm._memory": 2,
    # 3: the autograd core (Tensor, the graph, the differentiable ops, gradient checking)
    "minillm.tensor": 3, "minillm.autograd": 3, "minillm.ops": 3, "minillm.functional": 3,
    "minillm.testing": 3,
    "minillm.nn": 4,
    "minillm.models": 5,
    "minillm.optim": 6, "minillm.lr_scheduler": 6,
    "minillm.amp": 6,  # mixed precision: beside the optimizers (DESIGN layer 6)
    "minillm.tokenizers": 7, "minillm.data": 7,
    "minillm.checkpoints": 8,
    "minillm.distributed": 9,
    # 10: the jobs (training, fine-tuning, sampling and the generation engine)
    "minillm.train": 10, "minillm.sample": 10, "minillm.generate": 10, "minillm.chat": 10,
    "minillm.finetune": 10,
    # 11: the surfaces: HTTP, the command line, and the package's public namespace
    "minillm.serve": 11, "minillm.cli": 11, "minillm.__main__": 11, "minillm": 11,
}
AUTOGRAD_CORE = ("minillm.tensor", "minillm.autograd", "minillm.ops", "minillm.functional")
DATA_LAYER = ("minillm.tokenizers", "minillm.data")  # numpy-only: no tensors, no models
STDLIB_ONLY = ("minillm.errors", "minillm._env", "minillm.fetch", "minillm.configs",
               "minillm.checkpoints.atomic", "minillm._memory")

# Known violations, listed until they are removed; the test fails on an entry that no longer
# occurs, so the lists only shrink.
KNOWN_UPWARD = set()  # (importer, imported module)
KNOWN_CIRCLES = []  # each a set of modules that import one another, directly or around a loop


def layer(module):
    """(prefix, layer) of the longest LAYERS prefix of ``module``, or None."""
    best = None
    for prefix, n in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, n)
    return best


INSTALLED_AS = {"kernels": "minillm.kernels", "configs": "minillm.configs"}  # pyproject.toml


def module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    parts[0] = INSTALLED_AS.get(parts[0], parts[0])
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def sources():
    for top in ("minillm", *INSTALLED_AS):
        yield from sorted((ROOT / top).rglob("*.py"))


MODULES = {module_name(p): p for p in sources()}


def imported(path, modname):
    """Every name ``path`` imports, anywhere in the file: ``from a import b`` gives a.b (b may
    be a module or a name inside a)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    pkg = modname if path.name == "__init__.py" else modname.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")
                up = up[: len(up) - (node.level - 1)]
                base = ".".join(up + ([node.module] if node.module else []))
            for a in node.names:
                yield f"{base}.{a.name}"


def target_module(name):
    """The module of minillm that importing ``name`` runs: the longest prefix that is a file."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in MODULES:
            return ".".join(parts[:n])
    return None


def edges():
    """(importer, imported module) for every import between modules of minillm."""
    for mod, path in MODULES.items():
        for name in imported(path, mod):
            target = target_module(name)
            if target is not None and target != mod:
                yield mod, target


def circles(graph):
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(graph[w])))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = set()
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.add(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(comp)
    return out


def in_core(module):
    return any(module == p or module.startswith(p + ".") for p in AUTOGRAD_CORE)


def test_imports_point_down():
    problems, known_seen = [], set()
    for path in sources():
        mod = module_name(path)
        me = layer(mod)
        for target in imported(path, mod):
            top = target.split(".")[0]
            if top in ("torch", "jax", "tensorflow"):
                problems.append(f"{mod} imports a deep-learning framework ({target})")
            if top == "cupy" and not mod.startswith(("minillm.kernels", "minillm.backend")):
                problems.append(f"{mod} imports cupy outside kernels/ and backend")
            if top != "minillm":
                continue
            if mod.startswith("minillm.kernels") and not target.startswith("minillm.kernels"):
                problems.append(f"{mod} (kernels) imports {target}")
            dep = target_module(target) or target
            other = layer(dep)
            if me and other and other[1] > me[1]:
                if (mod, dep) in KNOWN_UPWARD:
                    known_seen.add((mod, dep))
                else:
                    problems.append(f"{mod} (layer {me[1]}) imports {dep} (layer {other[1]})")
            if me and me[0] in DATA_LAYER and other and other[0] not in DATA_LAYER + STDLIB_ONLY:
                problems.append(f"{mod} (data layer) imports {target}")
    gone = KNOWN_UPWARD - known_seen
    assert not gone, f"no longer imported, delete from KNOWN_UPWARD: {sorted(gone)}"
    assert not problems, "\n".join(problems)


def test_the_only_import_circle_is_the_autograd_core():
    graph = {m: set() for m in MODULES}
    for a, b in edges():
        graph[a].add(b)
    found = circles(graph)
    unexpected = [sorted(c) for c in found
                  if not all(in_core(m) for m in c) and c not in KNOWN_CIRCLES]
    assert not unexpected, f"import circles outside the autograd core: {unexpected}"
    gone = [sorted(c) for c in KNOWN_CIRCLES if c not in found]
    assert not gone, f"these circles are gone, delete them from KNOWN_CIRCLES: {gone}"


def test_the_circle_finder_finds_circles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e", "d"}}
    assert circles(graph) == [{"a", "b", "c"}]


def test_the_table_covers_every_module():
    missing = [m for m in MODULES if layer(m) is None]
    assert not missing, missing
