"""Volume quality metrics against a ground truth (MSE, MAE, RMSE, PSNR, 3D SSIM, 3D MS-SSIM).

Normalisation is explicit because every figure depends on it:

- ``"truth"`` (default): both volumes are mapped by the same affine map that takes the ground
  truth to [0, 1] (reconstructions are quantitative, so no per-volume stretching hides a bias);
- ``"minmax"``: each volume is mapped to [0, 1] by its own min and max (what many papers do);
- ``"none"``: raw values; PSNR then uses the truth's value range.

PSNR uses the data range of the (normalised) ground truth. SSIM and MS-SSIM are the 3D versions
of pytorch-msssim on 5D tensors (N, C, D, H, W) with a Gaussian window of size 7.
"""

from __future__ import annotations

import numpy as np

from mcf_rotator.errors import ReconstructionError

NORMALISATIONS = ("truth", "minmax", "none")


def normalise(volume: np.ndarray, truth: np.ndarray, mode: str = "truth") -> tuple[np.ndarray, np.ndarray]:
    """Return (volume, truth) as float64 after the named normalisation."""
    v = np.asarray(volume, np.float64)
    t = np.asarray(truth, np.float64)
    if mode == "none":
        return v, t
    if mode == "truth":
        lo, hi = t.min(), t.max()
        if hi <= lo:
            raise ReconstructionError("the ground truth is constant; nothing to normalise against")
        return (v - lo) / (hi - lo), (t - lo) / (hi - lo)
    if mode == "minmax":

        def mm(a: np.ndarray) -> np.ndarray:
            lo, hi = a.min(), a.max()
            return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)

        return mm(v), mm(t)
    raise ReconstructionError(f"unknown normalisation {mode!r}; choose one of {', '.join(NORMALISATIONS)}")


def _torch5d(a: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None]


def ssim3d(volume: np.ndarray, truth: np.ndarray, data_range: float = 1.0, win_size: int = 7) -> float:
    """3D SSIM (pytorch-msssim, Gaussian window ``win_size``, sigma 1.5)."""
    from pytorch_msssim import ssim

    return float(ssim(_torch5d(volume), _torch5d(truth), data_range=data_range, win_size=win_size))


def ms_ssim3d(volume: np.ndarray, truth: np.ndarray, data_range: float = 1.0, win_size: int = 7) -> float:
    """3D MS-SSIM over 5 scales; every side must exceed (win_size - 1) * 16 voxels."""
    from pytorch_msssim import ms_ssim

    need = (win_size - 1) * 2**4
    if min(np.shape(truth)) <= need:
        raise ReconstructionError(f"MS-SSIM with window {win_size} needs every side > {need} voxels, got {np.shape(truth)}")
    return float(ms_ssim(_torch5d(volume), _torch5d(truth), data_range=data_range, win_size=win_size))


def volume_metrics(
    volume: np.ndarray, truth: np.ndarray, normalisation: str = "truth", win_size: int = 7
) -> dict[str, float]:
    """All metrics of ``volume`` against ``truth`` (same shape); MS-SSIM omitted (NaN) if too small."""
    if np.shape(volume) != np.shape(truth):
        raise ReconstructionError(f"volume shape {np.shape(volume)} differs from ground truth {np.shape(truth)}")
    v, t = normalise(volume, truth, normalisation)
    err = v - t
    mse = float(np.mean(err**2))
    rng = float(t.max() - t.min())
    out = {
        "mse": mse,
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(mse)),
        "psnr_db": float(10 * np.log10(rng**2 / mse)) if mse > 0 else float("inf"),
        "ssim": ssim3d(v, t, rng, win_size) if min(t.shape) >= win_size else float("nan"),
    }
    try:
        out["ms_ssim"] = ms_ssim3d(v, t, rng, win_size)
    except ReconstructionError:
        out["ms_ssim"] = float("nan")
    return out


def angle_errors(estimated_deg: np.ndarray, true_deg: np.ndarray) -> dict[str, float]:
    """Mean / max absolute and RMS error of per-frame angles (both cumulative, degrees)."""
    e = np.asarray(estimated_deg, np.float64) - np.asarray(true_deg, np.float64)
    return {"mean_abs_deg": float(np.mean(np.abs(e))), "max_abs_deg": float(np.max(np.abs(e))), "rms_deg": float(np.sqrt(np.mean(e**2)))}
