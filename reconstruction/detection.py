"""Cell localisation: the ``Detector`` interface and a classical brightfield detector.

A cell in brightfield is darker than the background (it absorbs and scatters). The classical
detector normalises the frame by a smooth background estimate, thresholds the absorption
``1 - I / background``, cleans the mask with morphology and ranks the blobs by how cell-like
they are (round, about the expected size; capillary walls are long stripes and are rejected). Learned
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


@runtime_checkable
class BoxDetector(Protocol):
    """A detector with a cheaper boxes-only path (``Detection.mask`` None), which the live
    pipeline uses: it needs the box to place the crop, not a full-frame mask."""

    def detect_boxes(self, image: np.ndarray) -> list[Detection]: ...


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


def contrast_mask(
    absorption: np.ndarray,
    min_contrast: float,
    k_sigma: float = 5.0,
    blur_px: float = 2.0,
    noise_region: np.ndarray | None = None,
) -> np.ndarray:
    """Pixels that differ from the background by more than ``k_sigma`` noise levels (either sign).

    Using |absorption| keeps the faint cell rim and its bright phase halo together, so the
    blob is the whole cell rather than its dense nucleus (what an Otsu threshold tends to
    pick); the noise level is a robust (MAD) estimate from the pixels selected by
    ``noise_region`` (bool mask, e.g. a crop's border where there is no cell) or the whole frame.
    """
    a = cv2.GaussianBlur(np.asarray(absorption, np.float32), (0, 0), blur_px)
    ref = a[noise_region] if noise_region is not None and noise_region.any() else a
    sigma = 1.4826 * float(np.median(np.abs(ref - np.median(ref))))
    return (np.abs(a) > max(k_sigma * sigma, min_contrast * 0.5)).astype(np.uint8)


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


def cell_like_blobs(
    mask: np.ndarray, cell_px: float, close_px: int = 7, min_area: int = 50
) -> list[tuple[np.ndarray, float]]:
    """Filled blobs of ``mask`` ranked by how cell-like they are: (blob, score), best first.

    A trapped cell is a compact, roughly round blob of about the expected size; capillary
    walls and fibre tips are long stripes (they run along the rotation axis, top to bottom)
    and debris is small. Score = circularity x size prior, so a wall never outranks a cell.
    """
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (close_px | 1, close_px | 1))
    m = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, k)
    m = cv2.morphologyEx(m, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)))
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    expected_area = np.pi * (cell_px / 2.0) ** 2
    ranked: list[tuple[np.ndarray, float]] = []
    for c in contours:
        area = cv2.contourArea(c)
        if area < min_area:
            continue
        x, y, w, h = cv2.boundingRect(c)
        aspect = max(w, h) / max(1, min(w, h))
        if aspect > 2.5 or (h >= 0.9 * mask.shape[0] and aspect > 1.5):
            continue  # a stripe: capillary wall or fibre, not a cell
        hull_area = cv2.contourArea(cv2.convexHull(c))
        solidity = area / max(hull_area, 1.0)
        size_prior = np.exp(-0.5 * (np.log(area / expected_area) / 0.8) ** 2)
        score = float(solidity * size_prior / aspect)
        blob = np.zeros_like(m)
        cv2.drawContours(blob, [c], -1, 1, thickness=cv2.FILLED)
        ranked.append((blob.astype(bool), score))
    ranked.sort(key=lambda t: -t[1])
    return ranked


def remove_vertical_stripes(absorption: np.ndarray, percentile: float = 20.0) -> np.ndarray:
    """Absorption minus each column's ``percentile`` over rows: capillary walls run top to
    bottom (every row of their columns), a cell covers at most ~70 % of the rows of a frame
    around it, so the low percentile of a column is its wall (or zero), never the cell. Without
    this a cell beside a wall merges with it into one stripe, which is rejected as a wall."""
    a = np.asarray(absorption, np.float32)
    if a.shape[0] < 8:
        return a
    level = np.percentile(a, percentile, axis=0)
    # relative to the typical column: a plain column's low percentile is just noise (below 0)
    return a - (level - np.median(level)).astype(np.float32)[None, :]


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
        absorption = remove_vertical_stripes(1.0 - g / bg)
        close_px, min_area = max(3, int(self.cell_px / 15)), int(0.05 * self.cell_px**2)
        blobs = []
        if self.threshold is None:
            blobs = cell_like_blobs(contrast_mask(absorption, self.min_contrast), self.cell_px, close_px, min_area)
        if not blobs:  # explicit threshold, or a cell filling most of the frame (noise estimate fails)
            mask = absorption_mask(absorption, self.threshold, self.min_contrast)
            blobs = cell_like_blobs(mask, self.cell_px, close_px, min_area)
        detections = []
        for blob, shape_score in blobs:
            ys, xs = np.nonzero(blob)
            box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
            contrast = float(np.clip(absorption[blob].mean() / max(self.min_contrast * 3, 1e-6), 0, 1))
            detections.append(Detection(box, float(np.sqrt(contrast * min(1.0, shape_score * 1.5))), blob))
        return detections


class AutoSizeDetector:
    """:class:`ClassicalDetector` for a cell of unknown size: the first frames are searched at
    several expected sizes (60-280 px; the background scale must exceed the cell) and the best
    detection fixes the size for every later frame."""

    def __init__(self, sizes_px: tuple[float, ...] = (60.0, 100.0, 160.0, 260.0), min_contrast: float = 0.03) -> None:
        self.sizes_px = sizes_px
        self.min_contrast = min_contrast
        self.locked: ClassicalDetector | None = None

    def detect(self, image: np.ndarray) -> list[Detection]:
        if self.locked is not None:
            return self.locked.detect(image)
        found: list[tuple[float, float, list[Detection]]] = []
        for size in self.sizes_px:
            dets = ClassicalDetector(cell_px=size, min_contrast=self.min_contrast).detect(image)
            if not dets:
                continue
            x0, y0, x1, y1 = dets[0].box
            d = float(max(x1 - x0, y1 - y0))
            # a detection about the size it was searched for is trusted (its background scale fits)
            fit = float(np.exp(-0.5 * (np.log(d / size) / 0.5) ** 2))
            found.append((dets[0].score * fit, d, dets))
        if not found:
            return []
        # the largest of the plausible ones: at a small scale the dense nucleus alone scores well
        top = max(f[0] for f in found)
        best = max((f for f in found if f[0] >= 0.5 * top), key=lambda f: f[1])
        self.locked = ClassicalDetector(cell_px=max(best[1], 20.0), min_contrast=self.min_contrast)
        return self.locked.detect(image) or best[2]
