"""OME metadata of our recordings, built through the maintained models (ome-types for OME-XML,
ome-zarr-models for NGFF 0.5), never as hand-made XML or dicts.

Why a module of its own: the recorder (writing), the reconstruct command (reading the pixel
size back) and the napari plugin (scale, units, timestamps) must agree on one description of
a run. :class:`AcquisitionInfo` is that description; everything optional, because a replayed
file or an old recording may know only part of it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from typing import Any, Sequence

import numpy as np

#: marker in the OME Image description while a TIFF recording is still being written
IN_PROGRESS = "mcf-rotator recording in progress"
#: significant digits kept in metadata (no 0.08625000000000001)
SIG_DIGITS = 7


def rounded(value: float | None, digits: int = SIG_DIGITS) -> float | None:
    """``value`` to ``digits`` significant digits (float noise never reaches a file)."""
    if value is None:
        return None
    v = float(value)
    if not math.isfinite(v) or v == 0.0:
        return v
    return float(f"{v:.{digits}g}")


@dataclass(frozen=True)
class AcquisitionInfo:
    """What a recording's metadata says about the instrument and the run (all optional)."""

    pixel_um: float | None = None  # object-side pixel size (camera pixel / magnification)
    frame_interval_s: float | None = None  # nominal: 1 / camera frame rate
    exposure_s: float | None = None
    magnification: float | None = None
    camera_model: str | None = None
    camera_serial: str | None = None
    bit_depth: int | None = None
    channel_name: str = "brightfield"
    imaging_wavelength_nm: float | None = None
    started: datetime | None = None

    @classmethod
    def from_config(cls, config: Any, camera_model: str | None = None) -> "AcquisitionInfo":
        """Everything the rig configuration knows (a :class:`~mcf_rotator.config.RigConfig`)."""
        cam, optics = config.camera, config.optics
        model = camera_model or {
            "simulated": "simulated camera", "ueye": "IDS uEye", "ids_peak": "IDS peak camera",
            "replay": "file replay",
        }.get(cam.driver, str(cam.driver))
        return cls(
            pixel_um=float(optics.object_pixel_um),
            frame_interval_s=1.0 / float(cam.frame_rate_hz),
            exposure_s=float(cam.exposure_ms) / 1000.0,
            magnification=float(optics.magnification),
            camera_model=model,
            camera_serial=cam.serial,
            bit_depth=int(cam.bit_depth),
            imaging_wavelength_nm=float(optics.imaging_wavelength_um) * 1000.0,
        )

    @classmethod
    def from_header(cls, header: dict[str, Any]) -> "AcquisitionInfo":
        """Read back from a sidecar header (the ``acquisition`` entry, else loose keys)."""
        src = dict(header.get("acquisition") or {})
        for key in ("pixel_um", "magnification", "camera_model", "camera_serial", "bit_depth"):
            src.setdefault(key, header.get(key))
        if src.get("exposure_s") is None and header.get("exposure_ms") is not None:
            src["exposure_s"] = float(header["exposure_ms"]) / 1000.0
        if src.get("frame_interval_s") is None and header.get("frame_rate_hz"):
            src["frame_interval_s"] = 1.0 / float(header["frame_rate_hz"])
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in src.items() if k in names and v is not None}
        if isinstance(kw.get("started"), str):
            try:
                kw["started"] = datetime.fromisoformat(kw["started"])
            except ValueError:
                kw.pop("started")
        if kw.get("started") is None and header.get("started_unix"):
            kw["started"] = datetime.fromtimestamp(float(header["started_unix"]), timezone.utc)
        return cls(**kw)

    def merged(self, **overrides: Any) -> "AcquisitionInfo":
        """A copy with the given fields replaced where the value is not ``None``."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data.update({k: v for k, v in overrides.items() if v is not None})
        return AcquisitionInfo(**data)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready, rounded, ``None`` fields left out (for the sidecar header)."""
        out: dict[str, Any] = {}
        for k, v in asdict(self).items():
            if v is None:
                continue
            if isinstance(v, datetime):
                v = v.isoformat()
            elif isinstance(v, float):
                v = rounded(v)
            out[k] = v
        return out


def frame_interval(timestamps: Sequence[float], nominal: float | None = None) -> float | None:
    """Median spacing of the frame timestamps (robust to a dropped frame); ``nominal`` when
    fewer than two timestamps or they do not increase."""
    t = np.asarray(timestamps, float)
    if t.size >= 2:
        d = np.diff(t)
        d = d[np.isfinite(d) & (d > 0)]
        if d.size:
            return rounded(float(np.median(d)))
    return rounded(nominal) if nominal else None


# ----------------------------------------------------------------------------- OME-XML
def ome_xml(
    info: AcquisitionInfo,
    *,
    name: str,
    shape: tuple[int, int],
    dtype: np.dtype,
    n_frames: int,
    timestamps: Sequence[float] | None = None,
    exposures_s: Sequence[float | None] | None = None,
    in_progress: bool = False,
) -> str:
    """OME-XML for a (T, Y, X) single-channel brightfield recording stored one frame per IFD.

    ``timestamps`` (one per frame) give the per-plane DeltaT; without them (a recording in
    progress) the XML is the minimal valid form: pixels, channel and instrument, no planes.
    """
    from ome_types import model as m
    from ome_types import to_xml

    h, w = int(shape[0]), int(shape[1])
    dt = frame_interval(timestamps or [], info.frame_interval_s)
    detector = m.Detector(
        id="Detector:0:0",
        model=info.camera_model,
        serial_number=info.camera_serial,
        type=m.Detector_Type.CMOS,
    )
    objectives = []
    if info.magnification:
        objectives.append(m.Objective(id="Objective:0:0", nominal_magnification=rounded(info.magnification)))
    instrument = m.Instrument(id="Instrument:0", detectors=[detector], objectives=objectives)
    channel = m.Channel(
        id="Channel:0:0",
        name=info.channel_name,
        samples_per_pixel=1,
        contrast_method=m.Channel_ContrastMethod.BRIGHTFIELD,
        illumination_type=m.Channel_IlluminationType.TRANSMITTED,
        acquisition_mode=m.Channel_AcquisitionMode.BRIGHT_FIELD,
        emission_wavelength=rounded(info.imaging_wavelength_nm),
        detector_settings=m.DetectorSettings(id=detector.id),
    )
    pixels: dict[str, Any] = dict(
        id="Pixels:0",
        dimension_order=m.Pixels_DimensionOrder.XYCZT,
        type=m.PixelType(np.dtype(dtype).name),
        size_x=w, size_y=h, size_z=1, size_c=1, size_t=max(int(n_frames), 1),
        channels=[channel],
        tiff_data_blocks=[m.TiffData(ifd=0, plane_count=max(int(n_frames), 1))],
    )
    if info.bit_depth and np.dtype(dtype).kind in "iu":
        pixels["significant_bits"] = min(int(info.bit_depth), np.dtype(dtype).itemsize * 8)
    if info.pixel_um:
        px = rounded(info.pixel_um)
        pixels.update(physical_size_x=px, physical_size_y=px,
                      physical_size_x_unit=m.UnitsLength.MICROMETER, physical_size_y_unit=m.UnitsLength.MICROMETER)
    if dt:
        pixels.update(time_increment=dt, time_increment_unit=m.UnitsTime.SECOND)
    if timestamps is not None and len(timestamps) == n_frames and n_frames:
        t0 = float(timestamps[0])
        planes = []
        for i, t in enumerate(timestamps):
            exp = exposures_s[i] if exposures_s is not None and i < len(exposures_s) else info.exposure_s
            plane: dict[str, Any] = dict(the_z=0, the_c=0, the_t=i, delta_t=rounded(float(t) - t0, 9) or 0.0,
                                         delta_t_unit=m.UnitsTime.SECOND)
            if exp:
                plane.update(exposure_time=rounded(exp), exposure_time_unit=m.UnitsTime.SECOND)
            planes.append(m.Plane(**plane))
        pixels["planes"] = planes
    description = (
        f"{IN_PROGRESS}: frames are appended as they arrive; this metadata is rewritten when it closes"
        if in_progress else "brightfield projections of a cell rotated by a multi-core fibre trap"
    )
    image = m.Image(
        id="Image:0",
        name=name,
        description=description,
        acquisition_date=info.started,
        instrument_ref=m.InstrumentRef(id=instrument.id),
        objective_settings=m.ObjectiveSettings(id="Objective:0:0") if objectives else None,
        pixels=m.Pixels(**pixels),
    )
    ome = m.OME(creator=_creator(), instruments=[instrument], images=[image])
    return to_xml(ome)


def minimal_ome_xml(info: AcquisitionInfo, *, name: str, shape: tuple[int, int], dtype: np.dtype,
                    n_frames: int) -> str:
    """Valid minimal OME-XML of a TIFF recording in progress: pixels (size, pixel size, frame
    interval) and the channel name, no planes, no instrument.

    Built with tifffile's OME writer, which is already imported and costs about a millisecond,
    so the writer thread can refresh it while frames arrive (ome-types takes seconds to import).
    """
    import tifffile

    h, w = int(shape[0]), int(shape[1])
    n = max(int(n_frames), 1)
    kw: dict[str, Any] = {"Name": name, "Description": f"{IN_PROGRESS}: this metadata is rewritten when it closes",
                          "Channel": {"Name": info.channel_name}}
    if info.pixel_um:
        px = rounded(info.pixel_um)
        kw.update(PhysicalSizeX=px, PhysicalSizeY=px, PhysicalSizeXUnit="µm", PhysicalSizeYUnit="µm")
    if info.frame_interval_s:
        kw.update(TimeIncrement=rounded(info.frame_interval_s), TimeIncrementUnit="s")
    ox = tifffile.OmeXml(Creator=_creator())
    ox.addimage(np.dtype(dtype), (n, h, w), (n, 1, 1, h, w, 1), axes="TYX", **kw)
    return ox.tostring()


def _creator() -> str:
    try:
        from importlib.metadata import version

        return f"mcf-rotator {version('mcf-rotator')}"
    except Exception:  # noqa: BLE001 - not installed as a distribution (source tree)
        return "mcf-rotator"


def pixel_um_from_ome(xml: str) -> float | None:
    """PhysicalSizeX of the first image, in um (``None`` when absent or not a length)."""
    from ome_types import from_xml

    try:
        ome = from_xml(xml)
    except Exception:  # noqa: BLE001 - not parseable OME: the caller tries other sources
        return None
    if not ome.images:
        return None
    px = ome.images[0].pixels
    if px.physical_size_x is None:
        return None
    unit = px.physical_size_x_unit.value if px.physical_size_x_unit is not None else "µm"
    factor = _LENGTH_TO_UM.get(unit)
    return rounded(float(px.physical_size_x) * factor) if factor else None


_LENGTH_TO_UM = {"m": 1e6, "mm": 1e3, "µm": 1.0, "um": 1.0, "nm": 1e-3, "pm": 1e-6, "cm": 1e4}


# ----------------------------------------------------------------------------- NGFF 0.5
#: zarr v3 dimension names of a recording array
RECORDING_DIMS = ("t", "y", "x")


def ngff_image_attrs(name: str, pixel_um: float | None, frame_interval_s: float | None) -> dict[str, Any]:
    """The ``ome`` attributes of a (t, y, x) NGFF 0.5 image (one resolution level, path ``0``).

    Without a known pixel size the spatial axes carry no unit and scale 1 (pixels), never a
    made-up micrometre calibration; likewise time without a known interval.
    """
    from ome_zarr_models.v05.axes import Axis
    from ome_zarr_models.v05.image import ImageAttrs
    from ome_zarr_models.v05.multiscales import Dataset, Multiscale

    px = rounded(pixel_um) if pixel_um else None
    dt = rounded(frame_interval_s) if frame_interval_s else None
    axes = (
        Axis(name="t", type="time", unit="second" if dt else None),
        Axis(name="y", type="space", unit="micrometer" if px else None),
        Axis(name="x", type="space", unit="micrometer" if px else None),
    )
    ms = Multiscale(
        axes=axes,
        datasets=(Dataset.build(path="0", scale=[dt or 1.0, px or 1.0, px or 1.0], translation=None),),
        name=name,
    )
    attrs = ImageAttrs(multiscales=[ms], version="0.5")
    return attrs.model_dump(mode="json", exclude_none=True, by_alias=True)
