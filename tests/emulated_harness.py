"""Runs the project's CUDA kernels on the CPU (``pytest -m emulated``).

A *driver* (``tests/emulated/drive_<op>.cpp``) includes an op's torch-free kernel header
(``csrc/ops/<family>/<op>_kernels.cuh``), which compiles with g++ against the CUDA-on-CPU emulator
(``csrc/testing/cuda_on_cpu.h``). This module compiles a driver from the checkout at test time,
caches the binary by the hash of every file it includes, runs it and reads its results.

Driver protocol (for writing ``drive_<op>.cpp``):

* argv: one or more case files. For each case file ``X`` the driver reads its input arrays, plans
  and launches the kernels exactly as the op's ``.cu`` glue does (taking device limits from
  ``fvemu::gpu()``), and writes its output arrays to ``X.out``. Many cases per run keep the suite
  fast. Exit status 0 on success.
* Array file format (``tests/emulated/array_io.h`` reads and writes it): arrays one after another,
  each a header line ``<name> <dtype> <ndim> <dim0> <dim1> ...\\n`` (dtype ``f4``, ``f8`` or ``i8``)
  followed by the raw little-endian data, C order. A scalar has ndim 0.
* Environment set by :func:`run`: ``FVEMU_GPU`` (A100, H100, H200, L4, T4), ``FVEMU_SCHEDULE``
  (forward, reverse, random:SEED), ``FVEMU_BLOCK_ORDER`` (forward, reverse, shuffle:SEED).
* Any emulator report ("fvemu error: ..." and exit status 86), sanitizer report or other failure
  of the driver raises :class:`EmulatorFailure` carrying the driver's stderr, which fails the test.

Builds (``variant``): ``plain`` (-O1), ``asan`` (AddressSanitizer + UBSan) and ``tsan``
(ThreadSanitizer); all with ``-ffp-contract=off`` so g++ rounds like the ``_rn`` intrinsics.
Binaries are cached under ``$FASTVISION_EMULATED_CACHE`` (default ``~/.cache/fastvision/emulated``).
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DRIVERS = REPO / "tests" / "emulated"
INCLUDE_DIRS = [
    REPO / "csrc" / "include",
    REPO / "csrc" / "testing",
    DRIVERS,
    *sorted(p for p in (REPO / "csrc" / "ops").iterdir() if p.is_dir()),
]
VARIANTS = {
    "plain": ["-O1"],
    "asan": ["-O1", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
             "-fno-omit-frame-pointer"],
    "tsan": ["-O1", "-fsanitize=thread"],
}
SANITIZER_ENV = {
    "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0:exitcode=87",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
    "TSAN_OPTIONS": "halt_on_error=1:exitcode=88:report_signal_unsafe=0",
}
_DTYPES = {"f4": np.float32, "f8": np.float64, "i8": np.int64}
_CODES = {np.dtype(v): k for k, v in _DTYPES.items()}


class EmulatorFailure(AssertionError):
    """The driver failed: an emulator or sanitizer report, a crash, or a compile error."""


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "fastvision" / "emulated"
    return Path(os.environ.get("FASTVISION_EMULATED_CACHE", default))


def _included_files(source: Path, include_dirs: list[Path]) -> list[Path]:
    """Every project file `source` includes, transitively (system headers excluded)."""
    seen: dict[Path, None] = {}
    todo = [source.resolve()]
    pattern = re.compile(r'^\s*#\s*include\s*[<"]([^">]+)[">]', re.M)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen[path] = None
        for name in pattern.findall(path.read_text()):
            for base in [path.parent, *include_dirs]:
                candidate = (base / name).resolve()
                if candidate.is_file():
                    todo.append(candidate)
                    break
    return sorted(seen)


def build(driver: str, variant: str = "plain", source_root: Path | None = None) -> Path:
    """Compiles tests/emulated/<driver>.cpp (under `source_root`, default the checkout) in
    `variant` and returns the binary, reusing a cached one built from identical sources."""
    root = Path(source_root) if source_root is not None else REPO
    include_dirs = [root / p.relative_to(REPO) for p in INCLUDE_DIRS]
    source = root / "tests" / "emulated" / f"{driver}.cpp"
    flags = ["-std=c++20", "-g", "-Wall", "-Wextra", "-Werror", "-Wno-unknown-pragmas",
             "-ffp-contract=off", "-DFV_CUDA_EMULATION", *VARIANTS[variant]]
    digest = hashlib.sha256(" ".join(flags).encode())
    for path in _included_files(source, include_dirs):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    binary = cache_dir() / f"{driver}-{variant}-{digest.hexdigest()[:20]}"
    if binary.exists():
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    tmp = binary.with_name(binary.name + f".tmp{os.getpid()}")
    cmd = ["g++", *flags, *(f"-I{p}" for p in include_dirs), str(source), "-o", str(tmp)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise EmulatorFailure(f"compiling {source.name} ({variant}) failed:\n{proc.stderr}")
    tmp.replace(binary)  # atomic: a concurrent build of the same sources writes the same file
    return binary


def write_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:
        for name, value in arrays.items():
            a = np.ascontiguousarray(value)
            code = _CODES[a.dtype]
            f.write(f"{name} {code} {a.ndim} {' '.join(map(str, a.shape))}\n".encode())
            f.write(a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes())


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    data = Path(path).read_bytes()
    out, pos = {}, 0
    while pos < len(data):
        end = data.index(b"\n", pos)
        name, code, ndim, *dims = data[pos:end].decode().split()
        shape = tuple(int(d) for d in dims[: int(ndim)])
        dtype = np.dtype(_DTYPES[code]).newbyteorder("<")
        count = int(np.prod(shape, dtype=np.int64))
        pos = end + 1
        out[name] = np.frombuffer(data, dtype, count, pos).reshape(shape).astype(_DTYPES[code])
        pos += count * dtype.itemsize
    return out


def run(driver: str, cases: list[dict[str, np.ndarray]], *, variant: str = "plain",
        schedule: str = "forward", block_order: str = "forward", gpu: str = "H100",
        source_root: Path | None = None, timeout: float = 600) -> list[dict[str, np.ndarray]]:
    """Runs `cases` (input arrays) through one process of the driver; returns their outputs."""
    binary = build(driver, variant, source_root)
    env = dict(os.environ, FVEMU_GPU=gpu, FVEMU_SCHEDULE=schedule, FVEMU_BLOCK_ORDER=block_order,
               **SANITIZER_ENV)
    with tempfile.TemporaryDirectory(prefix="fvemu-") as tmp:
        files = []
        for n, case in enumerate(cases):
            files.append(Path(tmp) / f"case{n}")
            write_arrays(files[-1], case)
        proc = subprocess.run([str(binary), *map(str, files)], capture_output=True, text=True,
                              env=env, timeout=timeout)
        if proc.returncode != 0:
            raise EmulatorFailure(
                f"{driver} ({variant}, schedule {schedule}, blocks {block_order}, {gpu}) exited "
                f"with status {proc.returncode}:\n{proc.stderr[-8000:]}")
        return [read_arrays(Path(str(f) + ".out")) for f in files]
