"""Scale bars in micrometres for pyqtgraph image views (camera view, volume slices).

pyqtgraph's :class:`~pyqtgraph.ScaleBar` measures in view units (here: pixels) and labels
them with SI prefixes; we size it in pixels from the pixel size and label it in um.
"""

from __future__ import annotations

import math

import pyqtgraph as pg

#: bar lengths (um) to choose from: a round number about a fifth of the field
NICE_UM = (0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500)


def nice_length_um(field_um: float) -> float:
    """A round bar length near a fifth of ``field_um`` (the view's width in um)."""
    want = max(field_um, 1e-6) / 5.0
    best = min(NICE_UM, key=lambda v: abs(math.log(v / want)))
    return float(best)


class MicronScaleBar:
    """A scale bar in a ViewBox's lower right corner, labelled in um; resized with set_pixel()."""

    def __init__(self, viewbox: pg.ViewBox) -> None:
        self.viewbox = viewbox
        self.bar: pg.ScaleBar | None = None
        self.length_um: float | None = None
        self.pixel_um: float | None = None

    def set_pixel(self, pixel_um: float, field_px: int) -> None:
        """Pixels are ``pixel_um`` wide and the image ``field_px`` pixels across."""
        if not pixel_um or pixel_um <= 0 or field_px <= 0:
            return
        length = nice_length_um(pixel_um * field_px)
        if self.bar is not None and self.pixel_um == pixel_um and self.length_um == length:
            return
        if self.bar is None:
            self.bar = pg.ScaleBar(size=length / pixel_um, width=4, brush="w", pen="k", offset=(-12, -12))
            self.bar.setParentItem(self.viewbox)
            self.bar.setZValue(20)
        else:  # resize in place (a ScaleBar cannot be re-parented)
            self.bar.size = length / pixel_um
            self.bar.updateBar()
        # white on black: readable on the bright camera field and on dark slices alike
        self.bar.text.setHtml(f"<span style='background-color:#000000; color:#ffffff;'>&nbsp;{length:g} um&nbsp;</span>")
        self.length_um, self.pixel_um = length, pixel_um
