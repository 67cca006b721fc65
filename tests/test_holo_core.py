"""MCF model, targets, GS / gradient-descent baselines."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mcf_rotator.errors import InputFileError
from mcf_rotator.holography.gs import GSHologramGenerator, gradient_descent_phases, weighted_gs
from mcf_rotator.holography.mcf import (
    FarFieldGrid,
    MCFGeometry,
    SLMCoreMapping,
    beam_moments,
    far_field_intensity,
    far_field_matrix,
    grey_to_phase,
    near_field,
    phase_to_grey,
)
from mcf_rotator.holography.quality import hologram_quality
from mcf_rotator.holography.targets import central_mask, ellipse_target

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def fibre():
    g = MCFGeometry.hexagonal()
    grid = FarFieldGrid.for_geometry(g, 64)
    return g, grid, far_field_matrix(g, grid), central_mask(grid, g)


def test_hexagonal_geometry():
    g = MCFGeometry.hexagonal()
    assert g.n_cores == 61
    assert g.pitch_um == pytest.approx(15.0)
    assert g.radius_um == pytest.approx(60.0)


def test_core_map_roundtrip_and_bad_file(tmp_path):
    g = MCFGeometry.hexagonal(rings=2, jitter_um=0.3, seed=1)
    g.to_json(tmp_path / "map.json")
    g2 = MCFGeometry.from_file(tmp_path / "map.json")
    np.testing.assert_allclose(g2.core_positions_um, g.core_positions_um)
    (tmp_path / "bad.csv").write_text("x_um,y_um\n1,2\n")
    with pytest.raises(InputFileError, match="bad.csv"):
        MCFGeometry.from_file(tmp_path / "bad.csv")


def test_far_field_matches_fft_of_near_field():
    """The exact non-uniform DFT equals a finely sampled, zero-padded FFT of the facet field."""
    g = MCFGeometry.hexagonal(rings=2)
    rng = np.random.default_rng(0)
    ph = rng.uniform(-np.pi, np.pi, g.n_cores)
    px, n = 0.5, 1024
    e = near_field(g, ph, (n, n), px, centre_px=(n // 2, n // 2))
    spec = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(e)))
    # direction sine of FFT bin k: u = k * lambda / (n * px)
    du = g.wavelength_um / (n * px)
    grid = FarFieldGrid(size=16, half_extent=8 * du)  # pixel centres at (k + 0.5) du
    ff = far_field_intensity(ph, far_field_matrix(g, grid))
    # sample the FFT at the same directions by half-pixel shift: use a grid on integer bins
    grid_int = FarFieldGrid(size=17, half_extent=8.5 * du)
    ff_int = far_field_intensity(ph, far_field_matrix(g, grid_int))
    c = n // 2
    fft_int = np.abs(spec[c - 8 : c + 9, c - 8 : c + 9]) ** 2
    fft_int = fft_int / fft_int.max()
    ff_int = ff_int / ff_int.max()
    np.testing.assert_allclose(ff_int, fft_int, atol=2e-3)
    assert ff.shape == (16, 16)


def test_ellipse_target_orientation_matches_beam_moments():
    grid = FarFieldGrid(64, 0.1)
    for angle in (0.0, 30.0, 75.0, -40.0):
        m = beam_moments(ellipse_target(grid, (8, 3), angle))
        assert m["angle_deg"] == pytest.approx(angle, abs=0.5)
        assert m["ellipticity"] == pytest.approx(1 - 3 / 8, abs=0.02)
    t = ellipse_target(grid, (5, 5), 0, centre=(4, -2))
    m = beam_moments(t)
    assert m["cx"] == pytest.approx(31.5 + 4, abs=0.05)
    assert m["cy"] == pytest.approx(31.5 + 2, abs=0.05)  # y up = rows up


def test_central_mask_excludes_replicas(fibre):
    g, grid, a, mask = fibre
    flat = far_field_intensity(np.zeros(g.n_cores), a)
    # a flat phase focuses on axis; the replica peaks lie outside the central mask
    assert mask[32, 32] and mask[31, 31]
    outside = np.where(mask, 0, flat)
    assert outside.max() > 0.3 * flat.max()  # replicas exist ...
    peak = np.unravel_index(np.argmax(outside), outside.shape)
    assert not mask[peak]  # ... and are excluded


def test_slm_mapping_roundtrip_and_grey():
    g = MCFGeometry.hexagonal(rings=2)
    m = SLMCoreMapping.build(g, slm_shape=(200, 300))
    ph = np.random.default_rng(2).uniform(-np.pi, np.pi, g.n_cores)
    img = m.phases_to_slm(ph)
    back = m.slm_to_phases(img)
    np.testing.assert_allclose(np.angle(np.exp(1j * (back - ph))), 0, atol=1e-9)
    grey = phase_to_grey(img)
    assert grey.dtype == np.uint8
    np.testing.assert_allclose(np.angle(np.exp(1j * (grey_to_phase(grey) - img))), 0, atol=2 * np.pi / 256)


@pytest.mark.parametrize("angle", [0.0, 50.0])
def test_weighted_gs_forms_rotated_ellipse(fibre, angle):
    g, grid, a, mask = fibre
    target = ellipse_target(grid, (6, 2.5), angle)
    ph = weighted_gs(target, a, 50, mask=mask)
    inten = far_field_intensity(ph, a)
    q = hologram_quality(inten, target, mask)
    assert q.correlation > 0.95
    core = np.where(mask, inten, 0)
    m = beam_moments(np.where(core > 0.2 * core.max(), core, 0))
    assert abs(((m["angle_deg"] - angle + 90) % 180) - 90) < 4
    # random phases are far worse: the metric can fail
    rnd = far_field_intensity(np.random.default_rng(0).uniform(-np.pi, np.pi, g.n_cores), a)
    assert hologram_quality(rnd, target, mask).correlation < 0.7


def test_gradient_descent_improves_on_start(fibre):
    g, grid, a, mask = fibre
    target = ellipse_target(grid, (6, 2.5), 20)
    start = np.random.default_rng(1).uniform(-np.pi, np.pi, g.n_cores)
    q0 = hologram_quality(far_field_intensity(start, a), target, mask)
    ph = gradient_descent_phases(target, a, 150, mask=mask, init=start)
    q1 = hologram_quality(far_field_intensity(ph, a), target, mask)
    assert q1.correlation > q0.correlation + 0.2
    assert q1.correlation > 0.9


def test_gs_generator_interface():
    g = MCFGeometry.hexagonal()
    gen = GSHologramGenerator(g, n_iter=10)
    t = ellipse_target(gen.grid, (6, 2.5), 10)
    assert gen.phases(t).shape == (61,)
    assert gen.phases_batch(np.stack([t, t])).shape == (2, 61)
    with pytest.raises(ValueError, match="pixels"):
        gen.phases(np.ones((32, 32)))
