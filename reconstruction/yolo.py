"""Learned cell detector + segmenter (ultralytics YOLO segmentation), trained on simulated frames.

Why a learned model: brightfield cells at low contrast, out of focus, next to capillary walls
and debris defeat thresholds; the seed paper reached 99.88 % detection precision with YOLO.
The shipped weights (``mcf_rotator/resources/cell_yolo_seg.pt``) come from
``yolo11n-seg.yaml`` trained from scratch on :mod:`mcf_rotator.reconstruction.yolo_dataset`
frames; :func:`train_detector` also fine-tunes them on a user's own labelled images.

Inference runs on CPU. One full-field ``detect`` (ultralytics ``predict``, masks) costs tens of
ms, so the live pipeline calls the cheaper :meth:`YoloCellDetector.detect_boxes` (boxes only, no
mask prototypes, a preallocated letterboxed input, the bare fused network) on a schedule
(``LivePipelineConfig.detect_every``) and reuses the ROI in between.
:func:`make_default_detector` returns this detector, or the classical one (with a logged
warning) when the weights or torch/ultralytics are unusable.
"""

from __future__ import annotations

import copy
import logging
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Sequence

import cv2
import numpy as np

from mcf_rotator.errors import InputFileError, McfRotatorError
from mcf_rotator.reconstruction.detection import ClassicalDetector, Detection
from mcf_rotator.reconstruction.segmentation import ClassicalSegmenter
from mcf_rotator.reconstruction.ultralytics_env import UltralyticsUnavailableError, import_ultralytics, setup_ultralytics
from mcf_rotator.reconstruction.yolo_dataset import Sample, resolve_dataset, to_uint8

log = logging.getLogger(__name__)

WEIGHTS_NAME = "cell_yolo_seg.pt"
DEFAULT_MODEL_YAML = "yolo11n-seg.yaml"
DEFAULT_IMGSZ = 320  # the shipped weights were trained at this input size


def default_weights_path() -> Path:
    """Where the shipped weights live inside the installed package."""
    return Path(str(resources.files("mcf_rotator.resources").joinpath(WEIGHTS_NAME)))


def _load_yolo(weights: str | Path, threads: int | None) -> Any:
    setup_ultralytics(threads=threads)
    try:
        YOLO = import_ultralytics().YOLO  # OpenCV's threading pinned, import under a lock
    except UltralyticsUnavailableError:
        raise
    except Exception as exc:
        raise UltralyticsUnavailableError(f"ultralytics cannot be imported: {exc}") from exc
    path = Path(weights)
    if path.suffix in (".yaml", ".yml") and not path.exists():
        return YOLO(str(weights), task="segment")  # a model yaml shipped inside ultralytics
    if not path.is_file():
        raise InputFileError(f"{path}: detector weights not found")
    try:
        return YOLO(str(path), task="segment")
    except Exception as exc:
        raise InputFileError(f"{path}: not usable YOLO segmentation weights ({exc})") from exc


class YoloCellDetector:
    """Cell detector (boxes + masks) and crop segmenter backed by a YOLO segmentation model.

    ``conf`` is the operating threshold (precision/recall in the README are at this value);
    ``imgsz`` the network input for full frames (letterboxed, aspect kept); ``segment_imgsz``
    the input for :meth:`segment` crops. ``refine_masks`` re-segments each detected cell in a
    crop at ``segment_imgsz`` (finer outlines, one more network call per cell). ``threads`` pins torch's CPU threads (ultralytics
    otherwise resets them on its first call).

    Two full-frame paths: :meth:`detect` (ultralytics ``predict``: boxes and masks, for
    labelling and evaluation) and :meth:`detect_boxes` (the live path: boxes only, same boxes
    to float rounding, several ms cheaper per call).
    """

    def __init__(
        self,
        weights: str | Path | None = None,
        imgsz: int = DEFAULT_IMGSZ,
        conf: float = 0.5,
        iou: float = 0.5,
        max_det: int = 20,
        segment_imgsz: int = 256,
        threads: int | None = None,
        retina_masks: bool = True,
        refine_masks: bool = False,
    ) -> None:
        self.weights = Path(weights) if weights is not None else default_weights_path()
        self.imgsz = int(imgsz)
        self.segment_imgsz = int(segment_imgsz)
        self.conf = float(conf)
        self.iou = float(iou)
        self.max_det = int(max_det)
        self.retina_masks = bool(retina_masks)
        self.refine_masks = bool(refine_masks)
        self.threads = threads
        self.model = _load_yolo(self.weights, threads)
        self._warm = False
        self._live: _LiveNet | None = None
        self._live_failed = False
        self._letterbox: _Letterbox | None = None

    # ------------------------------------------------------------------ inference
    def _predict(self, image: np.ndarray, imgsz: int, conf: float, retina: bool | None = None) -> Any:
        bgr = cv2.cvtColor(to_uint8(image), cv2.COLOR_GRAY2BGR)
        res = self.model.predict(
            bgr,
            imgsz=imgsz,
            conf=conf,
            iou=self.iou,
            max_det=self.max_det,
            retina_masks=self.retina_masks if retina is None else retina,
            device="cpu",
            verbose=False,
            save=False,
        )[0]
        if not self._warm:
            self._warm = True
            if self.threads is not None:  # ultralytics' device set-up resets torch threads
                import torch

                torch.set_num_threads(int(self.threads))
        return res

    def detect(self, image: np.ndarray, conf: float | None = None, with_masks: bool = True) -> list[Detection]:
        """Cells in a full frame (2D grey, any integer depth), best score first.

        Boxes are (x0, y0, x1, y1) in full-frame pixels; masks bool (H, W) of the frame, or
        None when ``with_masks`` is False.
        """
        image = np.asarray(image)
        if image.ndim != 2:
            raise ValueError(f"detect() expects a 2D grey frame, got shape {image.shape}")
        # boxes only: skip the full-resolution mask upsampling
        res = self._predict(image, self.imgsz, self.conf if conf is None else conf, None if with_masks else False)
        if res.boxes is None or len(res.boxes) == 0:
            return []
        boxes = res.boxes.xyxy.cpu().numpy().astype(np.float64)
        scores = res.boxes.conf.cpu().numpy().astype(np.float64)
        masks = None
        if with_masks and res.masks is not None:
            masks = res.masks.data.cpu().numpy() > 0.5
            if masks.shape[1:] != image.shape:  # retina_masks=False gives network-size masks
                masks = np.stack([cv2.resize(m.astype(np.uint8), image.shape[::-1], interpolation=cv2.INTER_NEAREST) > 0 for m in masks])
        order = np.argsort(-scores)
        h, w = image.shape
        out = []
        for i in order:
            x0, y0, x1, y1 = boxes[i]
            box = (float(max(0.0, x0)), float(max(0.0, y0)), float(min(w, x1)), float(min(h, y1)))
            mask = None if masks is None else masks[i]
            if mask is not None and self.refine_masks:
                mask = self._refined_mask(image, box, mask)
            out.append(Detection(box=box, score=float(scores[i]), mask=mask))
        return out

    # ------------------------------------------------------------------ live path
    def detect_boxes(self, image: np.ndarray, conf: float | None = None) -> list[Detection]:
        """Cells in a full frame, boxes only (``mask`` None), best score first: the live path.

        Same letterbox, network and NMS as :meth:`detect` without ultralytics' per-call set-up,
        the mask prototypes and mask decoding: the grey frame is resized into a preallocated
        (1, 3, h, w) input (``imgsz`` long side, padded to the stride), run through a fused
        copy of the network and NMS-ed on the box scores. Falls back to
        ``detect(with_masks=False)`` for a model whose raw output it does not know.
        """
        image = np.asarray(image)
        if image.ndim != 2:
            raise ValueError(f"detect_boxes() expects a 2D grey frame, got shape {image.shape}")
        net = self._live_net()
        if net is None:
            return self.detect(image, conf=conf, with_masks=False)
        import torch

        lb = self._letterbox
        if lb is None or lb.frame_shape != image.shape:
            lb = self._letterbox = _Letterbox.for_frame(image.shape, self.imgsz, net.stride, torch)
        with torch.inference_mode():
            pred = net.boxes(lb.fill(to_uint8(image)))
        if pred is None:  # unexpected output layout: use ultralytics from now on
            self._live_failed, self._live = True, None
            return self.detect(image, conf=conf, with_masks=False)
        return _nms_detections(pred, self.conf if conf is None else conf, self.iou, self.max_det, lb)

    def _live_net(self) -> "_LiveNet | None":
        """The fused network copy of the live path, built on first use; None when unusable."""
        if self._live is None and not self._live_failed:
            try:
                self._live = _LiveNet.from_model(self.model.model)
            except Exception as exc:  # noqa: BLE001 - any surprise in the model object: ultralytics path
                log.debug("live detection path unavailable (%s); using ultralytics predict", exc)
                self._live_failed = True
            if self._live is not None and self.threads is not None:
                import torch

                torch.set_num_threads(int(self.threads))
        return self._live

    def _refined_mask(self, image: np.ndarray, box: tuple[float, float, float, float], coarse: np.ndarray) -> np.ndarray:
        """Re-segment one cell in a crop with a 25 % margin; keep the coarse mask if that fails."""
        h, w = image.shape
        x0, y0, x1, y1 = box
        m = 0.25 * max(x1 - x0, y1 - y0)
        c0, r0 = int(max(0, x0 - m)), int(max(0, y0 - m))
        c1, r1 = int(min(w, x1 + m + 1)), int(min(h, y1 + m + 1))
        sub = self.segment(image[r0:r1, c0:c1])
        if not sub.any():
            return coarse
        out = np.zeros((h, w), bool)
        out[r0:r1, c0:c1] = sub
        return out

    def segment(self, crop: np.ndarray) -> np.ndarray:
        """Bool mask (same shape as ``crop``) of the cell nearest the crop centre; all False if none."""
        crop = np.asarray(crop)
        if crop.ndim != 2:
            raise ValueError(f"segment() expects a 2D grey crop, got shape {crop.shape}")
        res = self._predict(crop, self.segment_imgsz, min(self.conf, 0.25))
        if res.boxes is None or len(res.boxes) == 0 or res.masks is None:
            return np.zeros(crop.shape, bool)
        boxes = res.boxes.xyxy.cpu().numpy()
        scores = res.boxes.conf.cpu().numpy()
        h, w = crop.shape
        centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2 - w / 2, (boxes[:, 1] + boxes[:, 3]) / 2 - h / 2], 1)
        off = np.hypot(centres[:, 0] / w, centres[:, 1] / h)
        k = int(np.argmax(scores * (1.0 - np.clip(off, 0, 0.9))))
        m = res.masks.data[k].cpu().numpy() > 0.5
        if m.shape != crop.shape:
            m = cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
        return m


# ---------------------------------------------------------------------- live-path helpers
@dataclass
class _Letterbox:
    """Preallocated network input for one frame shape, laid out as ultralytics' ``LetterBox``
    (``auto``: long side to ``imgsz``, each side padded up to the stride, centred, grey 114)."""

    frame_shape: tuple[int, int]
    resized: tuple[int, int]  # (w, h) of the resized frame
    top: int
    left: int
    tensor: Any  # torch (1, 3, H, W) float32

    @classmethod
    def for_frame(cls, shape: tuple[int, ...], imgsz: int, stride: int, torch: Any) -> "_Letterbox":
        h, w = int(shape[0]), int(shape[1])
        r = min(imgsz / h, imgsz / w)
        nw, nh = max(round(w * r), 1), max(round(h * r), 1)
        dw, dh = (imgsz - nw) % stride, (imgsz - nh) % stride
        top, left = round(dh / 2 - 0.1), round(dw / 2 - 0.1)
        tensor = torch.full((1, 3, nh + dh, nw + dw), 114.0 / 255.0, dtype=torch.float32)
        tensor = tensor.contiguous(memory_format=torch.channels_last)  # as the live network's weights
        return cls((h, w), (nw, nh), top, left, tensor)

    def fill(self, gray_u8: np.ndarray) -> Any:
        """Resize a grey uint8 frame into the input (all three channels); returns the tensor."""
        small = cv2.resize(gray_u8, self.resized, interpolation=cv2.INTER_LINEAR)
        nw, nh = self.resized
        view = self.tensor.numpy()[0, :, self.top : self.top + nh, self.left : self.left + nw]
        np.multiply(small, np.float32(1.0 / 255.0), out=view[0], casting="unsafe")
        view[1] = view[0]
        view[2] = view[0]
        return self.tensor

    def to_frame(self, xyxy: np.ndarray) -> np.ndarray:
        """Network-input boxes -> frame pixels, clipped (as ultralytics' ``scale_boxes``)."""
        h, w = self.frame_shape
        nw, nh = self.resized
        out = np.asarray(xyxy, np.float64).copy()
        out[:, [0, 2]] = (out[:, [0, 2]] - self.left) * (w / nw)
        out[:, [1, 3]] = (out[:, [1, 3]] - self.top) * (h / nh)
        out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, w)
        out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, h)
        return out


class _NoProto:
    """Stands in for the segmentation head's mask-prototype branch in the live copy: boxes
    need no masks, and the branch (an upsampling conv stack at stride 4) measured ~10 % of a
    192-px call."""

    def __call__(self, x: Any) -> Any:
        return x[:, :0]


@dataclass
class _LiveNet:
    """A fused, eval-mode, channels-last copy of the YOLO network for box-only inference
    (channels-last convolutions measured ~13 % faster on CPU; the loaded model stays untouched
    for ``predict``, training and export)."""

    net: Any
    nc: int
    stride: int

    @classmethod
    def from_model(cls, model: Any) -> "_LiveNet":
        head = model.model[-1]
        if getattr(head, "end2end", False):
            raise McfRotatorError("end-to-end (NMS-free) heads are not handled by the live path")
        import torch

        net = copy.deepcopy(model).float().eval()
        net.fuse(verbose=False)
        net = net.to(memory_format=torch.channels_last)
        live_head = net.model[-1]
        if hasattr(live_head, "proto"):
            del live_head.proto  # the submodule; a plain callable takes its place
            live_head.proto = _NoProto()
        stride = int(max(int(s) for s in net.stride)) if hasattr(net, "stride") else 32
        return cls(net, int(getattr(head, "nc", len(getattr(model, "names", {0: ""})))), max(32, stride))

    def boxes(self, x: Any) -> np.ndarray | None:
        """(anchors, 4 + nc) [cx, cy, w, h, class scores...] in input pixels; None if unknown."""
        out = self.net(x)
        y = out[0] if isinstance(out, (tuple, list)) else out
        if isinstance(y, (tuple, list)):  # segmentation: (boxes + coefficients, prototypes)
            y = y[0]
        if not hasattr(y, "ndim") or y.ndim != 3 or y.shape[0] != 1 or y.shape[1] < 4 + self.nc:
            return None
        return y[0, : 4 + self.nc].T.numpy()


def _nms_detections(pred: np.ndarray, conf: float, iou: float, max_det: int, lb: _Letterbox) -> list[Detection]:
    """Score threshold, class-agnostic NMS (one cell class) and frame coordinates."""
    import torch
    import torchvision

    scores = pred[:, 4:].max(axis=1)
    keep = scores > conf
    if not keep.any():
        return []
    p, sc = pred[keep], scores[keep]
    xyxy = np.concatenate([p[:, :2] - p[:, 2:4] / 2, p[:, :2] + p[:, 2:4] / 2], axis=1)
    idx = torchvision.ops.nms(torch.from_numpy(xyxy), torch.from_numpy(sc), iou).numpy()[:max_det]
    boxes = lb.to_frame(xyxy[idx])
    return [Detection(box=tuple(float(v) for v in b), score=float(s)) for b, s in zip(boxes, sc[idx])]


# ---------------------------------------------------------------------- factory
def make_default_detector(weights: str | Path | None = None, **kwargs: Any) -> Any:
    """The YOLO detector when weights and torch/ultralytics load, else the classical one.

    The fallback is logged as a warning naming the reason, so an operator knows detection is
    running on thresholds (weaker on low-contrast or defocused cells).
    """
    try:
        return YoloCellDetector(weights, **kwargs)
    except (McfRotatorError, ImportError, OSError, RuntimeError) as exc:
        log.warning("learned cell detector unavailable (%s); using the classical detector", exc)
        return ClassicalDetector()


def make_default_segmenter(weights: str | Path | None = None, **kwargs: Any) -> Any:
    """The YOLO segmenter (for crops) when it loads, else the classical one, with a warning."""
    try:
        return YoloCellDetector(weights, **kwargs)
    except (McfRotatorError, ImportError, OSError, RuntimeError) as exc:
        log.warning("learned cell segmenter unavailable (%s); using the classical segmenter", exc)
        return ClassicalSegmenter()


# ---------------------------------------------------------------------- training
def _train_threads_callback(threads: int):
    def _cb(trainer: Any) -> None:  # ultralytics resets torch threads in its device set-up
        import torch

        torch.set_num_threads(threads)

    return _cb


def _report_epoch(trainer: Any) -> None:
    """One line per epoch (ultralytics' own progress bars are off to keep logs readable)."""
    m = trainer.metrics or {}
    keys = ("metrics/precision(B)", "metrics/recall(B)", "metrics/mAP50(B)", "metrics/mAP50(M)")
    vals = "  ".join(f"{k.split('/')[1]}={float(m[k]):.3f}" for k in keys if k in m)
    print(f"epoch {trainer.epoch + 1}/{trainer.epochs}  {vals}", flush=True)


def train_detector(
    data: str | Path,
    out_dir: str | Path | None = None,
    epochs: int = 30,
    imgsz: int = DEFAULT_IMGSZ,
    batch: int = 16,
    weights: str | Path | None = None,
    from_scratch: bool = False,
    model_yaml: str = DEFAULT_MODEL_YAML,
    threads: int = 2,
    lr0: float | None = None,
    patience: int = 50,
    seed: int = 0,
    workers: int = 1,
    val: bool = True,
    fraction: float = 1.0,
    cache: bool = True,
    progress: bool = True,
    time_hours: float | None = None,
    device: str = "cpu",
) -> Path:
    """Train (or fine-tune) the segmentation model; returns the path of the best weights.

    By default starts from the shipped weights (fine-tuning, as the seed paper did with its
    hand-labelled microscope images); ``from_scratch`` builds ``model_yaml`` instead, which
    never downloads anything. Run folders go to ``out_dir`` (a temp folder by default).
    ``time_hours`` caps the training time; the epoch count is then re-planned to fit it.
    ``device`` is "cpu" (default) or a torch device such as "0" for the first GPU.
    """
    data_yaml = resolve_dataset(data)
    if from_scratch:
        start: str | Path = model_yaml
    else:
        start = Path(weights) if weights is not None else default_weights_path()
        if not Path(start).is_file():
            raise InputFileError(f"{start}: weights to fine-tune not found (use --from-scratch to train a new model)")
    model = _load_yolo(start, threads)
    project = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="mcf-rotator-yolo-"))
    project.mkdir(parents=True, exist_ok=True)
    model.add_callback("on_pretrain_routine_end", _train_threads_callback(threads))
    model.add_callback("on_train_epoch_start", _train_threads_callback(threads))
    if progress:
        model.add_callback("on_fit_epoch_end", _report_epoch)
    args: dict[str, Any] = dict(
        data=str(data_yaml),
        epochs=int(epochs),
        imgsz=int(imgsz),
        batch=int(batch),
        device=str(device),
        workers=int(workers),
        project=str(project.resolve()),
        name="train",
        exist_ok=True,
        amp=False,
        plots=False,
        # ultralytics builds a fresh model from the yaml and copies the loaded weights into it
        # only when pretrained is not False: False here would silently train from scratch
        pretrained=not from_scratch,
        patience=int(patience),
        seed=int(seed),
        deterministic=False,
        val=bool(val),
        single_cls=True,
        flipud=0.5,
        fliplr=0.5,
        hsv_h=0.0,
        hsv_s=0.0,
        close_mosaic=max(1, int(epochs) // 5),
        # one optimizer step per batch: ultralytics' default (accumulate to 64 images) leaves
        # a short CPU run with a handful of steps, all inside the 100-iteration warm-up
        nbs=int(batch),
        warmup_epochs=0.0,
        fraction=float(fraction),
        cache="ram" if cache else False,
        verbose=False,
    )
    if time_hours is not None:  # ultralytics re-plans the epochs (and LR schedule) to fit the time
        args["time"] = float(time_hours)
    # AdamW at 0.002 is what ultralytics' "auto" picks for short runs; fine-tuning starts gentler
    # (with "auto" ultralytics would ignore lr0)
    args["optimizer"] = "AdamW"
    args["lr0"] = float(lr0) if lr0 is not None else (0.002 if from_scratch else 0.0005)
    try:
        model.train(**args)
    except (FileNotFoundError, RuntimeError) as exc:
        raise McfRotatorError(f"training on {data_yaml} failed: {exc}") from exc
    save_dir = Path(model.trainer.save_dir)
    for name in ("best.pt", "last.pt"):
        if (save_dir / "weights" / name).is_file():
            return save_dir / "weights" / name
    raise McfRotatorError(f"training finished but wrote no weights in {save_dir / 'weights'}")


# ---------------------------------------------------------------------- evaluation
@dataclass
class DetectionScores:
    """Held-out scores: boxes at IoU 0.5 (at the detector's ``conf``), mask IoU of matches."""

    precision: float
    recall: float
    map50: float
    mask_iou: float
    n_images: int
    n_cells: int
    true_positives: int
    false_positives: int
    false_negatives: int
    ms_per_frame: float

    def as_dict(self) -> dict[str, float | int]:
        return dict(self.__dict__)


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two (x0, y0, x1, y1) boxes."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def _match(dets: list[Detection], sample: Sample, thr: float = 0.5) -> list[tuple[float, int | None, bool]]:
    """Greedy (best score first) matching: per detection (score, gt index | None, ignored)."""
    used: set[int] = set()
    ignore = sample.ignore or [False] * len(sample.boxes)
    out = []
    for d in dets:
        best, best_j = thr, None
        for j, g in enumerate(sample.boxes):
            if j in used:
                continue
            v = box_iou(d.box, g)
            if v >= best:
                best, best_j = v, j
        if best_j is not None:
            used.add(best_j)
        out.append((d.score, best_j, bool(best_j is not None and ignore[best_j])))
    return out


def average_precision(scores: np.ndarray, is_tp: np.ndarray, n_gt: int) -> float:
    """All-point interpolated AP (the area under the monotone precision-recall curve)."""
    if n_gt == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(is_tp[order])
    fp = np.cumsum(~is_tp[order])
    rec = np.concatenate([[0.0], tp / n_gt, [tp[-1] / n_gt if tp.size else 0.0]])
    prec = np.concatenate([[1.0], tp / np.maximum(tp + fp, 1), [0.0]])
    prec = np.maximum.accumulate(prec[::-1])[::-1]
    return float(np.sum((rec[1:] - rec[:-1]) * prec[1:]))


def evaluate_detector(detector: YoloCellDetector, samples: Iterable[Sample], low_conf: float = 0.01) -> DetectionScores:
    """Score a detector on frames with exact truth (one pass at ``low_conf`` gives mAP and P/R)."""
    all_scores: list[float] = []
    all_tp: list[bool] = []
    ious: list[float] = []
    n_gt = tp = fp = n_img = 0
    t_total = 0.0
    for sample in samples:
        n_img += 1
        t0 = time.perf_counter()
        dets = detector.detect(sample.image, conf=low_conf)
        t_total += time.perf_counter() - t0
        ignore = sample.ignore or [False] * len(sample.boxes)
        n_gt += sum(1 for i in ignore if not i)
        for (score, j, ign), d in zip(_match(dets, sample), dets):
            if ign:
                continue
            all_scores.append(score)
            all_tp.append(j is not None)
            if score >= detector.conf:
                if j is not None:
                    tp += 1
                    if d.mask is not None:
                        ious.append(mask_iou(d.mask, sample.masks[j]))
                else:
                    fp += 1
    fn = n_gt - tp
    ap = average_precision(np.array(all_scores), np.array(all_tp, bool), n_gt)
    return DetectionScores(
        precision=tp / (tp + fp) if tp + fp else 1.0,
        recall=tp / n_gt if n_gt else 1.0,
        map50=ap,
        mask_iou=float(np.mean(ious)) if ious else float("nan"),
        n_images=n_img,
        n_cells=n_gt,
        true_positives=tp,
        false_positives=fp,
        false_negatives=fn,
        ms_per_frame=1000.0 * t_total / max(n_img, 1),
    )


def benchmark_detector(detector: YoloCellDetector, image: np.ndarray, repeats: int = 20, with_masks: bool = True) -> float:
    """Median ms per ``detect`` call on ``image`` (after one warm-up call)."""
    detector.detect(image, with_masks=with_masks)
    times = []
    for _ in range(int(repeats)):
        t0 = time.perf_counter()
        detector.detect(image, with_masks=with_masks)
        times.append(time.perf_counter() - t0)
    return 1000.0 * float(np.median(times))

