"""Interpreter settings that keep the GUI thread responsive beside busy worker threads.

The camera, pipeline and SLM threads run Python between their numpy/OpenCV calls, and all
threads share one interpreter lock (GIL). Two interpreter-wide costs then land on the GUI
thread as freezes:

* the switch interval: a worker may keep the GIL for up to 5 ms (Python's default) each time
  the GUI thread asks for it, so a 20 ms repaint can take 100+ ms on a busy machine;
* full (generation 2) garbage collections: they walk every tracked object while holding the
  GIL. With napari, Qt, PyTorch and the detector loaded that is ~250 ms, in whichever thread
  happens to trigger it.

:func:`prefer_gui_thread` shortens the switch interval; :func:`freeze_long_lived_heap` moves
what is alive after start-up (and after each command that loads models) to the collector's
permanent generation, so later full collections only walk objects made since. Frozen objects
that become garbage *in reference cycles* are not collected while frozen, and a run's live
pipeline is such a cycle: :func:`thaw_heap` makes them collectable again when a run ends, and
:func:`collect_and_freeze` starts the next run with one full collection (a ~0.3 s pause when
the rotation starts, not while reconstructing). All of it is the standard library's public
``sys``/``gc`` API.
"""

from __future__ import annotations

import gc
import sys

#: how long a thread may hold the interpreter while another waits for it
GUI_SWITCH_INTERVAL_S = 0.001


def prefer_gui_thread() -> None:
    """Let a waiting thread (the GUI) get the interpreter back within ~1 ms instead of 5 ms.

    The cost is a few more thread switches per second in the workers.
    """
    if sys.getswitchinterval() > GUI_SWITCH_INTERVAL_S:
        sys.setswitchinterval(GUI_SWITCH_INTERVAL_S)


def freeze_long_lived_heap() -> None:
    """Exclude every object alive now from future garbage collections (``gc.freeze``).

    Call it when long-lived state was just built (main window, holograms, detector model).
    It is O(1); frozen objects are still freed by reference counting, but reference cycles
    among them are not collected until :func:`thaw_heap`.
    """
    gc.freeze()


def thaw_heap() -> None:
    """Make frozen objects collectable again (a run ended: its pipeline may now be garbage)."""
    gc.unfreeze()


def collect_and_freeze() -> None:
    """Start of a run: collect the previous run's garbage once, then freeze what is left."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
