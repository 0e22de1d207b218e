"""The eval's statistics against values published or computed by hand."""

from __future__ import annotations

import math

import pytest

from pipeline import stats


def test_exact_mcnemar_is_the_binomial_on_discordant_pairs():
    # 1 vs 9 discordant: 2 * (C(10,0) + C(10,1)) / 2^10
    assert stats.mcnemar_exact(1, 9) == pytest.approx(2 * 11 / 1024)
    # 6 vs 16 (R: binom.test(6, 22)$p.value = 0.05248)
    assert stats.mcnemar_exact(6, 16) == pytest.approx(0.052479, abs=1e-6)
    assert stats.mcnemar_exact(16, 6) == stats.mcnemar_exact(6, 16)
    assert stats.mcnemar_exact(0, 0) == 1.0 and stats.mcnemar_exact(5, 5) == 1.0
    # 0 vs 4: the smallest p four pairs can give
    assert stats.mcnemar_exact(0, 4) == pytest.approx(0.125)


def test_newcombe_paired_interval_matches_the_published_example():
    # Fagerland, Lydersen & Laake, Statistical Analysis of Contingency Tables, ch. 8 (Cavo
    # et al. 2012): table [[59, 6], [16, 80]] -> -0.0621 (95% CI -0.1186 to -0.0046)
    lo, hi = stats.newcombe_paired(59, 6, 16, 80)
    assert lo == pytest.approx(-0.1186, abs=5e-5) and hi == pytest.approx(-0.0046, abs=5e-5)


def test_newcombe_paired_at_the_edges():
    lo, hi = stats.newcombe_paired(0, 0, 0, 0)
    assert lo is None and hi is None
    lo, hi = stats.newcombe_paired(0, 10, 0, 0)          # all pairs go one way
    assert 0 < lo < 1 and hi == pytest.approx(1.0)
    lo, hi = stats.newcombe_paired(5, 0, 0, 5)           # no discordant pair: interval about 0
    assert lo < 0 < hi


def test_paired_orients_the_difference_tuned_minus_base():
    pairs = [(False, True)] * 4 + [(True, True)] * 2 + [(True, False)]
    p = stats.paired(pairs)
    assert (p["only_tuned"], p["only_base"], p["both"], p["neither"]) == (4, 1, 2, 0)
    assert p["diff"] == pytest.approx(3 / 7, abs=1e-4)
    assert p["lo"] < p["diff"] < p["hi"]
    assert p["p"] == pytest.approx(stats.mcnemar_exact(1, 4), abs=1e-6)


def test_wilson_known_values():
    lo, hi = stats.wilson(17, 20)
    assert lo == pytest.approx(0.6396, abs=5e-5) and hi == pytest.approx(0.9476, abs=5e-5)


def test_sign_flip_with_one_session_per_scenario_is_the_sign_test():
    diffs = [1.0] * 9 + [-1.0]
    assert stats.sign_flip_p(diffs) == pytest.approx(stats.mcnemar_exact(1, 9))
    assert stats.sign_flip_p([0.0, 0.0]) == 1.0


def test_cluster_rate_is_wider_when_sessions_of_a_scenario_agree():
    # 10 scenarios x 5 trials, each scenario all-or-nothing: effectively 10 observations
    clustered = [[True] * 5 if i < 5 else [False] * 5 for i in range(10)]
    c = stats.cluster_rate(clustered, seed=1)
    w_lo, w_hi = stats.wilson(25, 50)
    assert c["k"] == 25 and c["n"] == 50 and c["clusters"] == 10
    assert (c["hi"] - c["lo"]) > (w_hi - w_lo)
    # the same data and seed give the same interval
    assert stats.cluster_rate(clustered, seed=1) == c


def test_cluster_paired_reports_its_methods():
    groups = [[(False, True)] * 3 for _ in range(6)] + [[(True, True)] * 3 for _ in range(2)]
    p = stats.cluster_paired(groups)
    assert p["n"] == 24 and p["clusters"] == 8
    assert p["diff"] == pytest.approx(18 / 24, abs=1e-4)
    # 6 scenarios all improved, 2 unchanged: the exact sign-flip p is 2 / 2^6
    assert p["p"] == pytest.approx(2 / 64, abs=1e-6)
    assert "bootstrap" in p["interval"] and "sign-flip" in p["test"]
    assert p["lo"] <= p["diff"] <= p["hi"]
    assert not math.isnan(p["lo"])


def test_cohen_kappa_known_value():
    # the textbook 2x2: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no -> po 0.7, pe 0.5, kappa 0.4
    pairs = [("y", "y")] * 20 + [("y", "n")] * 5 + [("n", "y")] * 10 + [("n", "n")] * 15
    k = stats.cohen_kappa(pairs)
    assert k["agree"] == 0.7 and k["kappa"] == pytest.approx(0.4) and k["n"] == 50
    assert stats.cohen_kappa([("y", "y")] * 3)["kappa"] is None
    assert stats.cohen_kappa([])["n"] == 0
