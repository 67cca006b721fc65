"""Off-axis holographic phase retrieval of the MCF facet from one interference image.

Image model: ``I = |E + R exp(i 2 pi k.x)|^2``; its Fourier transform holds the zero order
(|E|^2 + |R|^2) around DC and two conjugate side-bands at +-k. Steps:

1. reject unusable frames (saturated, flat, no carrier) with a :class:`CalibrationError`
   that names the cause;
2. find the side-band automatically (strongest smoothed spectral power outside the zero
   order; ``carrier_hint`` picks the sign when the rig knows it, else the side-band with
   fx > 0), refine its centre to sub-pixel by the power centroid;
3. filter it (soft circular window), shift to DC = demodulate, inverse FFT -> complex facet
   field E (up to a global piston);
4. remove any residual carrier tilt with the in-core phase gradient: each core's mode has a
   flat phase, so the power-weighted mean phase gradient must be zero. This makes the
   result independent of the random per-core phases (a spectral-peak carrier estimate is
   not: the side-band's peak follows the brightest far-field speckle);
5. find the cores (core map scaled to the camera, registered on the measured intensity and
   refined per core) and sample the phase at each core (mode-weighted complex sum, which is
   immune to 2 pi wraps); optionally unwrap the full phase map for display.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from mcf_rotator.errors import CalibrationError
from mcf_rotator.holography.mcf import MCFGeometry

#: pixels at the frame's maximum above this fraction count as a saturated frame
SATURATION_FRACTION = 1e-3
#: side-band / zero-order energy below this means there are no usable fringes
MIN_FRINGE_STRENGTH = 0.3
#: mean power in the side-band window under this multiple of the spectrum's median: no carrier
#: peak at all (measured: white noise 1.4-1.5, simulated holograms 150-220)
MIN_CARRIER_PROMINENCE = 10.0


@dataclass
class PhaseRetrieval:
    """Everything one off-axis measurement gives (arrays for the wizard to display)."""

    core_phases: np.ndarray  # (N,) rad, wrapped, piston removed (amplitude-weighted)
    core_amplitudes: np.ndarray  # (N,) relative field amplitude per core
    core_centres_px: np.ndarray  # (N, 2) (row, col)
    carrier: tuple[float, float]  # (fx, fy) cycles/pixel of the side-band holding E
    spectrum_log: np.ndarray  # log10 |FFT| (fftshifted) for display
    sideband_px: tuple[float, float]  # (row, col) of the carrier in ``spectrum_log``
    filter_radius_cyc_per_px: float
    field: np.ndarray  # complex demodulated facet field (image shape)
    phase_map: np.ndarray  # wrapped (or unwrapped) phase, NaN off the cores
    quality: dict = field(default_factory=dict)


#: a frame whose brightest pixels stay below this fraction of full scale has no usable light
DARK_FRACTION = 0.05
NO_LIGHT_MESSAGE = "no light on the calibration camera: is the trap laser on?"


#: a noise-only frame whose spread (robust sigma) exceeds this fraction of its level is lit
#: (read noise on a dark offset is a few counts; light without structure spreads far more)
LIT_NOISE_FRACTION = 0.1
#: full-scale counts of common camera bit depths (8-16 bit): a uniform frame at one is clipped
_CLIP_LEVELS = tuple(float(2**b - 1) for b in range(8, 17))


def check_signal(image: np.ndarray, full_scale: float | None = None) -> None:
    """Raise :class:`CalibrationError` when a calibration frame holds no light (laser off).

    With the camera's ``full_scale`` known: the 99.99th percentile (robust to a few hot
    pixels) below :data:`DARK_FRACTION` of it. Without: a flat frame, or one whose bright end
    is within a few noise sigmas (robust MAD) of its median while that noise is small next
    to its level (:data:`LIT_NOISE_FRACTION`), i.e. read noise on a dark offset (pass the full
    scale: a dark frame clipped at zero can slip through the noise test). A lit frame without
    structure passes: the carrier search then says that it holds no fringes.
    """
    img = np.asarray(image, dtype=np.float64)
    if img.size == 0 or not np.isfinite(img).all():
        return  # shape / NaN problems are reported by the frame check
    top = float(np.percentile(img, 99.99))
    med = float(np.median(img))
    if top <= float(img.min()):
        raise CalibrationError(NO_LIGHT_MESSAGE)
    if full_scale is not None and full_scale > 0:
        if top < DARK_FRACTION * float(full_scale):
            raise CalibrationError(NO_LIGHT_MESSAGE)
        return
    noise = 1.4826 * float(np.median(np.abs(img - med)))
    if noise > 0 and top - med < 4.0 * noise and noise < LIT_NOISE_FRACTION * max(abs(med), 1.0):
        raise CalibrationError(NO_LIGHT_MESSAGE)  # read noise only (a frame clipped at 0 may pass)


def saturated_fraction(img: np.ndarray, full_scale: float | None) -> float:
    """Fraction of pixels clipped at the camera's maximum (0 when none look clipped).

    The pixels at or above ``full_scale`` (without: the frame's own maximum), counted only
    when they pile up there (over 3x as many as in the 1 % of levels just below), so that
    noise whose top value a few pixels happen to reach is not called saturated.
    """
    top = float(img.max())
    level = float(full_scale) if full_scale is not None and full_scale > 0 else top
    if top < level or top <= 0:
        return 0.0
    at_top = float(np.mean(img >= level))
    below = float(np.mean((img < level) & (img >= level - max(1.0, 0.01 * level))))
    return at_top if at_top > 3.0 * below else 0.0


def _check_frame(img: np.ndarray, full_scale: float | None) -> None:
    """One message per cause: not 2-D, NaN, saturated, flat/dark (no light); the carrier search
    that follows reports a lit frame without fringes."""
    if img.ndim != 2:
        raise CalibrationError(f"hologram image must be 2-D (grey), got shape {img.shape}")
    if not np.isfinite(img).all():
        raise CalibrationError("hologram image contains NaN/inf pixels")
    top = float(img.max())
    if top <= float(img.min()):  # uniform: clipped at the maximum, or dark
        clipped = (top >= full_scale) if full_scale is not None and full_scale > 0 else (top in _CLIP_LEVELS)
        if clipped:
            raise CalibrationError(
                f"hologram frame is saturated (100 % of pixels at the maximum, {top:g}): "
                "reduce the exposure or the laser/reference power"
            )
        raise CalibrationError(
            f"hologram image is flat (no light: every pixel reads {top:g}): is the laser on and the shutter open?"
        )
    sat = saturated_fraction(img, full_scale)
    if sat > (SATURATION_FRACTION if full_scale is not None else 10 * SATURATION_FRACTION):
        raise CalibrationError(
            f"hologram frame is saturated ({100 * sat:.2g} % of pixels at the maximum, {min(top, full_scale or top):g}): "
            "reduce the exposure or the laser/reference power"
        )
    check_signal(img, full_scale)


def mode_bandwidth_cyc_per_px(geometry: MCFGeometry, facet_um_per_px: float) -> float:
    """1/e^2 spectral amplitude radius of one core mode, in cycles per camera pixel."""
    w0_px = geometry.mode_field_diameter_um / 2.0 / facet_um_per_px
    return float(np.sqrt(2.0) / (np.pi * w0_px))


def _freq_grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    fy = np.fft.fftshift(np.fft.fftfreq(h))[:, None]
    fx = np.fft.fftshift(np.fft.fftfreq(w))[None, :]
    return fy, fx


def find_carrier(
    spectrum_power: np.ndarray,
    bandwidth: float,
    carrier_hint: tuple[float, float] | None = None,
) -> tuple[np.ndarray, float, float, float]:
    """Locate the side-band in an fftshifted power spectrum.

    Returns (mask of the side-band window, fx, fy (power centroid, cyc/px), fringe strength =
    side-band energy / zero-order energy, excluding the DC bin).
    """
    h, w = spectrum_power.shape
    fy, fx = _freq_grid(h, w)
    r = np.sqrt(fx**2 + fy**2)
    sigma_px = max(1.0, 0.25 * bandwidth * min(h, w))
    smooth = ndimage.gaussian_filter(spectrum_power, sigma_px)
    search = r > 1.5 * bandwidth
    if carrier_hint is not None:
        hx, hy = carrier_hint
        search &= (fx * hx + fy * hy) > 0  # the hinted side-band's half-plane
    else:
        search &= (fx > 0) | ((fx == 0) & (fy > 0))
    if not search.any():
        raise CalibrationError("image too small for off-axis holography: no room for a carrier")
    idx = np.unravel_index(np.argmax(np.where(search, smooth, -np.inf)), smooth.shape)
    px, py = float(fx[0, idx[1]]), float(fy[idx[0], 0])
    radius = min(1.2 * bandwidth, 0.5 * np.hypot(px, py))
    window = (fx - px) ** 2 + (fy - py) ** 2 <= radius**2
    noise = float(np.median(spectrum_power))
    p = np.clip(spectrum_power - noise, 0, None) * window
    tot = p.sum()
    if tot <= 0:
        raise CalibrationError("no fringes: no off-axis carrier peak found in the spectrum "
                               "(is the reference beam blocked or misaligned?)")
    cx = float((p * fx).sum() / tot)
    cy = float((p * fy).sum() / tot)
    dc = (r <= radius) & (r > 0)
    e_dc = float(np.clip(spectrum_power - noise, 0, None)[dc].sum()) + 1e-30
    return window, cx, cy, tot / e_dc


def _core_windows(
    centres: np.ndarray, radius_px: float, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pixel rows/cols (N, K), validity and Gaussian mode weights around each core centre."""
    r = int(np.ceil(radius_px))
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    keep = dy**2 + dx**2 <= (radius_px + 0.5) ** 2
    dy, dx = dy[keep], dx[keep]
    base = np.rint(centres).astype(int)
    rows = base[:, :1] + dy[None]
    cols = base[:, 1:] + dx[None]
    ok = (rows >= 0) & (rows < shape[0]) & (cols >= 0) & (cols < shape[1])
    d2 = (rows - centres[:, :1]) ** 2 + (cols - centres[:, 1:]) ** 2
    return np.clip(rows, 0, shape[0] - 1), np.clip(cols, 0, shape[1] - 1), ok, d2


def locate_cores(
    intensity: np.ndarray, geometry: MCFGeometry, facet_um_per_px: float, initial: np.ndarray | None = None
) -> tuple[np.ndarray, dict]:
    """Core centres (N, 2) (row, col) on the facet intensity, registered to the core map.

    Raises CalibrationError when the core map does not fit the image (wrong map, scale or
    fibre): cores falling on dark regions, or a different number of bright cores.
    """
    h, w = intensity.shape
    pos = geometry.core_positions_um / facet_um_per_px
    w0_px = geometry.mode_field_diameter_um / 2.0 / facet_um_per_px
    if initial is None:
        tot = intensity.sum()
        yy, xx = np.mgrid[0:h, 0:w]
        cy, cx = (intensity * yy).sum() / tot, (intensity * xx).sum() / tot
        centres = np.stack([cy + pos[:, 1], cx + pos[:, 0]], 1)
    else:
        centres = np.asarray(initial, float).copy()
    radius = max(1.5 * w0_px, 1.5)
    reach = max(0.4 * geometry.pitch_um / facet_um_per_px, radius)
    # global shift, then per-core refinement (intensity centroid within ~half a pitch)
    for r_win, per_core in ((reach, False), (radius, True)):
        rows, cols, ok, _ = _core_windows(centres, r_win, (h, w))
        v = intensity[rows, cols] * ok
        s = v.sum(1) + 1e-30
        shift = np.stack([(v * rows).sum(1) / s, (v * cols).sum(1) / s], 1) - centres
        if per_core:
            centres = centres + np.clip(shift, -radius, radius)
        else:
            centres = centres + np.median(shift, axis=0)
    rows, cols, ok, d2 = _core_windows(centres, radius, (h, w))
    core_power = (intensity[rows, cols] * ok).sum(1)
    in_cores = float(core_power.sum() / (intensity.sum() + 1e-30))
    dark = int(np.sum(core_power < 0.15 * np.median(core_power)))
    # independent count of bright blobs, to catch a map with too few / too many cores
    smooth = ndimage.gaussian_filter(intensity, max(w0_px / 2, 0.7))
    peaks = (smooth == ndimage.maximum_filter(smooth, size=max(3, int(reach)))) & (smooth > 0.2 * np.median(smooth[rows[:, 0], cols[:, 0]]))
    n_blobs = int(peaks.sum())
    info = {"power_in_cores": in_cores, "dark_cores": dark, "bright_spots": n_blobs}
    if (
        in_cores < 0.6
        or dark > max(1, geometry.n_cores // 20)
        or abs(n_blobs - geometry.n_cores) > max(2, geometry.n_cores // 10)
        or np.any((centres < 0) | (centres >= [h, w]))
    ):
        raise CalibrationError(
            f"core map does not match the image ({geometry.n_cores} cores in the map, ~{n_blobs} bright cores "
            f"seen, {dark} map cores dark, {in_cores:.0%} of the light on map cores): check the core map file, "
            "the facet scale (um per pixel) and that the right fibre is imaged"
        )
    return centres, info


def _demodulate(spec: np.ndarray, fx: np.ndarray, fy: np.ndarray, window: np.ndarray,
                carrier_x: float, carrier_y: float, radius: float) -> np.ndarray:
    """Soft-windowed side-band at (carrier_x, carrier_y) shifted to DC -> complex field."""
    h, w = spec.shape
    soft = np.exp(-0.5 * (((fx - carrier_x) ** 2 + (fy - carrier_y) ** 2) / (0.6 * radius) ** 2) ** 2) * window
    kr = int(round(carrier_y * h))
    kc = int(round(carrier_x * w))
    filtered = np.roll(spec * soft, (-kr, -kc), axis=(0, 1))
    field_ = np.fft.ifft2(np.fft.ifftshift(filtered))
    rem_y, rem_x = carrier_y - kr / h, carrier_x - kc / w
    ramp_y = np.exp(-2j * np.pi * rem_y * np.arange(h))[:, None]
    ramp_x = np.exp(-2j * np.pi * rem_x * np.arange(w))[None, :]
    return field_ * ramp_y * ramp_x


def retrieve_phase(
    image: np.ndarray,
    geometry: MCFGeometry,
    facet_um_per_px: float,
    carrier_hint: tuple[float, float] | None = None,
    core_centres_px: np.ndarray | None = None,
    full_scale: float | None = None,
    unwrap: bool = False,
) -> PhaseRetrieval:
    """Per-core facet phases from one off-axis hologram (see the module notes).

    ``carrier_hint`` (fx, fy) cyc/px selects the side-band holding E (not E*) when the rig
    knows the reference tilt; ``core_centres_px`` skips core detection; ``full_scale`` is the
    camera's maximum count (saturation check); ``unwrap`` also unwraps the displayed map.
    """
    img = np.asarray(image, dtype=np.float64)
    _check_frame(img, full_scale)
    if facet_um_per_px <= 0:
        raise CalibrationError(f"facet scale must be positive, got {facet_um_per_px} um/px")
    h, w = img.shape
    bandwidth = mode_bandwidth_cyc_per_px(geometry, facet_um_per_px)
    spec = np.fft.fftshift(np.fft.fft2(img - img.mean()))
    power = np.abs(spec) ** 2
    window, cfx, cfy, strength = find_carrier(power, bandwidth, carrier_hint)
    prominence = float(power[window].mean() / max(float(np.median(power)), 1e-30))
    if prominence < MIN_CARRIER_PROMINENCE:
        raise CalibrationError(
            f"no fringes: no off-axis carrier peak found (the strongest side-band is {prominence:.1f}x the "
            f"spectrum's median power, under {MIN_CARRIER_PROMINENCE:g}x): the frame holds no interference "
            "pattern, only noise (is the fibre facet in view and the reference beam on?)"
        )
    if strength < MIN_FRINGE_STRENGTH:
        raise CalibrationError(
            f"no fringes: no off-axis carrier peak found (fringe strength {strength:.3f} < {MIN_FRINGE_STRENGTH}): "
            "is the reference beam blocked, misaligned or much weaker than the fibre light?"
        )
    fy, fx = _freq_grid(h, w)
    radius = min(1.2 * bandwidth, 0.5 * np.hypot(cfx, cfy))
    rows = np.arange(h)[:, None]
    cols = np.arange(w)[None, :]
    total_fx, total_fy = cfx, cfy
    for _ in range(4):
        # a window off the true carrier biases the in-core gradient towards its centre, so
        # re-centre the window on the refined carrier and repeat (converges geometrically)
        field_ = _demodulate(spec, fx, fy, window, total_fx, total_fy, radius)
        gx = np.angle(np.sum(field_[:, 1:] * np.conj(field_[:, :-1]))) / (2 * np.pi)
        gy = np.angle(np.sum(field_[1:, :] * np.conj(field_[:-1, :]))) / (2 * np.pi)
        total_fx, total_fy = total_fx + gx, total_fy + gy
        window = (fx - total_fx) ** 2 + (fy - total_fy) ** 2 <= radius**2
        if np.hypot(gx, gy) < 1e-6:
            break
    field_ = _demodulate(spec, fx, fy, window, total_fx, total_fy, radius)
    inten = np.abs(field_) ** 2
    if core_centres_px is None:
        centres, info = locate_cores(inten, geometry, facet_um_per_px)
    else:
        centres = np.asarray(core_centres_px, float)
        if centres.shape != (geometry.n_cores, 2):
            raise CalibrationError(
                f"core centres have shape {centres.shape}, the core map has {geometry.n_cores} cores"
            )
        centres, info = locate_cores(inten, geometry, facet_um_per_px, initial=centres)
    w0_px = geometry.mode_field_diameter_um / 2.0 / facet_um_per_px
    r_idx, c_idx, ok, d2 = _core_windows(centres, max(1.2 * w0_px, 1.0), (h, w))
    weight = np.exp(-d2 / w0_px**2) * ok
    c = (field_[r_idx, c_idx] * weight).sum(1)
    amps = np.abs(c)
    piston = np.angle(np.sum(c))
    phases = np.angle(c * np.exp(-1j * piston))
    amps = amps / (np.median(amps) + 1e-30)
    mask = inten > 0.05 * np.percentile(inten[r_idx[:, 0], c_idx[:, 0]], 50)
    pm = np.angle(field_ * np.exp(-1j * piston))
    if unwrap:
        from skimage.restoration import unwrap_phase

        pm = np.asarray(unwrap_phase(np.ma.masked_array(pm, ~mask)).filled(np.nan))
    pm = np.where(mask, pm, np.nan)
    quality = {
        "fringe_strength": float(strength),
        "core_amplitude_cv": float(np.std(amps) / (np.mean(amps) + 1e-30)),
        **info,
    }
    return PhaseRetrieval(
        core_phases=phases,
        core_amplitudes=amps,
        core_centres_px=centres,
        carrier=(float(total_fx), float(total_fy)),
        spectrum_log=np.log10(np.abs(spec) + 1.0).astype(np.float32),
        sideband_px=(float(cfy * h + h // 2), float(cfx * w + w // 2)),
        filter_radius_cyc_per_px=float(radius),
        field=field_.astype(np.complex64),
        phase_map=pm.astype(np.float32),
        quality=quality,
    )


def wrap(phase: np.ndarray) -> np.ndarray:
    """Wrap to (-pi, pi]."""
    return np.angle(np.exp(1j * np.asarray(phase)))


def rms_phase_error(measured: np.ndarray, truth: np.ndarray, weights: np.ndarray | None = None,
                    remove_tilt: bool = False, positions: np.ndarray | None = None) -> float:
    """RMS of wrap(measured - truth) after removing the (circular mean) piston [and tilt]."""
    d = wrap(np.asarray(measured) - np.asarray(truth))
    w = np.ones_like(d) if weights is None else np.asarray(weights, float)
    d = wrap(d - np.angle(np.sum(w * np.exp(1j * d))))
    if remove_tilt and positions is not None:
        a = np.column_stack([np.ones_like(d), positions])
        coef, *_ = np.linalg.lstsq(a * w[:, None], d * w, rcond=None)
        d = wrap(d - a @ coef)
    return float(np.sqrt(np.sum(w * d**2) / np.sum(w)))
