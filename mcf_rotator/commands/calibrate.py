"""``mcf-rotator calibrate``: measure the per-core phase correction of the fibre, headless.

Two sources:

- the rig (default): the calibration wizard runs every step on the configured devices (the
  simulated rig when the config is simulated or ``--simulate`` is given) - flat pattern on
  the SLM, off-axis hologram of the distal facet, phase retrieval, apply, verify - and saves
  the record;
- ``--image hologram.tif --facet-um-per-px X``: phase retrieval from an interference image
  recorded earlier (no devices), e.g. on a bench without a computer-controlled camera.

The record goes to ``--out`` (default: the config's ``paths.calibration_dir``, else
``<output_dir>/calibration``). Any failure (no carrier, saturated frame, core map that does
not fit, verification failing) exits with status 2 *before* anything is written, so the
previous calibration in that folder stays the newest one.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np

from mcf_rotator.errors import CalibrationError, ConfigError, InputFileError

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "calibrate",
        help="measure the fibre's per-core phase correction (off-axis holography) and save it",
        description="Run the calibration wizard headless on the configured rig (simulated by default "
        "when the config is simulated) or retrieve the correction from a saved interference image "
        "(--image). The previous calibration is left untouched on any error (exit status 2).",
    )
    p.add_argument("--config", dest="cal_config", type=Path, default=None, help="rig configuration (YAML/JSON)")
    p.add_argument("--simulate", dest="cal_simulate", action="store_true",
                   help="use the simulated rig whatever the config's drivers say")
    p.add_argument("--out", type=Path, default=None,
                   help="folder (or .json file) for the record; default: the config's calibration folder")
    p.add_argument("--verify", action="store_true",
                   help="rig mode: re-measure with the correction applied and reject it above --limit "
                   "(nothing is saved then)")
    p.add_argument("--limit", type=float, default=None, help="verification limit, rad RMS (default 0.3)")
    p.add_argument("--image", type=Path, default=None, help="saved off-axis hologram (TIFF/PNG/NPY) to retrieve from")
    p.add_argument("--facet-um-per-px", type=float, default=None, help="facet scale of --image (um per camera pixel)")
    p.add_argument("--carrier", type=float, nargs=2, default=None, metavar=("FX", "FY"),
                   help="reference carrier (cycles/pixel) to pick the side-band; default: found automatically")
    p.add_argument("--full-scale", type=float, default=None,
                   help="camera maximum count for the saturation check of --image (default: from the dtype)")
    p.add_argument("--rebend", type=int, default=None, metavar="SEED",
                   help="simulated rig only: re-bend the fibre first (demonstrates a fresh distortion)")
    p.set_defaults(func=run)


# -- helpers ------------------------------------------------------------------------------
def _load_config(args: argparse.Namespace) -> Any:
    from mcf_rotator.config import load_config

    path = args.cal_config if args.cal_config is not None else getattr(args, "config", None)
    config = load_config(path)
    if args.cal_simulate or getattr(args, "simulate", False):
        config = config.model_copy(deep=True)
        config.camera.driver = "simulated"
        config.slm.driver = "simulated"
        config.trap = "simulated"
    return config


def _out_path(args: argparse.Namespace, config: Any) -> Path:
    if args.out is not None:
        out = Path(args.out)
    elif config.paths.calibration_dir is not None:
        out = Path(config.paths.calibration_dir)
    else:
        out = Path(config.paths.output_dir) / "calibration"
    if out.suffix.lower() != ".json":
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the calibration folder {out}: {exc.strerror or exc}") from exc
    elif not out.parent.is_dir():
        raise ConfigError(f"calibration output folder {out.parent} does not exist")
    return out


def _geometry(config: Any) -> Any:
    from mcf_rotator.simulation.world import geometry_from_config

    return geometry_from_config(config)


def read_image(path: Path) -> np.ndarray:
    """A grey interference image from TIFF / PNG / NPY (first page of a stack)."""
    if not path.is_file():
        raise InputFileError(f"hologram image {path}: file not found")
    try:
        if path.suffix.lower() == ".npy":
            img = np.load(path, allow_pickle=False)
        elif path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            img = tifffile.imread(path, key=0)
        else:
            import imageio.v3 as iio

            img = iio.imread(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad input file
        raise InputFileError(f"hologram image {path}: cannot read ({exc})") from exc
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[-1] in (3, 4):  # RGB(A) export of a mono camera
        img = img[..., :3].mean(-1)
    if img.ndim != 2:
        raise InputFileError(f"hologram image {path}: expected one grey image, got shape {img.shape}")
    return img


def _full_scale(img: np.ndarray, given: float | None) -> float | None:
    if given is not None:
        return float(given)
    if np.issubdtype(img.dtype, np.integer):
        return float(np.iinfo(img.dtype).max) if img.dtype.itemsize == 1 else None
    return None


def _save(record: Any, out: Path) -> Path:
    path = record.save(out)
    print(f"saved calibration {record.calibration_id} to {path}")
    return path


def _summary(record: Any) -> str:
    q = record.fit_quality
    parts = [f"{record.n_cores} cores", f"carrier ({record.carrier_cyc_per_px[0]:+.4f}, "
             f"{record.carrier_cyc_per_px[1]:+.4f}) cyc/px"]
    if "fringe_strength" in q:
        parts.append(f"fringe strength {q['fringe_strength']:.2f}")
    if record.residual_rms_rad is not None:
        parts.append(f"residual {record.residual_rms_rad:.3f} rad RMS (piston and tilt removed)")
    return ", ".join(parts)


# -- modes --------------------------------------------------------------------------------
def _run_image(args: argparse.Namespace, config: Any, out: Path) -> int:
    from mcf_rotator.calibration.offaxis import retrieve_phase, wrap
    from mcf_rotator.calibration.record import CalibrationRecord

    if args.facet_um_per_px is None or args.facet_um_per_px <= 0:
        raise ConfigError("--image needs --facet-um-per-px (the facet scale on the camera, um per pixel, > 0)")
    img = read_image(args.image)
    geometry = _geometry(config)
    try:
        r = retrieve_phase(img, geometry, float(args.facet_um_per_px),
                           tuple(args.carrier) if args.carrier else None, full_scale=_full_scale(img, args.full_scale))
    except CalibrationError as exc:  # the cause, and which image it was found in
        raise CalibrationError(f"hologram image {args.image}: {exc}") from exc
    # the image was taken with a flat SLM pattern: correction = -measured (piston removed)
    d = r.core_phases
    corr = wrap(-(d - np.angle(np.sum(r.core_amplitudes * np.exp(1j * d)))))
    record = CalibrationRecord(
        fibre_id=geometry.fibre_id,
        correction_rad=[float(v) for v in corr],
        carrier_cyc_per_px=r.carrier,
        fit_quality={**r.quality, "source_image": str(args.image)},
        facet_um_per_px=float(args.facet_um_per_px),
        core_centres_px=r.core_centres_px.tolist(),
    )
    print(_summary(record))
    _save(record, out)
    return 0


def _run_rig(args: argparse.Namespace, config: Any, out: Path) -> int:
    from mcf_rotator.calibration.record import latest_record
    from mcf_rotator.calibration.wizard import VERIFY_LIMIT_RAD, CalibrationWizard
    from mcf_rotator.holography.mcf import SLMCoreMapping
    from mcf_rotator.rig import build_rig

    rig = build_rig(config)
    if rig.calibration_camera is None:
        raise ConfigError(
            "this rig has no calibration camera driver: record an off-axis hologram of the facet with a flat "
            "SLM pattern and run 'mcf-rotator calibrate --image hologram.tif --facet-um-per-px X'"
        )
    if rig.world is not None:
        geometry, mapping = rig.world.geometry, rig.world.mapping
        if args.rebend is not None:
            rig.world.rebend_fibre(int(args.rebend))
    else:
        if args.rebend is not None:
            raise ConfigError("--rebend only applies to the simulated rig")
        geometry = _geometry(config)
        s = config.slm
        mapping = SLMCoreMapping.build(geometry, (s.height, s.width), s.pixel_pitch_um,
                                       config.fibre.slm_to_facet_magnification)
    previous = latest_record(out) if out.is_dir() else None
    if previous is not None and (previous.fibre_id != geometry.fibre_id or previous.n_cores != geometry.n_cores):
        previous = None  # another fibre's record: neither a fallback nor a carrier hint
    rig.connect()
    try:
        rig.calibration_camera.connect()  # Rig.connect() opens only camera, SLM and trap
        if hasattr(rig.trap, "set_enabled"):
            rig.trap.set_enabled(True)  # the facet needs light
        wizard = CalibrationWizard(rig.slm, rig.calibration_camera, geometry, mapping, previous=previous,
                                   grating_period_px=config.slm.grating_period_px)
        wizard.enter_calibration_mode()
        shot = wizard.capture_hologram()
        log.info("hologram captured, max count %.0f", shot["max_count"])
        wizard.fourier_plane()
        wizard.per_core_phase_map()
        record = wizard.apply()
        if args.verify:
            v = wizard.verify(args.limit if args.limit is not None else VERIFY_LIMIT_RAD)
            record.fit_quality["verified"] = True
            log.info("verified: residual %.3f rad RMS", v["residual_rms_rad"])
        if rig.world is not None:  # the simulator knows the truth: say how good it is
            from mcf_rotator.calibration.offaxis import rms_phase_error

            truth = -rig.world.fibre.distortion
            record.fit_quality["sim_error_piston_tilt_rms_rad"] = rms_phase_error(
                record.correction, truth, remove_tilt=True, positions=geometry.core_positions_um)
            record.fit_quality["sim_error_piston_rms_rad"] = rms_phase_error(record.correction, truth)
    finally:
        try:
            if hasattr(rig.trap, "set_enabled"):
                rig.trap.set_enabled(False)
        finally:
            rig.disconnect()
    print(_summary(record))
    if "sim_error_piston_tilt_rms_rad" in record.fit_quality:
        print(f"simulated truth: error {record.fit_quality['sim_error_piston_tilt_rms_rad']:.3f} rad RMS "
              f"(piston+tilt removed), {record.fit_quality['sim_error_piston_rms_rad']:.3f} (piston only)")
    _save(record, out)
    return 0


def run(args: argparse.Namespace) -> int:
    config = _load_config(args)
    out = _out_path(args, config)
    try:
        if args.image is not None:
            return _run_image(args, config, out)
        return _run_rig(args, config, out)
    except CalibrationError as exc:
        raise CalibrationError(f"{exc}; the previous calibration was not changed") from exc

