"""A stand-in ``libueye_api`` built with the C compiler, so the real pyueye imports and its ctypes
wrappers run without the IDS driver.

Why: pyueye binds every uEye function at import (``PYUEYE_DLL_PATH``) and refuses to import
without the library. The stub exports every function pyueye binds; each returns ``IS_SUCCESS``
and writes nothing, except that the host has no camera: ``is_GetNumberOfCameras`` reports 0 and
``is_InitCamera`` fails with ``IS_CANT_OPEN_DEVICE`` as the real driver does with nothing
plugged in. Because nothing is written through the pointers, any argument the real wrappers
accept is safe to pass.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

IS_CANT_OPEN_DEVICE = 3

_SPECIAL = {
    "is_GetNumberOfCameras": "int is_GetNumberOfCameras(int *n) { if (n) *n = 0; return 0; }",
    "is_InitCamera": f"int is_InitCamera(void *h, void *w) {{ return {IS_CANT_OPEN_DEVICE}; }}",
}


def pyueye_source() -> Path | None:
    """Path of the installed pyueye's ``ueye.py`` (found without importing pyueye), or None."""
    spec = importlib.util.find_spec("pyueye")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "ueye.py"
    return path if path.is_file() else None


def bound_functions(source: Path) -> list[str]:
    """Names pyueye binds from the library (``_bind("is_...", ...)``)."""
    return sorted(set(re.findall(r'_bind\(\s*"(\w+)"', source.read_text(encoding="utf-8", errors="replace"))))


def build_stub(folder: Path, names: list[str]) -> Path:
    """Compile ``libueye_api.so`` exporting ``names`` into ``folder``; raises RuntimeError without gcc."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise RuntimeError("no C compiler (gcc/cc) on PATH")
    folder.mkdir(parents=True, exist_ok=True)
    lines = [_SPECIAL.get(n, f"int {n}(void) {{ return 0; }}") for n in names]
    src = folder / "ueye_stub.c"
    src.write_text("\n".join(lines) + "\n")
    lib = folder / "libueye_api.so"
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(lib), str(src)], check=True, capture_output=True)
    return lib


def import_real_pyueye(monkeypatch, folder: Path) -> ModuleType:
    """Import the installed pyueye against a freshly built stub; returns ``pyueye.ueye``.

    The modules are removed from ``sys.modules`` again when the test ends (monkeypatch), so fakes
    installed by other tests are not disturbed.
    """
    source = pyueye_source()
    if source is None:
        raise RuntimeError("pyueye is not installed")
    if not (folder / "libueye_api.so").is_file():  # one build per folder (a session fixture shares it)
        build_stub(folder, bound_functions(source))
    monkeypatch.setenv("PYUEYE_DLL_PATH", str(folder))
    for name in _PYUEYE_MODULES:  # whatever is there now comes back (or goes) at teardown
        if name in sys.modules:
            monkeypatch.delitem(sys.modules, name)
        else:
            monkeypatch.setitem(sys.modules, name, None)
            del sys.modules[name]
    import ctypes.util
    import importlib
    import warnings

    with warnings.catch_warnings(), monkeypatch.context() as mp:
        warnings.simplefilter("ignore", ImportWarning)  # optional tools/stream libraries are absent
        # only the stub counts: no system search (find_library spawns ldconfig/gcc per name)
        mp.setattr(ctypes.util, "find_library", lambda name: None)
        return importlib.import_module("pyueye.ueye")


_PYUEYE_MODULES = ("pyueye", "pyueye.ueye", "pyueye.dll", "pyueye.ueye_tools", "pyueye.ueye_stream")
