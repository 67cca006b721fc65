"""Cell localisation: the ``Detector`` interface and a classical brightfield detector.

A cell in brightfield is darker than the background (it absorbs and scatters). The classical
detector normalises the frame by a smooth background estimate, thresholds the absorption
``1 - I / background``, cleans the mask with morphology and keeps the largest blob. Learned
detectors (``reconstruction/yolo.py``) implement the same :class:`Detector` protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import cv2
import numpy as np


@dataclass
class Detection:
    """One detected cell: ``box`` (x0, y0, x1, y1) full-frame pixels, ``score`` in [0, 1]."""

    box: tuple[int, int, int, int]
    score: float
    mask: np.ndarray | None = None  # bool (H, W) full frame, when the detector segments


@runtime_checkable
class Detector(Protocol):
    """Finds cells in a full camera frame; best first."""

    def detect(self, image: np.ndarray) -> list[Detection]: ...


def to_gray_float(image: np.ndarray) -> np.ndarray:
    """Any camera frame (grey or colour, any integer/float dtype) -> float32 grey."""
    a = np.asarray(image)
    if a.ndim == 3:
        a = a[..., :3].mean(axis=2) if a.shape[2] >= 3 else a[..., 0]
    return a.astype(np.float32, copy=False)


def background_estimate(gray: np.ndarray, cell_px: float) -> np.ndarray:
    """Smooth background: a grey closing wider than the cell removes dark objects, then a blur."""
    k = int(max(3, round(cell_px * 1.3)) | 1)
    small = 4 if min(gray.shape) >= 128 else 1
    g = cv2.resize(gray, (gray.shape[1] // small, gray.shape[0] // small), interpolation=cv2.INTER_AREA) if small > 1 else gray
    ks = max(3, (k // small) | 1)
    bg = cv2.morphologyEx(g, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (ks, ks)))
    bg = cv2.GaussianBlur(bg, (0, 0), ks / 4)
    if small > 1:
        bg = cv2.resize(bg, (gray.shape[1], gray.shape[0]), interpolation=cv2.INTER_LINEAR)
    return np.maximum(bg, 1e-3)


def absorption_mask(absorption: np.ndarray, threshold: float | None, min_contrast: float) -> np.ndarray:
    """Threshold an absorption image (Otsu unless ``threshold`` is given) -> uint8 mask."""
    a = np.clip(absorption, 0, 1)
    a8 = (a * 255).astype(np.uint8)
    if threshold is None:
        t, _ = cv2.threshold(cv2.GaussianBlur(a8, (5, 5), 0), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        t = max(t / 255.0, min_contrast)
    else:
        t = threshold
    return (cv2.GaussianBlur(a, (5, 5), 0) > t).astype(np.uint8)


def largest_blob(mask: np.ndarray, close_px: int = 7, min_area: int = 50) -> np.ndarray | None:
    """Close gaps, fill holes and keep the largest connected blob; None if nothing is left."""
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (close_px | 1, close_px | 1))
    m = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, k)
    m = cv2.morphologyEx(m, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)))
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return None
    c = max(contours, key=cv2.contourArea)
    if cv2.contourArea(c) < min_area:
        return None
    out = np.zeros_like(m)
    cv2.drawContours(out, [c], -1, 1, thickness=cv2.FILLED)
    return out.astype(bool)


class ClassicalDetector:
    """Background-normalised absorption threshold + morphology + largest blob.

    ``cell_px`` is the expected cell diameter (sets the background scale and the minimum blob
    area); ``min_contrast`` the weakest absorption counted as cell.
    """

    def __init__(self, cell_px: float = 140.0, min_contrast: float = 0.03, threshold: float | None = None) -> None:
        self.cell_px = float(cell_px)
        self.min_contrast = float(min_contrast)
        self.threshold = threshold

    def detect(self, image: np.ndarray) -> list[Detection]:
        g = to_gray_float(image)
        bg = background_estimate(g, self.cell_px)
        absorption = 1.0 - g / bg
        mask = absorption_mask(absorption, self.threshold, self.min_contrast)
        blob = largest_blob(mask, close_px=max(3, int(self.cell_px / 15)), min_area=int(0.05 * self.cell_px**2))
        if blob is None:
            return []
        ys, xs = np.nonzero(blob)
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        score = float(np.clip(absorption[blob].mean() / max(self.min_contrast * 3, 1e-6), 0, 1))
        return [Detection(box, score, blob)]
