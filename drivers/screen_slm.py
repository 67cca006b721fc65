"""Screen SLM: a frameless full-screen Qt window on the SLM's monitor showing the phase image 1:1.

Why: a PLUTO-2 (and most phase SLMs) is an HDMI/DVI monitor to the PC, so drawing the 8-bit
phase image pixel-exact on that screen drives it without a vendor SDK. The image is drawn at
one image pixel per *device* pixel (``QImage.setDevicePixelRatio``), no smoothing, no scaling,
after the SLM's phase LUT (``two_pi_grey`` or ``lut_path``).

Threading: Qt widgets live in the GUI thread. ``show_grey``/``show_phase`` may be called from
any thread (the rotation driver runs its own); off the GUI thread the paint is posted to the GUI
thread and the call waits until the frame has been painted and flushed to the window system,
so returning from ``show_phase`` means the pattern is on its way to the next refresh.
Qt is imported lazily (drivers import no Qt at module import).
"""

from __future__ import annotations

import logging
import threading
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np

from mcf_rotator.config import SLMConfig
from mcf_rotator.drivers.holoeye import PhaseSLMBase
from mcf_rotator.errors import DeviceDisconnectedError, DeviceError, DeviceNotFoundError

log = logging.getLogger(__name__)

_QT: SimpleNamespace | None = None


def _qt() -> SimpleNamespace:
    """Import qtpy and build the Qt classes once (kept out of module import on purpose)."""
    global _QT
    if _QT is not None:
        return _QT
    try:
        from qtpy import QtCore, QtGui, QtWidgets
    except Exception as exc:  # noqa: BLE001 - any binding failure means "no Qt"
        raise DeviceError(f"screen SLM: Qt is not usable ({exc}); install PySide6-Essentials") from exc

    class Invoker(QtCore.QObject):
        """Runs callables in the thread it lives in (the GUI thread)."""

        call = QtCore.Signal(object)

        def __init__(self) -> None:
            super().__init__()
            self.call.connect(self._run, QtCore.Qt.ConnectionType.QueuedConnection)

        @QtCore.Slot(object)
        def _run(self, job: Callable[[], None]) -> None:
            job()

    class SLMWindow(QtWidgets.QWidget):
        """Frameless, cursorless window that paints one QImage at 1:1 device pixels."""

        def __init__(self, on_closed: Callable[[], None]) -> None:
            flags = (QtCore.Qt.WindowType.FramelessWindowHint | QtCore.Qt.WindowType.WindowStaysOnTopHint
                     | QtCore.Qt.WindowType.Window)
            super().__init__(None, flags)
            self.setWindowTitle("mcf-rotator SLM")
            self.setCursor(QtCore.Qt.CursorShape.BlankCursor)
            self.setAttribute(QtCore.Qt.WidgetAttribute.WA_OpaquePaintEvent, True)
            self.setAttribute(QtCore.Qt.WidgetAttribute.WA_NoSystemBackground, True)
            # closing the main window must still quit the app while the SLM window is up
            self.setAttribute(QtCore.Qt.WidgetAttribute.WA_QuitOnClose, False)
            self.setFocusPolicy(QtCore.Qt.FocusPolicy.NoFocus)
            self._on_closed = on_closed
            self.closing_by_driver = False
            self._array: np.ndarray | None = None
            self._image: Any = None

        def set_image(self, grey: np.ndarray) -> None:
            h, w = grey.shape
            img = QtGui.QImage(grey.data, w, h, int(grey.strides[0]), QtGui.QImage.Format.Format_Grayscale8)
            img.setDevicePixelRatio(self.devicePixelRatioF())
            self._array, self._image = grey, img  # the QImage borrows the array's memory

        def paintEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
            p = QtGui.QPainter(self)
            p.setRenderHint(QtGui.QPainter.RenderHint.SmoothPixmapTransform, False)
            p.setCompositionMode(QtGui.QPainter.CompositionMode.CompositionMode_Source)
            p.fillRect(self.rect(), QtCore.Qt.GlobalColor.black)
            if self._image is not None:
                p.drawImage(0, 0, self._image)
            p.end()

        def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
            super().closeEvent(event)
            if not self.closing_by_driver:
                self._on_closed()

    _QT = SimpleNamespace(QtCore=QtCore, QtGui=QtGui, QtWidgets=QtWidgets, Invoker=Invoker, SLMWindow=SLMWindow)
    return _QT


def list_screens() -> list[str]:
    """Describe the monitors Qt sees, for error messages and check-hardware."""
    qt = _qt()
    app = qt.QtWidgets.QApplication.instance()
    if app is None:
        return []
    out = []
    for i, s in enumerate(qt.QtGui.QGuiApplication.screens()):
        g, dpr = s.geometry(), s.devicePixelRatio()
        out.append(f"{i}: {s.name()} {round(g.width() * dpr)}x{round(g.height() * dpr)} at ({g.x()}, {g.y()}) "
                   f"{s.refreshRate():.0f} Hz")
    return out


class ScreenSLM(PhaseSLMBase):
    """Any HDMI phase SLM (PLUTO-2, LETO, Meadowlark HDMI, ...) driven as a monitor.

    ``config.screen_index`` picks the monitor (see ``mcf-rotator check-hardware``); the
    monitor's pixel size must equal ``config.width`` x ``config.height`` unless
    ``strict_size=False`` (then the image is drawn 1:1 at the top-left corner).
    """

    def __init__(self, config: SLMConfig | None = None, *, name: str = "slm", strict_size: bool = True,
                 show_timeout_s: float = 2.0) -> None:
        super().__init__(config if config is not None else SLMConfig(driver="screen"), name)
        self.strict_size = strict_size
        self.show_timeout_s = float(show_timeout_s)
        self._app: Any = None
        self._invoker: Any = None
        self._window: Any = None
        self._screen: Any = None
        self._lost_reason = ""

    # -- GUI-thread plumbing -------------------------------------------------------------
    def _in_gui_thread(self) -> bool:
        qt = _qt()
        return qt.QtCore.QThread.currentThread() is self._app.thread() or \
            qt.QtCore.QThread.currentThread() == self._app.thread()

    def _gui(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn`` in the GUI thread and return its result (waits, with a timeout)."""
        if self._in_gui_thread():
            return fn(*args)
        done = threading.Event()
        box: dict[str, Any] = {}

        def job() -> None:
            try:
                box["result"] = fn(*args)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                box["error"] = exc
            finally:
                done.set()

        self._invoker.call.emit(job)
        if not done.wait(self.show_timeout_s):
            raise DeviceError(
                f"screen SLM: the GUI thread did not update the SLM window within {self.show_timeout_s:g} s "
                "(GUI busy or event loop not running)"
            )
        if "error" in box:
            raise box["error"]
        return box.get("result")

    # -- connection -------------------------------------------------------------------------
    def _connect(self) -> None:
        qt = _qt()
        app = qt.QtWidgets.QApplication.instance()
        if app is None:
            if threading.current_thread() is not threading.main_thread():
                raise DeviceError("screen SLM: no Qt application is running; open it from the GUI or main thread")
            app = qt.QtWidgets.QApplication([])
        self._app = app
        if self._invoker is None:
            self._invoker = qt.Invoker()
            if not self._in_gui_thread():
                self._invoker.moveToThread(app.thread())
        self._lost_reason = ""
        self._gui(self._open_window)

    def _open_window(self) -> None:
        qt = _qt()
        screens = qt.QtGui.QGuiApplication.screens()
        idx = int(self.config.screen_index)
        if idx >= len(screens):
            listing = "; ".join(list_screens()) or "none"
            raise DeviceNotFoundError(
                f"screen SLM: monitor {idx} not found (Qt sees {len(screens)}: {listing}). Connect the SLM's "
                "HDMI/DVI cable, extend the desktop onto it, and set slm.screen_index."
            )
        screen = screens[idx]
        geo, dpr = screen.geometry(), screen.devicePixelRatio()
        size = (round(geo.height() * dpr), round(geo.width() * dpr))
        if size != self._shape:
            msg = (f"screen SLM: monitor {idx} ({screen.name()}) is {size[1]}x{size[0]} pixels but the SLM is "
                   f"configured as {self._shape[1]}x{self._shape[0]}; set the monitor to the SLM's native "
                   "resolution at 100 % scaling, or fix slm.width / slm.height / slm.screen_index")
            if self.strict_size:
                raise DeviceError(msg)
            log.warning(msg)
        win = qt.SLMWindow(self._on_window_closed)
        win.setGeometry(geo)
        win.winId()  # create the native window so it can be put on the right screen
        handle = win.windowHandle()
        if handle is not None:
            handle.setScreen(screen)
        win.setGeometry(geo)
        blank = self._current if self._current is not None else np.zeros(self._shape, np.uint8)
        win.set_image(blank)
        win.showFullScreen()
        win.raise_()
        self._window, self._screen = win, screen
        self._app.screenRemoved.connect(self._on_screen_removed)
        self._present()

    def _close_window(self) -> None:
        win, self._window = self._window, None
        try:
            self._app.screenRemoved.disconnect(self._on_screen_removed)
        except (RuntimeError, TypeError):
            pass
        if win is not None:
            win.closing_by_driver = True
            win.close()
            win.deleteLater()
        self._screen = None

    def _disconnect(self) -> None:
        if self._app is None:
            return
        self._gui(self._close_window)

    def _on_window_closed(self) -> None:
        """The operator (or the window system) closed the SLM window."""
        self._lost_reason = "the SLM window was closed"
        self._window = None
        self._fail("screen SLM: the SLM window was closed; reconnect the SLM to show patterns again")

    def _on_screen_removed(self, screen: Any) -> None:
        if screen is self._screen or screen == self._screen:
            self._lost_reason = "the SLM monitor was disconnected"
            win, self._window = self._window, None
            if win is not None:
                win.closing_by_driver = True
                win.close()
            self._fail("screen SLM: the SLM monitor disappeared (cable or power); reconnect the SLM")

    # -- display ------------------------------------------------------------------------------
    def show_grey(self, grey: np.ndarray) -> None:
        if not self._connected and self._lost_reason:
            raise DeviceDisconnectedError(f"screen SLM: {self._lost_reason}; reconnect the SLM")
        super().show_grey(grey)

    def _display(self, grey: np.ndarray) -> None:
        self._gui(self._paint, grey)

    def _paint(self, grey: np.ndarray) -> None:
        win = self._window
        if win is None or not win.isVisible():
            self._lost_reason = self._lost_reason or "the SLM window is gone"
            self._lost(f"screen SLM: {self._lost_reason}; reconnect the SLM")
        win.set_image(grey)
        self._present()

    def _present(self) -> None:
        """Paint now and round-trip to the window system so the pixels have left the process."""
        self._window.repaint()
        sync = getattr(self._app, "sync", None)
        if sync is not None:
            sync()

    @property
    def window(self) -> Any:
        """The Qt window (tests grab it; the GUI may list it)."""
        return self._window

    def describe(self) -> str:
        name = self._screen.name() if self._screen is not None else "?"
        return (f"screen SLM on monitor {self.config.screen_index} ({name}): {self._shape[1]}x{self._shape[0]} px, "
                f"2pi at grey {self.lut.two_pi_grey}{' + LUT file' if self.lut.table is not None else ''}")
