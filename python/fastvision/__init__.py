"""fastvision: fast, faithful C++/CUDA operators and models for six vision papers."""

import torch  # noqa: F401  (loads libtorch before the extension that links against it)

from fastvision._loader import load_extension

_C = load_extension()
__version__ = _C.version

from fastvision import ops  # noqa: E402  (registers fake kernels and autograd)

__all__ = ["ops", "__version__", "build_info"]


def build_info() -> dict:
    """How this fastvision was built: versions, CUDA on/off and architectures."""
    return {
        "fastvision": _C.version,
        "built_with_torch": _C.torch_version,
        "cuda_compiled": bool(_C.cuda),
        "cuda_archs": _C.cuda_archs or None,
        "cuda_runtime_version": _C.cuda_version,
        "compiler": getattr(_C, "compiler", None),
        # "avx2+fma" or "baseline": the CPU kernels with an AVX2 variant, as chosen on this machine
        # (FASTVISION_CPU_BASELINE=1 forces the portable build).
        "cpu_kernels": _C.cpu_kernels,
    }
