"""Holoeye phase SLMs through the Holoeye SLM Display SDK, plus the phase-LUT shared by all real SLMs.

Supported SDK Python APIs (the SDK is not on PyPI; it ships with the SLM installer and must be
on ``sys.path``, e.g. via the installer's ``HEDS_PYTHON_MODULES`` / ``PYTHONPATH``):

* **SLM Display SDK 4.x** - module ``HEDS`` with ``hedslib.heds_types``: ``HEDS.SDK.Init(4, 1)``,
  ``HEDS.SLM.Init(preselect, openPreview, previewScale)``, ``slm.showImageData(u8)`` (no data
  handle; with only ``loadImageData`` the handle is released after showing: handles hold GPU
  memory until ``release()``), ``slm.window().close()``.
* **SLM Display SDK 2.x / 3.x** - module ``holoeye.slmdisplaysdk``: ``SLMInstance().open()``
  (3.x) or ``SLMDisplay()`` (2.x), ``showData(u8)``, ``errorString(code)``, ``close()``/``release()``.

How the SDKs fail, and what the user is told: ``import HEDS`` raises RuntimeError (not
ImportError) when the SDK library cannot load; ``HEDS.SDK.Init`` *asserts* on a version mismatch;
with no SLM attached ``SLM.Init`` ends in ``HEDSERR_InvalidSLMWindow`` (or its assertion);
``SLMInstance()`` of 3.x raises RuntimeError when ``HEDS_3_2_PYTHON`` is unset; ``errorString``
returns bytes. Each becomes the matching :mod:`mcf_rotator.errors` class with the fix in words.

We always send 8-bit grey (phase already mapped through :class:`PhaseLUT`) so the same
calibration applies whether the SDK or the HDMI screen driver talks to the SLM.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from mcf_rotator.config import SLMConfig
from mcf_rotator.drivers.base import BaseDevice
from mcf_rotator.errors import (
    ConfigError,
    DeviceDisconnectedError,
    DeviceError,
    DeviceNotFoundError,
    SDKNotFoundError,
)

log = logging.getLogger(__name__)

#: heds_errorcodes (identical numbering in SDK 2.x-4.x)
HEDSERR_NoError = 0
HEDSERR_NoSLMConnected = 1
HEDSERR_InvalidSLMWindow = 37
HEDSERR_LibraryVersionMismatch = 44

#: the SDK 4.x API version this driver is written against (HEDS.SDK.Init(major, minor))
HEDS_API = (4, 1)


class PhaseLUT:
    """Phase (radians) -> 8-bit grey for one SLM at one wavelength.

    Without a table the map is linear with 2 pi at ``two_pi_grey`` (``phase_to_grey``). With a
    table (``lut_path``) the phase is first quantised to 256 levels ``k = 2 pi k / 256`` and
    ``grey = table[k]``, which captures a measured, non-linear phase response.
    """

    def __init__(self, two_pi_grey: int = 255, table: np.ndarray | None = None) -> None:
        self.two_pi_grey = int(two_pi_grey)
        self.table = None if table is None else np.asarray(table, dtype=np.uint8)
        if self.table is not None and self.table.shape != (256,):
            raise ValueError("a phase LUT needs exactly 256 entries")

    @classmethod
    def from_config(cls, cfg: SLMConfig) -> "PhaseLUT":
        table = load_lut_file(cfg.lut_path) if cfg.lut_path is not None else None
        return cls(two_pi_grey=cfg.two_pi_grey, table=table)

    def __call__(self, phase_rad: np.ndarray) -> np.ndarray:
        if self.table is None:
            return _phase_to_grey_inplace(phase_rad, self.two_pi_grey)
        return self.table[_phase_to_grey_inplace(phase_rad, 255)]


def _phase_to_grey_inplace(phase_rad: np.ndarray, two_pi_grey: int) -> np.ndarray:
    """Bit-identical to :func:`phase_to_grey` (same operations, same order) with one temporary
    instead of four: halves the LUT time for a 1920x1080 float64 phase."""
    n = int(two_pi_grey) + 1
    t = np.mod(np.asarray(phase_rad, dtype=np.float64), 2 * np.pi)
    t /= 2 * np.pi
    t *= n
    np.rint(t, out=t)
    t[t >= n] = 0
    return t.astype(np.uint8)


def load_lut_file(path: str | Path) -> np.ndarray:
    """Read a 256-entry LUT: ``.npy``, or text with 256 numbers or 256 ``index grey`` rows.

    Text may be separated by whitespace, commas or semicolons; ``#`` starts a comment.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: SLM LUT file not found (slm.lut_path)")
    try:
        if path.suffix.lower() == ".npy":
            arr = np.load(path)
        else:
            rows = []
            for line in path.read_text().splitlines():
                line = line.split("#", 1)[0].replace(",", " ").replace(";", " ").strip()
                if line:
                    rows.append([float(v) for v in line.split()])
            if rows and all(len(r) == 2 for r in rows):
                arr = np.array([r[1] for r in sorted(rows)])
            else:
                arr = np.array([v for r in rows for v in r])
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read the SLM LUT ({exc})") from exc
    arr = np.asarray(arr, dtype=np.float64).reshape(-1)
    if arr.size != 256 or np.any(arr < 0) or np.any(arr > 255) or np.any(arr != np.round(arr)):
        raise ConfigError(f"{path}: an SLM LUT must hold 256 integer grey levels 0..255 (found {arr.size} values)")
    return arr.astype(np.uint8)


class PhaseSLMBase(BaseDevice):
    """SLM protocol plumbing shared by real SLMs: LUT, shape checks, current image, reconnect."""

    def __init__(self, config: SLMConfig, name: str) -> None:
        super().__init__(name)
        self.config = config.model_copy()
        self.lut = PhaseLUT.from_config(self.config)
        self.pixel_pitch_um = float(self.config.pixel_pitch_um)
        self.refresh_rate_hz = float(self.config.refresh_rate_hz)
        self._shape = (int(self.config.height), int(self.config.width))
        self._current: np.ndarray | None = None
        self._show_lock = threading.Lock()

    @property
    def shape(self) -> tuple[int, int]:
        return self._shape

    @property
    def current_grey(self) -> np.ndarray | None:
        return self._current

    def show_phase(self, phase_rad: np.ndarray) -> None:
        """Wrap to [0, 2 pi), map through the LUT and display."""
        self.show_grey(self.lut(np.asarray(phase_rad)))

    def show_grey(self, grey: np.ndarray) -> None:
        """Display an 8-bit image exactly as given (shape must equal the SLM's)."""
        grey = np.asarray(grey)
        if grey.dtype != np.uint8:
            raise ValueError(f"{self.name}: show_grey needs uint8, got {grey.dtype}")
        if grey.shape != self._shape:
            raise ValueError(f"{self.name}: image {grey.shape} does not match the SLM {self._shape}")
        grey = np.ascontiguousarray(grey)
        with self.lock:
            if not self._connected:
                raise DeviceDisconnectedError(f"{self.name}: the SLM is not connected; reconnect it")
            self._display(grey)
            self._current = grey

    def _display(self, grey: np.ndarray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _lost(self, message: str) -> None:
        """The SLM went away: mark it, emit events.error, raise DeviceDisconnectedError."""
        self._fail(message)
        raise DeviceDisconnectedError(message)

    def reconnect(self) -> None:
        """Release whatever is left and open again; re-shows the last image."""
        with self.lock:
            last = self._current
            try:
                self._disconnect()
            except Exception as exc:
                log.debug("%s: cleanup before reconnect: %s", self.name, exc)
            self._connected = False
            self.connect()
            if last is not None:
                self.show_grey(last)


class HoloeyeSLM(PhaseSLMBase):
    """Holoeye PLUTO/LETO/GAEA through the SLM Display SDK (``api``: "auto", "heds" or "slmdisplaysdk").

    ``preselect`` is passed to the SDK's device detection (e.g. ``"index:0"`` or
    ``"name:PLUTO"``); empty opens the SDK's own selection dialog when several SLMs are attached.
    """

    def __init__(self, config: SLMConfig | None = None, *, name: str = "slm", api: str = "auto",
                 preselect: str = "", open_preview: bool = False) -> None:
        super().__init__(config if config is not None else SLMConfig(driver="holoeye_sdk"), name)
        if api not in ("auto", "heds", "slmdisplaysdk"):
            raise ValueError("api must be 'auto', 'heds' or 'slmdisplaysdk'")
        self.api = api
        self.preselect = preselect
        self.open_preview = open_preview
        self.api_in_use: str | None = None
        self._mod: Any = None
        self._slm: Any = None
        self._no_error = HEDSERR_NoError
        self._no_slm: set[int] = {HEDSERR_NoSLMConnected}
        self._handle: Any = None  # SDK 4.x data handle on screen (loadImageData path only)

    # -- SDK import ------------------------------------------------------------------------
    def _import(self) -> str:
        errors = []
        if self.api in ("auto", "heds"):
            try:
                import HEDS  # type: ignore[import-not-found]
                from hedslib import heds_types  # type: ignore[import-not-found]

                self._mod = HEDS
                self._no_error = getattr(heds_types, "HEDSERR_NoError", HEDSERR_NoError)
                self._no_slm = {getattr(heds_types, "HEDSERR_NoSLMConnected", HEDSERR_NoSLMConnected),
                                getattr(heds_types, "HEDSERR_InvalidSLMWindow", HEDSERR_InvalidSLMWindow)}
                return "heds"
            except ImportError as exc:
                errors.append(f"HEDS (SDK 4.x): {exc}")
            except RuntimeError as exc:  # the module is there but its library (.dll/.so) did not load
                errors.append(f"HEDS (SDK 4.x) is installed but its library did not load: {exc}")
        if self.api in ("auto", "slmdisplaysdk"):
            try:
                from holoeye import slmdisplaysdk  # type: ignore[import-not-found]

                self._mod = slmdisplaysdk
                codes = getattr(slmdisplaysdk, "ErrorCode", None) or slmdisplaysdk.SLMDisplay.ErrorCode
                self._no_error = codes.NoError
                self._no_slm = {getattr(codes, "NoSLMConnected", HEDSERR_NoSLMConnected)}
                return "slmdisplaysdk"
            except ImportError as exc:
                errors.append(f"holoeye.slmdisplaysdk (SDK 2.x/3.x): {exc}")
            except RuntimeError as exc:
                errors.append(f"holoeye.slmdisplaysdk (SDK 2.x/3.x) is installed but did not load: {exc}")
        raise SDKNotFoundError(
            "Holoeye SLM: the HOLOEYE SLM Display SDK is not importable (" + "; ".join(errors) + "). "
            "Install the SDK from the SLM's installer and add its python folder to PYTHONPATH, or use "
            "slm.driver: screen (the SLM is also an HDMI monitor)."
        )

    def _err_text(self, code: int, slm: Any = None) -> str:
        """The SDK's text for ``code`` (SDK 3.x returns bytes), or the bare number."""
        try:
            if self.api_in_use == "heds":
                text = self._mod.SDK.ErrorString(code)
            else:
                text = (slm if slm is not None else self._slm).errorString(code)
        except Exception:  # noqa: BLE001 - the text is a courtesy; the code is what matters
            return f"error code {code}"
        return _text(text) or f"error code {code}"

    # -- connection ----------------------------------------------------------------------------
    def _connect(self) -> None:
        self.api_in_use = self._import()
        try:
            if self.api_in_use == "heds":
                self._open_heds()
            else:
                self._open_slmdisplaysdk()
            h, w = self._device_shape
            if (h, w) != self._shape:
                raise DeviceError(
                    f"Holoeye SLM reports {w}x{h} pixels but the configuration says "
                    f"{self._shape[1]}x{self._shape[0]}; fix slm.width / slm.height"
                )
        except Exception:
            self._close_sdk()
            raise

    def _open_heds(self) -> None:
        HEDS = self._mod
        try:  # SDK 4.x asserts on a version mismatch instead of returning a code
            err = HEDS.SDK.Init(*HEDS_API)
        except AssertionError as exc:
            raise self._version_error(_text(exc.args[0] if exc.args else exc)) from exc
        if err is not None and err != self._no_error:
            raise self._version_error(self._err_text(err))
        try:  # with no SLM the SDK asserts on the SLM window (HEDSERR_InvalidSLMWindow)
            slm = HEDS.SLM.Init(self.preselect, self.open_preview, 0.0)
        except AssertionError as exc:
            text = _text(exc.args[0] if exc.args else exc) or "SLM window assertion"
            raise DeviceNotFoundError(self._no_slm_text(text)) from exc
        self._slm = slm  # closed again by _connect if anything below fails
        code = slm.errorCode()
        if code != self._no_error:
            self._raise_open(code, self._err_text(code))
        self._device_shape = (int(slm.height_px()), int(slm.width_px()))

    def _version_error(self, text: str) -> SDKNotFoundError:
        """The installed SDK cannot serve the API version this driver asks for."""
        major, minor = HEDS_API
        return SDKNotFoundError(
            f"Holoeye SLM: the installed SLM Display SDK cannot serve API {major}.{minor} ({text}). Install "
            f"HOLOEYE SLM Display SDK {major}.{minor} or newer, or use the 3.x SDK (HoloeyeSLM api "
            "'slmdisplaysdk'), or slm.driver: screen (the SLM is also an HDMI monitor)."
        )

    def _no_slm_text(self, text: str) -> str:
        """One wording for every way the SDK says 'no SLM' (code or window assertion)."""
        return (f"Holoeye SLM: no SLM found ({text}). Check the HDMI/DVI cable and the SLM's power "
                "supply, and that the SLM is set up as an extended monitor.")

    def _open_slmdisplaysdk(self) -> None:
        sdk = self._mod
        if hasattr(sdk, "SLMInstance"):
            try:
                slm = sdk.SLMInstance()
            except RuntimeError as exc:  # 3.x: HEDS_3_2_PYTHON unset, or its library failed to load
                raise SDKNotFoundError(
                    f"Holoeye SLM: the SLM Display SDK 3.x did not start ({_text(exc)}). Its installer sets "
                    "the environment variable HEDS_3_2_PYTHON to the SDK folder: log out and in after "
                    "installing, or set it by hand; or use slm.driver: screen."
                ) from exc
            code = slm.open()
        else:  # SDK 2.x opens in the constructor
            slm = sdk.SLMDisplay()
            code = getattr(slm, "errorCode", lambda: self._no_error)()
        self._slm = slm
        if code != self._no_error:
            self._raise_open(code, self._err_text(code, slm))
        if self.open_preview and hasattr(slm, "utilsSLMPreviewShow"):
            slm.utilsSLMPreviewShow()
        self._device_shape = (int(slm.height_px), int(slm.width_px))

    def _raise_open(self, code: int, text: str) -> None:
        if code in self._no_slm:
            raise DeviceNotFoundError(self._no_slm_text(text))
        raise DeviceError(f"Holoeye SLM: opening failed ({text})")

    def _close_sdk(self) -> None:
        handle, self._handle = self._handle, None
        self._release_handle(handle)
        slm, self._slm = self._slm, None
        if slm is None:
            return
        try:
            if self.api_in_use == "heds":
                slm.window().close()
            elif hasattr(slm, "close"):
                slm.close()
            elif hasattr(slm, "release"):
                slm.release()
        except Exception as exc:  # the window may already be gone
            log.debug("%s: closing the SDK: %s", self.name, exc)

    def _disconnect(self) -> None:
        self._close_sdk()

    # -- display -----------------------------------------------------------------------------
    def _display(self, grey: np.ndarray) -> None:
        slm = self._slm
        if self.api_in_use == "heds":
            err = self._show_heds(slm, grey)
        else:
            err = slm.showData(grey)
        if err == self._no_error:
            return
        text = self._err_text(err)
        if err in self._no_slm:
            self._slm = None
            self._lost(f"Holoeye SLM window was closed or the SLM disconnected ({text}); reconnect the SLM")
        raise DeviceError(f"Holoeye SLM: showing the pattern failed ({text})")

    def _show_heds(self, slm: Any, grey: np.ndarray) -> int:
        """Show without piling up data handles: each holds video memory until ``release()``.

        ``showImageData`` needs no handle. Where only ``loadImageData`` exists, the handle on
        screen is kept and released once the next one is shown (or on disconnect).
        """
        if hasattr(slm, "showImageData"):
            return slm.showImageData(grey)
        err, handle = slm.loadImageData(grey)
        if err != self._no_error or handle is None:
            return err
        err = handle.show()
        old, self._handle = self._handle, handle
        if err != self._no_error:
            old, self._handle = handle, old
        self._release_handle(old)
        return err

    def _release_handle(self, handle: Any) -> None:
        """Free a data handle's video memory; tolerant (the SDK may have dropped it with its window)."""
        if handle is None:
            return
        try:
            handle.release()
        except Exception as exc:  # noqa: BLE001 - see docstring
            log.debug("%s: releasing a data handle: %s", self.name, exc)

    def describe(self) -> str:
        api = {"heds": "SLM Display SDK 4.x (HEDS)", "slmdisplaysdk": "SLM Display SDK 2.x/3.x"}.get(
            self.api_in_use or "", "?")
        return (f"Holoeye SLM via {api}: {self._shape[1]}x{self._shape[0]} px, {self.pixel_pitch_um} um, "
                f"2pi at grey {self.lut.two_pi_grey}{' + LUT file' if self.lut.table is not None else ''}")


def probe(api: str = "auto") -> str:
    """What check-hardware reports for this driver: which SDK imports (no SLM window is opened);
    raises SDKNotFoundError saying what is missing."""
    slm = HoloeyeSLM(api=api)
    found = slm._import()
    return {"heds": "HOLOEYE SLM Display SDK 4.x (module HEDS) importable",
            "slmdisplaysdk": "HOLOEYE SLM Display SDK 2.x/3.x (holoeye.slmdisplaysdk) importable"}[found]


def _text(value: Any) -> str:
    """SDK text as str: SDK 3.x returns bytes from errorString (else messages read ``b'...'``)."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace").strip()
    return str(value).strip()
