"""Synthetic training data for the learned cell detector, in YOLO segmentation format.

Frames come from the simulated rig (:func:`mcf_rotator.simulation.brightfield.render_scene`),
so every box and mask is exact. Each frame draws its own conditions (pixel size, cell size,
focus, contrast, exposure, noise, bit depth, debris, capillary walls, cells cut by the frame
border) from a :class:`Conditions` range; a share of samples are zoomed crops around a cell,
the input :meth:`YoloCellDetector.segment` sees. The held-out set uses another seed and the
harder :data:`HARD` ranges.

On disk (what ultralytics and the fine-tuning workflow expect)::

    DIR/images/{train,val}/NAME.png    8-bit grey frames (see :func:`to_uint8`)
    DIR/labels/{train,val}/NAME.txt    one line per cell: "0 x1 y1 x2 y2 ..." (normalised polygon)
    DIR/data.yaml                      absolute path, split folders, names {0: cell}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import yaml

from mcf_rotator.errors import InputFileError
from mcf_rotator.simulation.brightfield import BrightfieldOptics, CellInstance, render_scene
from mcf_rotator.simulation.phantom import CellPhantom

CLASS_NAMES = {0: "cell"}
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
#: ground-truth cells whose visible box is thinner than this (px) are "ignore" regions in scoring
MIN_VISIBLE_PX = 16


@dataclass(frozen=True)
class Conditions:
    """Ranges each frame's imaging conditions are drawn from (uniform unless stated)."""

    name: str = "train"
    pixel_um: tuple[float, float] = (0.065, 0.13)
    diameter_um: tuple[float, float] = (8.0, 16.0)
    n_cells: tuple[int, int] = (1, 3)
    p_empty: float = 0.06
    contrast: tuple[float, float] = (0.5, 1.6)
    defocus_px: tuple[float, float] = (0.0, 4.0)
    illumination: tuple[float, float] = (70.0, 235.0)
    electrons_per_count: tuple[float, float] = (0.7, 20.0)
    read_noise: tuple[float, float] = (0.5, 4.0)
    phase_halo: tuple[float, float] = (0.0, 1.2)
    vignetting: tuple[float, float] = (0.0, 0.35)
    debris: tuple[int, int] = (0, 14)
    p_walls: float = 0.85
    p_border: float = 0.35
    p_high_bit_depth: float = 0.15
    p_crop: float = 0.25


TRAIN = Conditions()
#: held-out conditions: the tough end of every range, more debris, more border cells
HARD = Conditions(
    name="hard",
    contrast=(0.5, 0.9),
    defocus_px=(1.5, 4.0),
    illumination=(70.0, 150.0),
    electrons_per_count=(0.7, 2.0),
    read_noise=(2.0, 4.0),
    debris=(6, 14),
    p_border=0.5,
    p_empty=0.08,
    p_crop=0.0,
)


@dataclass
class Sample:
    """One frame with exact ground truth; ``ignore[i]`` marks slivers not scored either way."""

    image: np.ndarray
    masks: list[np.ndarray]
    boxes: list[tuple[float, float, float, float]]
    ignore: list[bool] = field(default_factory=list)
    pixel_um: float = 0.086


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Grey 8-bit view of a camera frame, the one representation the model sees.

    8-bit frames pass unchanged; deeper or float frames are scaled so the bright background
    (99.5th percentile, on a 1/4-subsampled grid for speed) lands at grey 220, which makes 10-,
    12- and 16-bit cameras look like the 8-bit frames the model was trained on.
    """
    img = np.asarray(image)
    if img.ndim == 3:
        img = img[..., :3].mean(axis=2) if img.shape[2] >= 3 else img[..., 0]
    if img.ndim != 2:
        raise ValueError(f"expected a 2D grey frame, got shape {img.shape}")
    if img.dtype == np.uint8:
        return img
    ref = float(np.percentile(img[::4, ::4], 99.5))
    if not np.isfinite(ref) or ref <= 0:
        ref = float(np.max(img)) or 1.0
    return np.clip(img.astype(np.float32) * (220.0 / ref), 0, 255).astype(np.uint8)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _u(rng: np.random.Generator, r: tuple[float, float]) -> float:
    return float(rng.uniform(r[0], r[1]))


def render_sample(
    rng: np.random.Generator, shape: tuple[int, int] = (480, 640), cond: Conditions = TRAIN
) -> Sample:
    """Draw conditions and cells, render one frame with the simulated rig, return it with truth."""
    h, w = shape
    pixel_um = _u(rng, cond.pixel_um)
    walls = bool(rng.random() < cond.p_walls)
    left = float(rng.uniform(0.01, 0.12))
    right = float(rng.uniform(0.88, 0.99))
    bit_depth = int(rng.choice([10, 12, 16])) if rng.random() < cond.p_high_bit_depth else 8
    illum = _u(rng, cond.illumination) * ((1 << bit_depth) - 1) / 255.0
    optics = BrightfieldOptics(
        pixel_um=pixel_um,
        illumination=illum,
        read_noise=_u(rng, cond.read_noise) * ((1 << bit_depth) - 1) / 255.0,
        electrons_per_count=_u(rng, cond.electrons_per_count) * 255.0 / ((1 << bit_depth) - 1),
        bit_depth=bit_depth,
        defocus_px=_u(rng, cond.defocus_px),
        vignetting=_u(rng, cond.vignetting),
        vignetting_centre=(float(rng.uniform(0.3, 0.7)), float(rng.uniform(0.3, 0.7))),
        illumination_tilt=float(rng.uniform(-0.08, 0.08)),
        absorption_scale=float(rng.uniform(0.8, 1.2)),
        phase_halo=_u(rng, cond.phase_halo),
        halo_sigma_px=float(rng.uniform(2.0, 4.0)),
        wall_cols_frac=(left, right),
        wall_thickness_px=float(rng.uniform(10, 30)),
        wall_optical_depth=float(rng.uniform(0.4, 1.2)),
    )
    lumen = (left * w, right * w) if walls else (0.0, float(w))
    n = 0 if rng.random() < cond.p_empty else int(rng.integers(cond.n_cells[0], cond.n_cells[1] + 1))
    cells: list[CellInstance] = []
    placed: list[tuple[float, float, float]] = []
    for _ in range(n):
        d_um = _u(rng, cond.diameter_um)
        r_px = d_um / 2 / pixel_um
        for _attempt in range(40):
            if rng.random() < cond.p_border:  # cut by the top/bottom edge (or side without walls)
                edge = int(rng.integers(0, 4 if not walls else 2))
                off = float(rng.uniform(-0.6, 0.6)) * r_px
                if edge < 2:
                    cy = off if edge == 0 else h - 1 - off
                    cx = float(rng.uniform(lumen[0] + r_px * 0.6, lumen[1] - r_px * 0.6))
                else:
                    cx = off if edge == 2 else w - 1 - off
                    cy = float(rng.uniform(0, h - 1))
            else:
                cy = float(rng.uniform(r_px, max(r_px + 1, h - 1 - r_px)))
                cx = float(rng.uniform(lumen[0] + r_px, max(lumen[0] + r_px + 1, lumen[1] - r_px)))
            if all(np.hypot(cy - py, cx - px) > 1.05 * (r_px + pr) for py, px, pr in placed):
                placed.append((cy, cx, r_px))
                phantom = CellPhantom.random(
                    seed=int(rng.integers(0, 2**31 - 1)), diameter_um=d_um, contrast=_u(rng, cond.contrast)
                )
                cells.append(CellInstance(phantom, _random_rotation(rng), (cy, cx)))
                break
    scene = render_scene((h, w), cells, optics, rng, walls=walls, debris=int(rng.integers(cond.debris[0], cond.debris[1] + 1)))
    image = to_uint8(scene.image)
    ignore = [min(b[2] - b[0], b[3] - b[1]) < MIN_VISIBLE_PX for b in scene.boxes]
    sample = Sample(image, list(scene.masks), list(scene.boxes), ignore, pixel_um)
    if scene.masks and rng.random() < cond.p_crop:
        sample = _crop_around_cell(sample, rng)
    return sample


def _crop_around_cell(sample: Sample, rng: np.random.Generator) -> Sample:
    """A zoomed view around one visible cell with a random margin, as the segmenter gets it."""
    h, w = sample.image.shape
    k = int(rng.integers(0, len(sample.boxes)))
    x0, y0, x1, y1 = sample.boxes[k]
    side = max(x1 - x0, y1 - y0) * float(rng.uniform(1.15, 1.7))
    cx = (x0 + x1) / 2 + float(rng.uniform(-0.1, 0.1)) * side
    cy = (y0 + y1) / 2 + float(rng.uniform(-0.1, 0.1)) * side
    c0, c1 = int(max(0, cx - side / 2)), int(min(w, cx + side / 2))
    r0, r1 = int(max(0, cy - side / 2)), int(min(h, cy + side / 2))
    masks, boxes, ignore = [], [], []
    for m in sample.masks:
        sub = m[r0:r1, c0:c1]
        if not sub.any():
            continue
        rows, cols = np.flatnonzero(sub.any(axis=1)), np.flatnonzero(sub.any(axis=0))
        b = (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))
        masks.append(sub.copy())
        boxes.append(b)
        ignore.append(min(b[2] - b[0], b[3] - b[1]) < MIN_VISIBLE_PX)
    return Sample(np.ascontiguousarray(sample.image[r0:r1, c0:c1]), masks, boxes, ignore, sample.pixel_um)


def generate_samples(
    n: int, seed: int, shape: tuple[int, int] = (480, 640), cond: Conditions = TRAIN, hard_share: float = 0.0
) -> Iterator[Sample]:
    """``n`` reproducible samples (same seed, same frames).

    ``hard_share`` of the frames draw their conditions from the tough tails (:data:`HARD`)
    instead of ``cond``: a model trained on the full ranges alone sees few frames that are dim,
    noisy and defocused at once and scores such cells too low.
    """
    if not 0.0 <= hard_share <= 1.0:
        raise ValueError(f"hard_share must be in [0, 1], got {hard_share}")
    rng = np.random.default_rng(seed)
    for _ in range(int(n)):
        frame_cond = HARD if hard_share and rng.random() < hard_share else cond
        yield render_sample(rng, shape, frame_cond)


# ------------------------------------------------------------------------ YOLO format I/O
def mask_to_polygon(mask: np.ndarray) -> np.ndarray | None:
    """Outline (K, 2) xy in pixel-edge coordinates of the mask's largest region, or None."""
    m = np.ascontiguousarray(mask.astype(np.uint8))
    # upsample x2 so the contour runs along pixel edges rather than through pixel centres
    big = cv2.resize(m, (m.shape[1] * 2, m.shape[0] * 2), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    c = max(contours, key=cv2.contourArea)
    c = cv2.approxPolyDP(c, 1.0, True)
    if len(c) < 3:
        return None
    return (c.reshape(-1, 2).astype(np.float64) + 0.5) / 2.0


def polygon_to_mask(poly_xy: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Rasterise a pixel-coordinate polygon (pixel-edge convention) to a bool mask."""
    m = np.zeros((shape[0] * 4, shape[1] * 4), np.uint8)
    pts = np.round(np.asarray(poly_xy, np.float64) * 4 - 0.5).astype(np.int32)
    cv2.fillPoly(m, [pts], 1)
    return cv2.resize(m.astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_AREA) >= 0.5


def label_lines(sample: Sample) -> list[str]:
    """YOLO segmentation label lines (class 0, normalised polygon) for the sample's cells."""
    h, w = sample.image.shape[:2]
    lines = []
    for mask, ign in zip(sample.masks, sample.ignore or [False] * len(sample.masks)):
        if ign:
            continue
        poly = mask_to_polygon(mask)
        if poly is None:
            continue
        norm = np.clip(poly / np.array([w, h]), 0.0, 1.0)
        lines.append("0 " + " ".join(f"{v:.5f}" for v in norm.reshape(-1)))
    return lines


def write_data_yaml(root: Path, train: str = "images/train", val: str = "images/val") -> Path:
    """``data.yaml`` with an absolute ``path`` so ultralytics never looks in its datasets_dir."""
    root = Path(root).resolve()
    path = root / "data.yaml"
    path.write_text(yaml.safe_dump({"path": str(root), "train": train, "val": val, "names": dict(CLASS_NAMES)}, sort_keys=False))
    return path


#: frames are rendered in blocks; block k of a split draws from seed + k * BLOCK_SEED_STEP, so the
#: dataset is the same however many processes write it (and a split of <= BLOCK frames is
#: exactly ``generate_samples(n, seed)``)
BLOCK = 256
BLOCK_SEED_STEP = 104729


@dataclass(frozen=True)
class _Block:
    """One block of a split to render and write (picklable, for worker processes)."""

    split: str
    img_dir: str
    lab_dir: str
    split_seed: int  # names the files
    block_seed: int  # draws the frames
    start: int
    n: int
    shape: tuple[int, int]
    cond: Conditions
    hard_share: float


def _write_block(b: _Block) -> int:
    """Render one block of frames and write images + labels; returns the frame count."""
    img_dir, lab_dir = Path(b.img_dir), Path(b.lab_dir)
    for i, sample in enumerate(generate_samples(b.n, b.block_seed, b.shape, b.cond, b.hard_share)):
        name = f"{b.cond.name}_{b.split_seed}_{b.start + i:05d}"
        if not cv2.imwrite(str(img_dir / f"{name}.png"), sample.image):
            raise InputFileError(f"{img_dir / name}.png: cannot write image")
        (lab_dir / f"{name}.txt").write_text("\n".join(label_lines(sample)) + ("\n" if sample.masks else ""))
    return b.n


def write_yolo_dataset(
    root: str | Path,
    n_train: int,
    n_val: int,
    seed: int = 0,
    shape: tuple[int, int] = (480, 640),
    cond: Conditions = TRAIN,
    progress: bool = False,
    hard_share: float = 0.0,
    processes: int = 1,
) -> Path:
    """Render and write a synthetic dataset; returns the ``data.yaml`` path.

    Train and val use independent seeds derived from ``seed``; ``hard_share`` as in
    :func:`generate_samples`. ``processes`` > 1 renders blocks of :data:`BLOCK` frames in
    parallel (rendering is CPU-bound: 12 000 frames take ~20 s on 16 cores); the frames do
    not depend on it.
    """
    root = Path(root)
    jobs: list[_Block] = []
    totals: dict[str, int] = {}
    for split, n, s in (("train", n_train, seed), ("val", n_val, seed + 7919)):
        img_dir, lab_dir = root / "images" / split, root / "labels" / split
        img_dir.mkdir(parents=True, exist_ok=True)
        lab_dir.mkdir(parents=True, exist_ok=True)
        totals[split] = int(n)
        for k, start in enumerate(range(0, int(n), BLOCK)):
            count = min(BLOCK, int(n) - start)
            jobs.append(_Block(split, str(img_dir), str(lab_dir), s, s + k * BLOCK_SEED_STEP, start, count, shape, cond, hard_share))
    done = dict.fromkeys(totals, 0)

    def _report(job: _Block, n_done: int) -> None:
        done[job.split] += n_done
        if progress:
            print(f"{job.split}: {done[job.split]}/{totals[job.split]} frames", flush=True)

    if processes > 1 and len(jobs) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: the caller may already run torch's thread pools (train-detector)
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=int(processes), mp_context=ctx) as pool:
            for job, n_done in zip(jobs, pool.map(_write_block, jobs)):
                _report(job, n_done)
    else:
        for job in jobs:
            _report(job, _write_block(job))
    return write_data_yaml(root)


def resolve_dataset(data: str | Path) -> Path:
    """The ``data.yaml`` for a user's folder; writes one for a bare images/labels layout.

    Accepts a ``data.yaml`` file, or a folder holding one, or a folder with
    ``images/train`` (+ optional ``images/val``) and matching ``labels/``. Raises
    :class:`InputFileError` naming the folder and what is missing.
    """
    p = Path(data)
    if p.is_file() and p.suffix.lower() in (".yaml", ".yml"):
        return p.resolve()
    if not p.exists():
        raise InputFileError(f"{p}: dataset not found")
    if not p.is_dir():
        raise InputFileError(f"{p}: expected a data.yaml file or a dataset folder")
    for name in ("data.yaml", "dataset.yaml"):
        if (p / name).is_file():
            return (p / name).resolve()
    train = p / "images" / "train"
    if not train.is_dir():
        raise InputFileError(
            f"{p}: no data.yaml and no images/train folder; expected DIR/images/train/*.png with "
            f"labels in DIR/labels/train/*.txt (YOLO segmentation polygons)"
        )
    imgs = [f for f in train.iterdir() if f.suffix.lower() in IMAGE_EXTS]
    if not imgs:
        raise InputFileError(f"{train}: no images ({', '.join(IMAGE_EXTS)})")
    labels = p / "labels" / "train"
    if not labels.is_dir() or not any(labels.glob("*.txt")):
        raise InputFileError(f"{labels}: no label files; label the frames first (mcf-rotator label)")
    val = "images/val" if (p / "images" / "val").is_dir() and any((p / "images" / "val").iterdir()) else "images/train"
    return write_data_yaml(p, val=val)


def read_yolo_split(root: str | Path, split: str = "val") -> list[Sample]:
    """Load a YOLO segmentation split back as :class:`Sample` s (masks from the polygons)."""
    root = Path(root)
    if root.is_file():
        cfg = yaml.safe_load(root.read_text()) or {}
        base = Path(cfg.get("path") or root.parent)
        img_dir = base / str(cfg.get(split, f"images/{split}"))
    else:
        img_dir = root / "images" / split
    if not img_dir.is_dir():
        raise InputFileError(f"{img_dir}: image folder not found")
    # ultralytics convention: .../images/<split> pairs with .../labels/<split>; else side by side
    lab_dir = img_dir.parent.parent / "labels" / img_dir.name if img_dir.parent.name == "images" else img_dir
    out = []
    for f in sorted(img_dir.iterdir()):
        if f.suffix.lower() not in IMAGE_EXTS:
            continue
        img = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise InputFileError(f"{f}: cannot read image")
        img = to_uint8(img)
        h, w = img.shape
        masks, boxes = [], []
        lab = lab_dir / f"{f.stem}.txt"
        if lab.is_file():
            for ln, line in enumerate(lab.read_text().splitlines(), 1):
                vals = line.split()
                if not vals:
                    continue
                try:
                    nums = np.array([float(v) for v in vals[1:]])
                except ValueError:
                    raise InputFileError(f"{lab}:{ln}: not a YOLO label line") from None
                if nums.size == 4:  # a box label (cx, cy, bw, bh): mask = box
                    cx, cy, bw, bh = nums * np.array([w, h, w, h])
                    poly = np.array([[cx - bw / 2, cy - bh / 2], [cx + bw / 2, cy - bh / 2], [cx + bw / 2, cy + bh / 2], [cx - bw / 2, cy + bh / 2]])
                elif nums.size >= 6 and nums.size % 2 == 0:
                    poly = nums.reshape(-1, 2) * np.array([w, h])
                else:
                    raise InputFileError(f"{lab}:{ln}: expected 'class x1 y1 x2 y2 ...' (normalised polygon)")
                m = polygon_to_mask(poly, (h, w))
                if not m.any():
                    continue
                rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
                masks.append(m)
                boxes.append((float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)))
        out.append(Sample(img, masks, boxes, [False] * len(masks)))
    if not out:
        raise InputFileError(f"{img_dir}: no images")
    return out

