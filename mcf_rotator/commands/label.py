"""``mcf-rotator label``: draw cell outlines on your own frames in napari, saved as YOLO labels.

Opens frames (a folder of images, or a TIFF stack/recording, every ``--every``-th frame) one
at a time with a polygon layer. With ``--prelabel`` the current detector's masks are loaded as
editable polygons, so most frames only need checking. Keys: ``n`` save + next, ``b`` save +
back; napari's own Delete key removes selected outlines (ellipses and rectangles work too). Output: ``OUT/images/{train,val}/*.png`` and
``OUT/labels/{train,val}/*.txt`` (every 5th frame to val), ready for
``mcf-rotator train-detector --data OUT``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from mcf_rotator.errors import InputFileError
from mcf_rotator.reconstruction.yolo_dataset import IMAGE_EXTS, mask_to_polygon, to_uint8, write_data_yaml


def polygons_to_label_lines(polygons_rc: list[np.ndarray], shape: tuple[int, int]) -> list[str]:
    """napari polygons ((K, 2) row, col pixel coords) -> YOLO lines "0 x1 y1 ..." normalised."""
    h, w = shape
    lines = []
    for poly in polygons_rc:
        p = np.asarray(poly, np.float64)
        if p.ndim != 2 or p.shape[0] < 3:
            continue
        xy = np.clip(np.stack([p[:, -1] / w, p[:, -2] / h], axis=1), 0.0, 1.0)
        lines.append("0 " + " ".join(f"{v:.5f}" for v in xy.reshape(-1)))
    return lines


def label_lines_to_polygons(lines: list[str], shape: tuple[int, int]) -> list[np.ndarray]:
    """YOLO polygon lines -> napari (row, col) polygons; box lines become rectangles."""
    h, w = shape
    out = []
    for k, line in enumerate(lines, start=1):
        vals = line.split()
        if not vals:
            continue
        try:
            nums = np.array([float(v) for v in vals[1:]])
        except ValueError:
            raise ValueError(f"line {k}: not numbers: {line.strip()[:60]!r}") from None
        if nums.size < 4 or (nums.size != 4 and nums.size % 2) or not np.all(np.isfinite(nums)):
            raise ValueError(
                f"line {k}: expected 'class x1 y1 x2 y2 ...' (a polygon) or 'class cx cy w h' (a box), "
                f"got {line.strip()[:60]!r}"
            )
        if nums.size == 4:
            cx, cy, bw, bh = nums
            xy = np.array([[cx - bw / 2, cy - bh / 2], [cx + bw / 2, cy - bh / 2], [cx + bw / 2, cy + bh / 2], [cx - bw / 2, cy + bh / 2]])
        else:
            xy = nums.reshape(-1, 2)
        out.append(np.stack([xy[:, 1] * h, xy[:, 0] * w], axis=1))
    return out


def ellipse_to_polygon(corners_rc: np.ndarray, n: int = 48) -> np.ndarray:
    """napari ellipse (4 bounding-box corners, possibly rotated) -> (n, 2) polygon."""
    c = np.asarray(corners_rc, np.float64)
    centre = c.mean(axis=0)
    a, b = (c[1] - c[0]) / 2.0, (c[3] - c[0]) / 2.0
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)[:, None]
    return centre + np.cos(t) * a + np.sin(t) * b


def load_frames(source: Path, every: int = 1) -> list[tuple[str, np.ndarray]]:
    """(name, 8-bit grey frame) pairs from a folder of images or a (multi-page) TIFF file."""
    every = max(1, int(every))
    if source.is_dir():
        files = sorted(f for f in source.iterdir() if f.suffix.lower() in IMAGE_EXTS)
        if not files:
            raise InputFileError(f"{source}: no images ({', '.join(IMAGE_EXTS)})")
        out = []
        for f in files[::every]:
            img = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
            if img is None:
                raise InputFileError(f"{f}: cannot read image")
            out.append((f.stem, to_uint8(img)))
        return out
    if source.is_file() and source.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        try:
            stack = tifffile.imread(str(source))
        except Exception as exc:
            raise InputFileError(f"{source}: cannot read TIFF ({exc})") from exc
        stack = np.asarray(stack)
        if stack.ndim == 2:
            stack = stack[None]
        if stack.ndim != 3:
            raise InputFileError(f"{source}: expected a stack of grey frames (T, H, W), got shape {stack.shape}")
        return [(f"{source.stem}_{i:05d}", to_uint8(stack[i])) for i in range(0, stack.shape[0], every)]
    raise InputFileError(f"{source}: not found, or not a folder of images / TIFF stack")


def save_labels(out: Path, name: str, image: np.ndarray, polygons_rc: list[np.ndarray], split: str) -> Path:
    """Write the frame (PNG) and its label file; returns the label path."""
    img_dir, lab_dir = out / "images" / split, out / "labels" / split
    img_dir.mkdir(parents=True, exist_ok=True)
    lab_dir.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(img_dir / f"{name}.png"), image):
        raise InputFileError(f"{img_dir / name}.png: cannot write image")
    lab = lab_dir / f"{name}.txt"
    lines = polygons_to_label_lines(polygons_rc, image.shape[:2])
    lab.write_text("\n".join(lines) + ("\n" if lines else ""))
    if not (out / "data.yaml").exists():
        write_data_yaml(out)
    return lab


def _split_for(index: int) -> str:
    return "val" if index % 5 == 4 else "train"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "label",
        help="label cells on your own frames in napari (YOLO segmentation labels)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", type=Path, help="folder of frames or a TIFF stack")
    p.add_argument("--out", "-o", type=Path, required=True, help="dataset folder to write")
    p.add_argument("--every", type=int, default=10, help="take every N-th frame (default 10)")
    p.add_argument("--prelabel", action="store_true", help="start from the detector's outlines")
    p.add_argument("--weights", type=Path, default=None, help="weights for --prelabel (default: shipped)")
    p.set_defaults(func=run)


def _has_display() -> bool:
    """A screen napari can open a window on (Linux: an X or Wayland display, or a Qt platform
    chosen explicitly); Windows and macOS always have one."""
    import os
    import sys

    if not sys.platform.startswith("linux"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or os.environ.get("QT_QPA_PLATFORM"))


def check_existing_labels(out: Path, frames: list[tuple[str, np.ndarray]]) -> None:
    """Every label file already in ``out`` for these frames must parse (refused before the window opens)."""
    for i, (name, img) in enumerate(frames):
        lab = out / "labels" / _split_for(i) / f"{name}.txt"
        if not lab.is_file():
            continue
        try:
            label_lines_to_polygons(lab.read_text().splitlines(), img.shape[:2])
        except (OSError, UnicodeDecodeError) as exc:
            raise InputFileError(f"{lab}: cannot be read ({exc})") from exc
        except ValueError as exc:
            raise InputFileError(f"{lab}: not a YOLO label file: {exc} (fix or delete it)") from exc


def run(args: argparse.Namespace) -> int:
    from mcf_rotator.reconstruction.io import prepare_output_dir

    if args.every < 1:
        raise InputFileError(f"--every must be at least 1 (got {args.every})")
    frames = load_frames(args.source, args.every)
    check_existing_labels(args.out, frames)
    if not _has_display():
        raise InputFileError(
            "label opens a napari window but there is no display (DISPLAY / WAYLAND_DISPLAY not set); "
            "run it in a desktop session (or over ssh -X)"
        )
    prepare_output_dir(args.out)
    detector = None
    if args.prelabel:
        from mcf_rotator.reconstruction.yolo import make_default_detector

        detector = make_default_detector(args.weights)
    try:
        import napari
    except ImportError as exc:
        raise InputFileError(f"napari is needed for labelling ({exc})") from exc

    viewer = napari.Viewer(title="mcf-rotator: label cells (n: save+next, b: save+back)")
    state = {"i": 0}

    def existing_polygons(i: int) -> list[np.ndarray]:
        name, img = frames[i]
        lab = args.out / "labels" / _split_for(i) / f"{name}.txt"
        if lab.is_file():
            return label_lines_to_polygons(lab.read_text().splitlines(), img.shape)
        if detector is None:
            return []
        polys = []
        for d in detector.detect(img):
            if d.mask is not None and (poly := mask_to_polygon(d.mask)) is not None:
                polys.append(poly[:, ::-1])
        return polys

    def show(i: int) -> None:
        name, img = frames[i]
        for layer in list(viewer.layers):
            viewer.layers.remove(layer)
        viewer.add_image(img, name=name, contrast_limits=(0, 255))
        viewer.add_shapes(existing_polygons(i), shape_type="polygon", name="cells", edge_color="yellow", face_color=[1, 1, 0, 0.15], edge_width=1)
        viewer.layers["cells"].mode = "add_polygon"
        viewer.status = f"frame {i + 1}/{len(frames)}: {name}"

    def save(i: int) -> None:
        name, img = frames[i]
        layer = viewer.layers["cells"]
        polys = [ellipse_to_polygon(d) if t == "ellipse" else d for d, t in zip(layer.data, layer.shape_type) if t in ("polygon", "rectangle", "ellipse")]
        save_labels(args.out, name, img, polys, _split_for(i))

    @viewer.bind_key("n", overwrite=True)
    def _next(_v: object) -> None:
        save(state["i"])
        if state["i"] + 1 < len(frames):
            state["i"] += 1
            show(state["i"])
        else:
            viewer.status = f"all {len(frames)} frames labelled in {args.out}"

    @viewer.bind_key("b", overwrite=True)
    def _back(_v: object) -> None:
        save(state["i"])
        state["i"] = max(0, state["i"] - 1)
        show(state["i"])

    show(0)
    napari.run()
    print(f"labels in {args.out}; train with: mcf-rotator train-detector --data {args.out}")
    return 0
