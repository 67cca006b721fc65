"""Qt widgets of the operator application (the only package that imports Qt widgets).

Importing this package keeps PyTorch from loading Triton. Triton bundles its own LLVM; once
Mesa's llvmpipe (the software OpenGL behind napari's 3D view) has loaded its LLVM in the same
process, importing Triton (which ``torch.optim`` and ``torch._dynamo`` do) crashes the process
with a segmentation fault. The application never compiles kernels, so Triton is not needed.
"""

import sys as _sys


def _keep_triton_out() -> None:
    if "triton" not in _sys.modules:
        _sys.modules["triton"] = None  # type: ignore[assignment]  # import triton -> ImportError


_keep_triton_out()
