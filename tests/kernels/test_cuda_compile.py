"""Compile checks for kernels/cuda/*.cu that run without a GPU (here and in CI).

Each (file, defines) that a launcher can load (``kernels.cuda.all_configs()``) is rendered
exactly as kernels/cuda/_compile.py renders it for NVRTC at load time, compiled by nvcc to PTX
for sm_90 with -std=c++17, and the PTX assembled by ptxas (inline-PTX mistakes, e.g. a wrong
mma operand, only show up there). The PTX must define every kernel the launcher asks for.
Without nvcc the tests skip with a reason.

The default run builds one representative configuration per file (including both inline-PTX
mma kernels: matmul v6 and attention v2) in parallel; the full set is marked slow
(``pytest -m slow tests/kernels/test_cuda_compile.py``).
"""

import hashlib
import importlib
import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from minillm.kernels import cuda as K
from minillm.kernels.cuda import _compile as cc

_mod = lambda name: importlib.import_module(f"minillm.kernels.cuda.{name}")  # noqa: E731
k_matmul, k_layernorm, k_softmax, k_crossentropy, k_gelu, k_adamw, k_attention = map(
    _mod, ("matmul", "layernorm", "softmax", "crossentropy", "gelu", "adamw", "attention")
)

ARCH = "sm_90"
NVCC = shutil.which("nvcc")
PTXAS = shutil.which("ptxas") or (
    os.path.join(os.path.dirname(os.path.realpath(NVCC)), "ptxas") if NVCC else None
)
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH (CUDA toolkit absent)")

ALL = K.all_configs()
# One configuration per file for the default run: the GPT-2-shaped ones and both mma kernels.
FAST = [
    ("matmul.cu", k_matmul.DEFINES[6]),
    ("layernorm.cu", dict(LN_WARPS=k_layernorm.LN_WARPS, LN_J=24)),
    ("softmax.cu", k_softmax.DEFINES),
    ("crossentropy.cu", k_crossentropy.DEFINES),
    ("gelu.cu", k_gelu.DEFINES),
    ("adamw.cu", k_adamw.DEFINES),
    ("attention.cu", k_attention.defines(2, 64, "bfloat16")),
    ("rmsnorm.cu", _mod("rmsnorm").DEFINES),
    ("rope.cu", _mod("rope").DEFINES),
    ("swiglu.cu", _mod("swiglu").DEFINES),
    _mod("qmatmul").CONFIGS[1],  # Q4_0: nibbles and the centred code
]
SLOW = [c for c in ALL if c not in FAST]
LAUNCHER = {
    "matmul.cu": k_matmul,
    "layernorm.cu": k_layernorm,
    "softmax.cu": k_softmax,
    "crossentropy.cu": k_crossentropy,
    "gelu.cu": k_gelu,
    "adamw.cu": k_adamw,
    "attention.cu": k_attention,
    "rmsnorm.cu": _mod("rmsnorm"),
    "rope.cu": _mod("rope"),
    "swiglu.cu": _mod("swiglu"),
    "qmatmul.cu": _mod("qmatmul"),
}


def _id(cfg):
    f, d = cfg
    return f.removesuffix(".cu") + "-" + "-".join(f"{k}{v}" for k, v in sorted(d.items()))


def compile_one(cfg, workdir):
    """(ok, log, ptx text) for one configuration: nvcc -> PTX, then ptxas -> cubin."""
    filename, defines = cfg
    tag = hashlib.sha1(_id(cfg).encode()).hexdigest()[:12]
    src = os.path.join(workdir, f"{filename[:-3]}_{tag}.cu")
    ptx, cubin = src[:-3] + ".ptx", src[:-3] + ".cubin"
    with open(src, "w") as f:
        f.write(cc.render(filename, defines))
    cmds = [
        [NVCC, "--ptx", f"-arch={ARCH}", *cc.NVRTC_OPTIONS, src, "-o", ptx],
        [PTXAS, f"-arch={ARCH}", ptx, "-o", cubin],
    ]
    log = ""
    for cmd in cmds:
        r = subprocess.run(cmd, capture_output=True, text=True)
        log += r.stdout + r.stderr
        if r.returncode != 0:
            return False, log, ""
    with open(ptx) as f:
        return True, log, f.read()


def _compile_all(configs, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("nvcc"))
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as ex:
        results = ex.map(lambda c: compile_one(c, workdir), configs)
        return {_id(c): r for c, r in zip(configs, results)}


@pytest.fixture(scope="module")
def fast_results(tmp_path_factory):
    if NVCC is None:
        pytest.skip("nvcc is not on PATH (CUDA toolkit absent)")
    return _compile_all(FAST, tmp_path_factory)


@pytest.fixture(scope="module")
def slow_results(tmp_path_factory):
    if NVCC is None:
        pytest.skip("nvcc is not on PATH (CUDA toolkit absent)")
    return _compile_all(SLOW, tmp_path_factory)


def _check(cfg, results):
    ok, log, ptx = results[_id(cfg)]
    assert ok, f"{_id(cfg)} failed to compile:\n{log}"
    entries = set(re.findall(r"\.entry\s+(\w+)", ptx))
    want = set(LAUNCHER[cfg[0]].kernel_names(cfg[1]))
    assert want <= entries, f"{_id(cfg)}: kernels missing from the PTX: {sorted(want - entries)}"


@needs_nvcc
@pytest.mark.parametrize("cfg", FAST, ids=_id)
def test_compiles_fast_subset(cfg, fast_results):
    _check(cfg, fast_results)


@pytest.mark.slow
@needs_nvcc
@pytest.mark.parametrize("cfg", SLOW, ids=_id)
def test_compiles_every_config(cfg, slow_results):
    _check(cfg, slow_results)


def test_fast_subset_is_loadable_and_every_file_covered():
    files = {f for f in os.listdir(cc.CU_DIR) if f.endswith(".cu")}
    assert {f for f, _ in FAST} == files == {f for f, _ in ALL}
    assert all(c in ALL for c in FAST)


def test_render_prepends_the_defines():
    text = cc.render("adamw.cu", dict(AW_THREADS=128))
    assert text.startswith('#define AW_THREADS 128\n#line 1 "adamw.cu"\n')
    assert text.endswith(cc.source("adamw.cu"))


@needs_nvcc
def test_missing_placeholder_is_a_compile_error(tmp_path):
    src = tmp_path / "m.cu"
    src.write_text(cc.render("matmul.cu", {}))
    r = subprocess.run(
        [
            NVCC,
            "--ptx",
            f"-arch={ARCH}",
            *cc.NVRTC_OPTIONS,
            str(src),
            "-o",
            str(tmp_path / "m.ptx"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0 and "VERSION must be defined" in r.stderr + r.stdout


def test_package_imports_without_cupy():
    """kernels.cuda is importable (its configs listable, its LADDERS readable) with no cupy: the
    registry and this test rely on it. cupy itself is only imported inside launch functions."""
    import subprocess as sp
    import sys

    code = (
        "import sys; import minillm.kernels.cuda as K; K.all_configs(); "
        "from minillm.kernels import registry; lads = registry.ladders('cuda'); "
        "assert lads['matmul'].default == 7 and lads['attention_forward'].also == (2,); "
        "assert 'cupy' not in sys.modules, 'kernels.cuda imported cupy'"
    )
    r = sp.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_qmatmul_ladder_is_declared_and_declines_host_inputs():
    from minillm.kernels import quant, registry
    from minillm.kernels.cuda import qmatmul as K

    lads = registry.ladders("cuda")
    for op in ("qmatmul_forward", "qmatmul_backward_input"):
        assert lads[op].versions == (1, 2) and lads[op].default == 2 and lads[op].also == (1,)
    qw = quant.QuantWeight.from_float(np.ones((5, 64), np.float32), "Q8_0")
    x = np.ones((3, 64), np.float32)
    assert K.fits_forward_v1(x, qw) == "not a CuPy array"  # host arrays run the reference
    assert {c[1]["QM_TYPE"] for c in K.CONFIGS} == set(quant.MATMUL_TYPES)
