"""The statistics behind the eval's numbers: single rates, paired differences, clusters.

- `wilson`: the Wilson score interval for one proportion.
- `mcnemar_exact`: the exact McNemar test, i.e. a two-sided binomial test on the
  discordant pairs (b of them one way, c the other, p = 1/2 under no difference).
- `newcombe_paired`: Newcombe's square-and-add interval for the difference of two
  paired proportions (Newcombe 1998, Stat Med 17:2635, method 10: Wilson intervals
  for each margin, combined with the phi correlation of the 2x2 table, phi shrunk
  by N/2 when positive as Newcombe does).
- `cluster_rate` and `cluster_paired`: for K sessions per scenario, sessions of one
  scenario are alike, so the unit resampled is the scenario (percentile scenario
  bootstrap, seeded, so the same data give the same interval), and the paired test
  is an exact sign-flip permutation test on the per-scenario mean differences
  (with K = 1 it is the same test as the exact McNemar).

Pure Python: the eval needs nothing beyond the standard library for these.
"""

from __future__ import annotations

import itertools
import math
import random
from typing import Sequence

Z95 = 1.959963984540054  # the 97.5th percentile of the standard normal
BOOTSTRAP = 2000
EXACT_FLIPS = 16          # up to 2**16 sign patterns are enumerated; beyond, sampled
SAMPLED_FLIPS = 20000


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(x, nd)


def wilson(k: int, n: int, z: float = Z95) -> tuple[float | None, float | None]:
    """The Wilson score interval for k successes in n trials (None, None when n is 0)."""
    if n <= 0:
        return None, None
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def rate(k: int, n: int) -> dict:
    """{rate, k, n, lo, hi} with the Wilson interval."""
    lo, hi = wilson(k, n)
    return {"rate": _r(k / n) if n else None, "k": k, "n": n, "lo": _r(lo), "hi": _r(hi)}


def binom_two_sided(k: int, n: int) -> float:
    """Two-sided exact binomial p-value at p = 1/2: twice the smaller tail, capped at 1."""
    if n == 0:
        return 1.0
    k = min(k, n - k)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def mcnemar_exact(b: int, c: int) -> float:
    """Exact McNemar p-value from the discordant counts (b: only the first side succeeded,
    c: only the second)."""
    return binom_two_sided(min(b, c), b + c)


def newcombe_paired(both: int, only_first: int, only_second: int, neither: int,
                    z: float = Z95) -> tuple[float | None, float | None]:
    """Newcombe's square-and-add interval for p_first - p_second on paired data.

    The table: `both` pairs where both sides succeeded, `only_first`, `only_second`,
    `neither`. p_first = (both + only_first) / N, p_second = (both + only_second) / N."""
    n = both + only_first + only_second + neither
    if n == 0:
        return None, None
    r1, r2 = both + only_first, both + only_second          # margins: first, second succeeded
    p1, p2 = r1 / n, r2 / n
    l1, u1 = wilson(r1, n, z)
    l2, u2 = wilson(r2, n, z)
    margins = (r1, n - r1, r2, n - r2)
    if min(margins) == 0:
        phi = 0.0
    else:
        a = both * neither - only_first * only_second
        denom = math.sqrt(math.prod(margins))
        phi = (a - n / 2) / denom if a > n / 2 else (0.0 if a >= 0 else a / denom)
    d = p1 - p2
    lo = d - math.sqrt(max(0.0, (p1 - l1) ** 2 + (u2 - p2) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2)))
    hi = d + math.sqrt(max(0.0, (p2 - l2) ** 2 + (u1 - p1) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1)))
    return max(-1.0, lo), min(1.0, hi)


def paired(pairs: Sequence[tuple[bool, bool]]) -> dict:
    """Base/tuned outcome pairs of one metric (one pair per scenario and seed): the 2x2 table,
    the difference tuned - base with Newcombe's interval and the exact McNemar p-value."""
    both = sum(1 for b, t in pairs if b and t)
    only_base = sum(1 for b, t in pairs if b and not t)
    only_tuned = sum(1 for b, t in pairs if t and not b)
    neither = len(pairs) - both - only_base - only_tuned
    n = len(pairs)
    lo, hi = newcombe_paired(both, only_tuned, only_base, neither)
    return {"n": n, "both": both, "only_base": only_base, "only_tuned": only_tuned,
            "neither": neither, "diff": _r((only_tuned - only_base) / n) if n else None,
            "lo": _r(lo), "hi": _r(hi), "p": _r(mcnemar_exact(only_base, only_tuned), 6),
            "test": "exact McNemar", "interval": "Newcombe square-and-add (paired)"}


# ----------------------------------------------------------------- clustered (K > 1)
def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    pos = q * (len(sorted_values) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _bootstrap(clusters: list[list[float]], stat, seed: int, reps: int) -> tuple[float, float]:
    rng = random.Random(seed)
    m = len(clusters)
    values = []
    for _ in range(reps):
        sample = [clusters[rng.randrange(m)] for _ in range(m)]
        values.append(stat(sample))
    values.sort()
    return _percentile(values, 0.025), _percentile(values, 0.975)


def _pooled(sample: list[list[float]]) -> float:
    total = sum(len(c) for c in sample)
    return sum(sum(c) for c in sample) / total if total else 0.0


def cluster_rate(clusters: Sequence[Sequence[bool]], *, seed: int = 0,
                 reps: int = BOOTSTRAP) -> dict:
    """A rate over sessions grouped by scenario: k/n per session, the interval a percentile
    scenario bootstrap (the scenario is the unit resampled)."""
    groups = [[float(x) for x in c] for c in clusters if len(c)]
    n = sum(len(c) for c in groups)
    k = int(sum(sum(c) for c in groups))
    if not n:
        return {"rate": None, "k": 0, "n": 0, "lo": None, "hi": None, "clusters": 0}
    lo, hi = _bootstrap(groups, _pooled, seed, reps) if len(groups) > 1 else wilson(k, n)
    return {"rate": _r(k / n), "k": k, "n": n, "lo": _r(lo), "hi": _r(hi), "clusters": len(groups),
            "interval": "scenario bootstrap" if len(groups) > 1 else "Wilson (one scenario)"}


def sign_flip_p(diffs: Sequence[float], *, seed: int = 0) -> float:
    """Two-sided sign-flip permutation p-value for mean(diffs) = 0: exact over every sign
    pattern of the non-zero differences when there are few, else sampled (seeded)."""
    nz = [d for d in diffs if abs(d) > 1e-12]
    if not nz:
        return 1.0
    observed = abs(sum(nz))
    if len(nz) <= EXACT_FLIPS:
        hits = total = 0
        for signs in itertools.product((1, -1), repeat=len(nz)):
            total += 1
            hits += abs(sum(s * d for s, d in zip(signs, nz))) >= observed - 1e-12
        return hits / total
    rng = random.Random(seed)
    hits = 1  # the observed pattern counts itself (a valid Monte Carlo p-value)
    for _ in range(SAMPLED_FLIPS):
        hits += abs(sum(d if rng.random() < 0.5 else -d for d in nz)) >= observed - 1e-12
    return hits / (SAMPLED_FLIPS + 1)


def cluster_paired(clusters: Sequence[Sequence[tuple[bool, bool]]], *, seed: int = 0,
                   reps: int = BOOTSTRAP) -> dict:
    """Paired base/tuned outcomes grouped by scenario (K pairs each, matched by seed): the
    difference per session, a scenario-bootstrap interval and a sign-flip p-value on the
    per-scenario mean differences."""
    groups = [list(c) for c in clusters if len(c)]
    flat = [p for c in groups for p in c]
    body = paired(flat)
    if len(groups) < 2:
        body.update(test="exact McNemar (one scenario: sessions treated as independent)")
        return body
    per = [[float(t) - float(b) for b, t in c] for c in groups]
    lo, hi = _bootstrap(per, _pooled, seed, reps)
    body.update(lo=_r(lo), hi=_r(hi), p=_r(sign_flip_p([sum(c) / len(c) for c in per], seed=seed), 6),
                test="sign-flip permutation on per-scenario mean differences",
                interval="scenario bootstrap (percentile)", clusters=len(groups))
    return body


def cohen_kappa(pairs: Sequence[tuple[str, str]]) -> dict:
    """Cohen's kappa between two raters' labels on the same items, with the raw agreement
    and the table; kappa is None when chance agreement is total (one label throughout)."""
    n = len(pairs)
    if not n:
        return {"n": 0, "agree": None, "kappa": None, "table": {}}
    labels = sorted({x for p in pairs for x in p})
    table = {f"{a}/{b}": sum(1 for p in pairs if p == (a, b)) for a in labels for b in labels}
    po = sum(1 for a, b in pairs if a == b) / n
    pe = sum((sum(1 for a, _ in pairs if a == c) / n) * (sum(1 for _, b in pairs if b == c) / n)
             for c in labels)
    kappa = None if pe >= 1 else (po - pe) / (1 - pe)
    return {"n": n, "agree": _r(po), "kappa": _r(kappa), "table": table}
