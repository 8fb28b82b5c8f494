"""Print what CMake needs to know about the installed torch, as CMake `set()` lines."""
import torch
import torch.utils

print(f'set(FV_TORCH_PREFIX "{torch.utils.cmake_prefix_path}")')
print(f'set(FV_TORCH_VERSION "{torch.__version__}")')
print(f'set(FV_TORCH_CUDA "{torch.version.cuda or ""}")')
print(f'set(FV_TORCH_CXX11_ABI "{int(torch._C._GLIBCXX_USE_CXX11_ABI)}")')
