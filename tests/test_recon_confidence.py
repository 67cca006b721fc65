"""Angle confidence: what the mirror check can and cannot vouch for."""

import numpy as np
import pytest

from mcf_rotator.reconstruction.final_angles import angle_confidence, mirror_checked_share


@pytest.mark.parametrize("coverage, share", [(150.0, 0.0), (200.0, 0.2), (240.0, 0.5), (300.0, 0.8),
                                             (360.0, 1.0), (720.0, 1.0)])
def test_mirror_check_reaches_the_frames_within_coverage_minus_180_of_either_end(coverage, share):
    angles = np.linspace(0.0, coverage, 1001)
    assert mirror_checked_share(angles) == pytest.approx(share, abs=2e-3)


def test_uneven_sampling_counts_frames_not_degrees():
    # 200 deg sweep with the ends sampled densely: most frames are checked although the degrees are not
    ends = np.r_[np.linspace(0, 20, 80), np.linspace(20.5, 179.5, 20), np.linspace(180, 200, 80)]
    assert mirror_checked_share(ends) == pytest.approx(160 / 180)
    assert mirror_checked_share(ends[::-1] * -1.0) == pytest.approx(160 / 180)  # direction does not matter


def _report(mirror=0.8, match=0.9):
    return {"flags": [], "per_frame": {"mirror_after_deg": mirror, "match_after": match}}


def test_a_short_sweep_with_a_small_mirror_residual_is_not_good():
    short = angle_confidence(_report(), angles_deg=np.linspace(0, 210, 150))
    assert short["level"] == "uncertain"
    assert "210 deg" in " ".join(short["reasons"]) and short["mirror_checked_share"] < 0.5
    full = angle_confidence(_report(), angles_deg=np.linspace(0, 370, 150))
    assert full["level"] == "good" and full["reasons"] == []


def test_a_short_sweep_never_upgrades_and_bad_evidence_still_wins():
    bad = angle_confidence(_report(mirror=5.0), angles_deg=np.linspace(0, 210, 150))
    assert bad["level"] == "unreliable"
    poor_match = angle_confidence(_report(match=0.3), angles_deg=np.linspace(0, 370, 150))
    assert poor_match["level"] == "unreliable"
    # without the angles the rule does not apply (callers that only have the report)
    assert angle_confidence(_report())["level"] == "good"


@pytest.mark.parametrize("mirror, moved, level", [(0.8, 3.0, "good"), (0.8, 12.0, "uncertain"),
                                                  (2.0, 12.0, "unreliable"), (2.0, 9.0, "uncertain"),
                                                  (5.0, 12.0, "unreliable")])
def test_a_large_move_of_the_per_frame_search_lowers_the_confidence_one_step(mirror, moved, level):
    rep = _report(mirror=mirror)
    rep["per_frame"]["moved_deg"] = moved
    conf = angle_confidence(rep, angles_deg=np.linspace(0, 370, 150))
    assert conf["level"] == level and conf["per_frame_moved_deg"] == moved
    assert ("pin them poorly" in " ".join(conf["reasons"])) == (moved > 10.0)
