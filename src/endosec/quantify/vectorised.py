"""The vectorised engine: all trials at once with numpy, exact in distribution.

Parallel and sequential attackers only need the number of compromised executors (all events
are exponential, so which executor does not matter). Without rotation the count is a
birth-death chain, sampled level by level (`_level_engine`, cost independent of the number of
events); with rotation every trial advances one event per step (`_count_engine`). The
shared-component attacker needs to know which positions are compromised, so it keeps a
trials x n boolean matrix (`_matrix_engine`). Rotation retires a uniformly random active
executor (the random policy) and replaces it with a clean one.
"""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from endosec.quantify.errors import ParameterError
from endosec.quantify.scenario import Progress, Scenario, SimulationResult, summarise

__all__ = ["simulate_vectorised"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


_CHUNK = 1 << 20  # trials per level-engine pass, to bound memory
_BATCH = 1 << 14  # trials stepped at once by the event engine


class _Stalled(ParameterError):
    """The event budget ran out before every trial was defeated."""


def _count_engine(sc: Scenario, trials: int, rng: np.random.Generator,
                  progress: Progress | None, max_steps: int) -> FloatArray:
    """With rotation: one event per step for a batch of trials; a finished trial's slot takes
    the next trial, so the arrays stay full (and cache-sized) until the last trials run out."""
    assert sc.rotate is not None
    n, k = sc.n, sc.quorum
    states = np.arange(k)
    up = (n - states) * sc.lam if sc.attacker == "parallel" else np.full(k, sc.lam)
    rate = up + states * sc.mu
    inv_rate, p_up = 1.0 / rate, up / rate
    period = sc.rotate
    size = min(_BATCH, trials)
    state = np.zeros(size, dtype=np.intp)
    t = np.zeros(size)
    next_rot = np.full(size, period)
    times = np.empty(trials)
    got, started = 0, size
    for _ in range(max_steps):
        tn = t + rng.standard_exponential(state.size) * inv_rate.take(state)
        jump = rng.random(state.size)
        goes_up = jump < p_up.take(state)
        rot = tn > next_rot  # the timer fires first; the exponential clocks restart
        # a uniformly random executor is retired: a compromised one with probability i/n
        move = np.where(rot, np.where(jump * n < state, -1, 0), 2 * goes_up - 1)
        t = np.where(rot, next_rot, tn)
        next_rot = np.where(rot, next_rot + period, next_rot)
        state += move
        done = state >= k
        finished = int(np.count_nonzero(done))
        if not finished:
            continue
        times[got : got + finished] = t[done]
        got += finished
        if progress is not None:
            progress(finished)
        if got == trials:
            return times
        fresh = min(finished, trials - started)
        started += fresh
        slots = np.flatnonzero(done)
        restart, drop = slots[:fresh], slots[fresh:]
        state[restart], t[restart], next_rot[restart] = 0, 0.0, period
        if drop.size:
            keep = np.ones(state.size, dtype=bool)
            keep[drop] = False
            state, t, next_rot = state[keep], t[keep], next_rot[keep]
    raise _Stalled(f"simulation did not finish within {max_steps} events per trial; "
                   "lower mu or raise lam")


def _level_engine(sc: Scenario, trials: int, rng: np.random.Generator,
                  progress: Progress | None, max_steps: int) -> FloatArray:
    """Sample each trial's whole path at once from its level-crossing counts.

    The last move out of every level j < k is upwards, so the up-moves from j are one more than
    the down-moves from j+1; given u_j up-moves, the down-moves from j are the failures before
    the u_j-th success of level j's own Bernoulli(p_j) decisions: NegativeBinomial(u_j, p_j).
    Working down from u_{k-1} = 1 gives the visits v_j = u_j + d_j, and the time spent in level
    j is a sum of v_j exponentials of rate R_j: Gamma(v_j) / R_j.
    """
    del max_steps  # the cost does not depend on the number of events
    n, k = sc.n, sc.quorum
    levels = np.arange(k)
    up = (n - levels) * sc.lam if sc.attacker == "parallel" else np.full(k, sc.lam)
    rate = up + levels * sc.mu
    times = np.empty(trials)
    for start in range(0, trials, _CHUNK):
        size = min(_CHUNK, trials - start)
        total = np.zeros(size)
        ups = np.ones(size, dtype=np.int64)
        for j in range(k - 1, -1, -1):
            downs = rng.negative_binomial(ups, up[j] / rate[j]) if j > 0 else np.zeros_like(ups)
            total += rng.standard_gamma(ups + downs) / rate[j]
            ups = downs + 1
        times[start : start + size] = total
        if progress is not None:
            progress(size)
    return times


def _matrix_engine(sc: Scenario, trials: int, rng: np.random.Generator,
                   progress: Progress | None, max_steps: int) -> FloatArray:
    n, k = sc.n, sc.quorum
    if len(sc.profiles) != n:
        raise ParameterError("the vectorised engine keeps the active set fixed: give exactly n "
                             "profiles (or use the faithful engine to let a scheduler choose)")
    components = sorted(set().union(*(p.components for p in sc.profiles)))
    holds = np.array([[c in p.components for p in sc.profiles] for c in components])  # m x n
    holds_f = holds.T.astype(np.float64)  # n x m
    times = np.empty(trials)
    idx = np.arange(trials)
    comp = np.zeros((trials, n), dtype=bool)
    t = np.zeros(trials)
    period = sc.rotate if sc.rotate is not None else np.inf
    next_rot = np.full(trials, period)
    rows = np.arange(trials)
    for _ in range(max_steps):
        m = idx.size
        i = comp.sum(axis=1)
        rate = sc.lam + i * sc.mu
        tn = t + rng.standard_exponential(m) / rate
        rot = tn > next_rot
        attack = ~rot & (rng.random(m) * rate < sc.lam)
        cleanse = ~rot & ~attack
        t = np.where(rot, next_rot, tn)
        next_rot = np.where(rot, next_rot + period, next_rot)
        r = rows[:m]
        if attack.any():
            clean = ~comp[attack]
            noise = rng.random((clean.shape[0], len(components)))
            score = clean.astype(np.float64) @ holds_f + noise
            target = holds[score.argmax(axis=1)]  # ties between components broken at random
            comp[attack] |= clean & target
        if cleanse.any():
            keys = np.where(comp[cleanse], rng.random((int(cleanse.sum()), n)), -1.0)
            comp[r[cleanse], keys.argmax(axis=1)] = False
        if rot.any():
            comp[r[rot], rng.integers(0, n, int(rot.sum()))] = False
        done = comp.sum(axis=1) >= k
        finished = int(np.count_nonzero(done))
        if finished:
            times[idx[done]] = t[done]
            if progress is not None:
                progress(finished)
            if finished == m:
                return times
            keep = ~done
            idx, comp, t, next_rot = idx[keep], comp[keep], t[keep], next_rot[keep]
    raise _Stalled(f"simulation did not finish within {max_steps} events per trial; "
                   "lower mu or raise lam")


def simulate_vectorised(sc: Scenario, *, trials: int = 10_000, seed: int | None = None,
                        t: float | None = None, progress: Progress | None = None,
                        max_steps: int = 2_000_000) -> SimulationResult:
    """Monte Carlo of ``trials`` independent attacks; each runs until the vote is lost."""
    if trials < 2:
        raise ParameterError(f"trials must be at least 2, got {trials}")
    if sc.policy != "random":
        raise ParameterError(f"the vectorised engine models the random policy only, not "
                             f"{sc.policy!r}: use --engine faithful")
    if sc.dissent > 0 and sc.quarantine_after > 1:
        raise ParameterError("the vectorised engine quarantines on the first dissent only: "
                             "use --engine faithful for quarantine_after > 1")
    if sc.attacker == "recon" or sc.rotation is not None:
        raise ParameterError("the recon attacker and learned rotation policies run on the "
                             "real controller: use --engine faithful")
    if sc.rotate_min is not None:
        raise ParameterError("the vectorised engine rotates at a fixed rate: use --engine "
                             "faithful for threat-aware rotation (rotate_min)")
    original = sc
    # quarantined on the first dissent, a dissent is one more way to be detected
    sc = replace(sc, mu=sc.mu + sc.dissent, dissent=0.0)
    rng = np.random.default_rng(seed if seed is not None else random.SystemRandom().getrandbits(64))
    if sc.attacker == "shared-component":
        engine = _matrix_engine
    else:
        engine = _count_engine if sc.rotate is not None else _level_engine
    return summarise("vectorised", original, engine(sc, trials, rng, progress, max_steps), seed, t)
