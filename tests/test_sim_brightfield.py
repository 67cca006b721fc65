"""Brightfield renderer: Beer-Lambert correctness, ground-truth masks/boxes, noise and bit depth."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from mcf_rotator.simulation.brightfield import (
    BrightfieldOptics,
    CellInstance,
    background,
    box_from_mask,
    render_scene,
)
from mcf_rotator.simulation.phantom import CellPhantom, pose_matrix

torch.set_num_threads(1)
cv2.setNumThreads(1)

SHAPE = (200, 240)
PIX = 0.2  # um/px: a 12 um cell is 60 px, keeps the tests fast


@pytest.fixture(scope="module")
def phantom() -> CellPhantom:
    return CellPhantom.random(1, 12.0)


def test_beer_lambert_without_noise(phantom: CellPhantom) -> None:
    optics = BrightfieldOptics(pixel_um=PIX, bit_depth=16, illumination=40000.0, phase_halo=0.0)
    cell = CellInstance(phantom, pose_matrix(37.0), (100.0, 120.0))
    scene = render_scene(SHAPE, [cell], optics, np.random.default_rng(0), noise=False)
    assert scene.image.dtype == np.uint16
    bg = background(SHAPE, optics)
    od_measured = -np.log(scene.image.astype(np.float64) / bg)
    expected = phantom.project(pose_matrix(37.0), SHAPE, PIX, (100.0, 120.0))
    inside = scene.masks[0]
    assert inside.sum() > 1000
    np.testing.assert_allclose(scene.optical_depth, expected, atol=1e-6)
    # quantisation of ~40000 counts gives < 1e-4 error in the optical depth
    assert np.abs(od_measured[inside] - expected[inside]).max() < 2e-4
    assert expected[inside].max() > 0.1  # the cell actually absorbs
    # outside the cell the image is the background
    assert np.abs(od_measured[expected == 0]).max() < 2e-4
    assert (expected[~inside] == 0).mean() > 0.999


def test_absorption_scale_and_exposure(phantom: CellPhantom) -> None:
    o1 = BrightfieldOptics(pixel_um=PIX, bit_depth=16, illumination=20000.0, phase_halo=0.0)
    o2 = BrightfieldOptics(pixel_um=PIX, bit_depth=16, illumination=20000.0, phase_halo=0.0,
                           absorption_scale=2.0, exposure_ms=10.0)
    cell = CellInstance(phantom, np.eye(3), (100.0, 120.0))
    s1 = render_scene(SHAPE, [cell], o1, np.random.default_rng(0), noise=False, walls=False)
    s2 = render_scene(SHAPE, [cell], o2, np.random.default_rng(0), noise=False, walls=False)
    od1 = -np.log(s1.image / background(SHAPE, o1, walls=False))
    od2 = -np.log(s2.image / background(SHAPE, o2, walls=False))
    m = s1.masks[0]
    np.testing.assert_allclose(od2[m], 2 * od1[m], atol=5e-4)
    # doubling the exposure doubles the background level
    assert background(SHAPE, o2).mean() == pytest.approx(2 * background(SHAPE, o1).mean(), rel=1e-5)


def test_masks_and_boxes_for_partial_cells(phantom: CellPhantom) -> None:
    optics = BrightfieldOptics(pixel_um=PIX)
    inside = CellInstance(phantom, np.eye(3), (100.0, 120.0))
    partial = CellInstance(phantom, np.eye(3), (10.0, 235.0))  # cut by the top-right corner
    gone = CellInstance(phantom, np.eye(3), (-200.0, -200.0))
    scene = render_scene(SHAPE, [inside, partial, gone], optics, np.random.default_rng(1))
    assert scene.cell_index == [0, 1]
    assert len(scene.masks) == len(scene.boxes) == 2
    for mask, box in zip(scene.masks, scene.boxes):
        assert mask.shape == SHAPE and mask.dtype == bool
        assert box == box_from_mask(mask)
        x0, y0, x1, y1 = box
        assert 0 <= x0 < x1 <= SHAPE[1] and 0 <= y0 < y1 <= SHAPE[0]
    # full cell: silhouette of the body ellipsoid, box ~ the cell diameter
    x0, y0, x1, y1 = scene.boxes[0]
    assert 50 <= x1 - x0 <= 62 and 50 <= y1 - y0 <= 62
    assert abs((x0 + x1) / 2 - 120.5) < 3 and abs((y0 + y1) / 2 - 100.5) < 3
    # partial cell: box clipped at the top and right borders
    x0, y0, x1, y1 = scene.boxes[1]
    assert y0 == 0 and x1 == SHAPE[1]
    assert scene.masks[1].sum() < 0.5 * scene.masks[0].sum()
    # the masks are where the cell's optical depth is
    assert scene.optical_depth[scene.masks[0]].min() > 0
    assert not scene.masks[0][0, 0]


def test_noise_statistics_and_clipping() -> None:
    optics = BrightfieldOptics(pixel_um=PIX, vignetting=0.0, illumination_tilt=0.0, read_noise=3.0,
                               illumination=100.0)
    scene = render_scene((128, 128), [], optics, np.random.default_rng(2), walls=False)
    img = scene.image.astype(float)
    assert scene.image.dtype == np.uint8
    assert img.mean() == pytest.approx(100.0, abs=0.5)
    # variance = shot (100 e-) + read (9) + quantisation (1/12)
    assert img.var() == pytest.approx(109.1, rel=0.1)
    bright = BrightfieldOptics(pixel_um=PIX, illumination=400.0)
    sat = render_scene((64, 64), [], bright, np.random.default_rng(3), walls=False)
    assert sat.image.max() == 255  # clipped to 8 bits, no wrap-around
    assert (sat.image > 200).mean() > 0.9


def test_walls_debris_defocus_change_image_not_truth(phantom: CellPhantom) -> None:
    optics = BrightfieldOptics(pixel_um=PIX, phase_halo=0.0)
    cell = CellInstance(phantom, np.eye(3), (100.0, 120.0))
    clean = render_scene(SHAPE, [cell], optics, np.random.default_rng(4), noise=False, walls=False)
    messy = render_scene(SHAPE, [cell], BrightfieldOptics(pixel_um=PIX, phase_halo=0.0, defocus_px=2.0),
                         np.random.default_rng(4), noise=False, walls=True, debris=6)
    np.testing.assert_array_equal(clean.masks[0], messy.masks[0])
    np.testing.assert_array_equal(clean.optical_depth, messy.optical_depth)
    # the walls are dark vertical lines near 5 % and 95 % of the width
    col_profile = messy.image.astype(float).mean(axis=0)
    assert col_profile[int(0.05 * (SHAPE[1] - 1))] < 0.7 * np.median(col_profile)
    # defocus smooths the image: lower high-frequency energy inside the cell
    def hf(img: np.ndarray) -> float:
        return float(np.abs(cv2.Laplacian(img.astype(np.float32), cv2.CV_32F))[80:120, 100:140].mean())

    assert hf(messy.image) < 0.7 * hf(clean.image)


def test_phase_halo_brightens_the_rim(phantom: CellPhantom) -> None:
    optics = BrightfieldOptics(pixel_um=PIX, bit_depth=16, illumination=20000.0, phase_halo=0.6)
    cell = CellInstance(phantom, np.eye(3), (100.0, 120.0))
    scene = render_scene(SHAPE, [cell], optics, np.random.default_rng(0), noise=False, walls=False)
    bg = background(SHAPE, optics, walls=False)
    ratio = scene.image / bg
    ring = cv2.dilate(scene.masks[0].astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool) & ~scene.masks[0]
    assert ratio[ring].max() > 1.02  # bright halo just outside the silhouette


def test_default_frame_renders(phantom: CellPhantom) -> None:
    big = CellPhantom.random(0, 12.0)
    scene = render_scene((480, 640), [CellInstance(big, pose_matrix(10.0), (240.0, 320.0))],
                         BrightfieldOptics(), np.random.default_rng(5), debris=3)
    assert scene.image.shape == (480, 640) and scene.image.dtype == np.uint8
    x0, y0, x1, y1 = scene.boxes[0]
    assert 120 < x1 - x0 < 150  # 12 um at 3.45/40 um/px = 139 px


def test_body_support_comes_from_the_same_pass(phantom: CellPhantom) -> None:
    pose = pose_matrix(61.0, 2.0, 0.5)
    od, support = phantom.project_with_support(pose, SHAPE, PIX, (90.0, 130.0))
    np.testing.assert_array_equal(od, phantom.project(pose, SHAPE, PIX, (90.0, 130.0)))
    body = CellPhantom([p for p in phantom.parts if p.kind == "body"], phantom.radius_um, phantom.seed)
    np.testing.assert_array_equal(support, body.project(pose, SHAPE, PIX, (90.0, 130.0)) > 0)
    assert support.sum() > 1000 and not support[0, 0]


def test_noise_is_reproducible_from_the_generator_only() -> None:
    optics = BrightfieldOptics(pixel_um=PIX)
    cell = CellInstance(CellPhantom.random(2, 12.0), pose_matrix(5.0), (100.0, 120.0))
    f1 = render_scene(SHAPE, [cell], optics, np.random.default_rng(3)).image
    f2 = render_scene(SHAPE, [cell], optics, np.random.default_rng(3)).image
    f3 = render_scene(SHAPE, [cell], optics, np.random.default_rng(4)).image
    np.testing.assert_array_equal(f1, f2)
    assert not np.array_equal(f1, f3)
