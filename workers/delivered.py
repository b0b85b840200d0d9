"""The latency budget as a promise about the delivered file.

Latency depends only on the architecture, so finalize checks each candidate's architecture (its
runtime's export of the pruned, not yet fine-tuned model) against the budget before the
expensive fine-tune; one over the budget is *tightened* — every group's kept fraction scaled
down, through the search space so rounding and ``max_ratio`` hold — and measured again, a
bounded number of times (a tightening that overshot is widened back halfway; a baseline placed
under the best's cost is widened toward it; widths only: a refitted policy keeps the searched
one's int8 groups and removed blocks/layers). After the fine-tune the exact exported file is
measured against the dense model exported the same way, in the job's runtime, with more rounds
than the search used, and that delivered figure is what the artifact reports and what
``budget_met`` says.

A budget is met when the delivered figure is within ``budget × (1 + tolerance)`` plus the
uncertainty of the measured median (the interquartile spread over √rounds, about the median's
standard error): a miss smaller than the measurement can tell is not called a miss.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search_spaces.space import Policy, SearchSpace
from workers.latency import Latency

if TYPE_CHECKING:
    from torch import nn

    from agents.types import Metrics
    from workers.evaluator import Evaluator
    from workers.runtimes.base import Run, Runtime
    from workers.spec import BudgetSpec

#: the fewest rounds a delivered figure is measured with (and at least 3× the search's)
MIN_FINAL_ROUNDS = 45


#: a baseline placed at the best's cost gets this many times a searched candidate's tries: it
#: starts wherever the search's latency model put it, often far from the best's file, and a try
#: is an export and a timing, no fine-tune
PLACING_TRIES_FACTOR = 3


def final_rounds(search_rounds: int) -> int:
    """Rounds of a finalize measurement: more than the search used, so its figure is firmer."""
    return max(MIN_FINAL_ROUNDS, 3 * search_rounds)


@dataclass(frozen=True)
class LatencyBudget:
    """The latency terms of a job's budget and the tolerance they are checked with."""

    ratio: float | None
    ms: float | None
    tolerance: float

    @classmethod
    def of(cls, budget: BudgetSpec, tolerance: float) -> LatencyBudget | None:
        """None when the budget has no latency term (then nothing is promised about latency)."""
        if budget.latency_ratio is None and budget.latency_ms is None:
            return None
        return cls(budget.latency_ratio, budget.latency_ms, tolerance)

    @classmethod
    def matching(cls, best: dict[str, Any]) -> LatencyBudget | None:
        """Where a baseline is placed so the comparison with the best found (its artifact's
        metrics) is at equal measured cost: no slower than the best's published file, the two
        timed side by side (a ratio to that file, not to dense: two timings of one file against
        dense differ by more than the margins being judged), no tolerance beyond the
        measurement's own uncertainty. None when the best missed the budget: the baseline is
        then held to the job's budget itself."""
        if not best.get("budget_met"):
            return None
        return cls(ratio=1.0, ms=None, tolerance=0.0)

    def limits(self, lat: Latency) -> dict[str, float]:
        """What each term's measured figure must not exceed: budget × (1 + tolerance) plus the
        median's uncertainty (the spread over √rounds)."""
        err_ms = lat.spread_ms / math.sqrt(max(lat.rounds, 1))
        out = {}
        if self.ratio is not None:
            out["latency_ratio"] = self.ratio * (1 + self.tolerance) + err_ms / lat.dense_ms
        if self.ms is not None:
            out["latency_ms"] = self.ms * (1 + self.tolerance) + err_ms
        return out

    def met(self, lat: Latency) -> bool:
        measured = {"latency_ratio": lat.ratio, "latency_ms": lat.ms}
        return all(measured[k] <= limit for k, limit in self.limits(lat).items())

    def excess(self, lat: Latency) -> float:
        """By how much the figure is over the budget, relatively (the worse term): measured /
        budget − 1, negative when under it."""
        terms = []
        if self.ratio is not None:
            terms.append(lat.ratio / self.ratio - 1)
        if self.ms is not None:
            terms.append(lat.ms / self.ms - 1)
        return max(terms)

    def scale(self, lat: Latency) -> float:
        """The factor each group's kept fraction is scaled by to aim at the budget (below 1 over
        it, above 1 under it): latency goes about with the square of the width (a layer's input
        and output both narrow)."""
        return math.sqrt(1 / (1 + self.excess(lat)))

    def report(self, lat: Latency) -> dict[str, Any]:
        """The artifact's budget figures for the delivered ``lat``."""
        limits = self.limits(lat)
        return {
            "budget_met": self.met(lat),
            "budget_excess": self.excess(lat),
            "latency_tolerance": self.tolerance,
            **{f"{k}_limit": v for k, v in limits.items()},
        }


def _like(space: SearchSpace, widths: Policy, policy: Policy) -> Policy:
    """``widths`` (group ratios) rounded, with ``policy``'s int8 groups and removed units: tightening
    changes widths only, never what the search chose to quantize or remove."""
    return space.round(space.with_removed(space.with_int8(widths, space.int8_groups(policy)),
                                          space.removed_units(policy)))


def rescaled(space: SearchSpace, policy: Policy, scale: float) -> Policy | None:
    """A policy keeping about ``scale`` of each group's channels — the widest of the space's levels
    within ``kept × scale``, so rounding and ``max_ratio`` hold — strictly narrower than ``policy``
    when ``scale`` < 1 (never wider in any group), strictly wider when > 1 (never narrower); None
    when no group can move that way. When the levels swallow the scale (a group of four heads, a
    uniform network one level from the next), each group that can moves one level."""
    kept = space.kept(policy)
    narrowing = scale < 1
    wanted, stepped = {}, {}
    for g in space.groups:
        levels = space.levels(g)  # ascending, the narrowest within max_ratio first
        fits = [k for k in levels if k <= kept[g.name] * scale + 1e-9]
        k = fits[-1] if fits else levels[0]
        wanted[g.name] = space.ratio_for(g, min(k, kept[g.name]) if narrowing else max(k, kept[g.name]))
        beyond = [k for k in levels if (k < kept[g.name] if narrowing else k > kept[g.name])]
        nxt = (beyond[-1] if narrowing else beyond[0]) if beyond else None
        stepped[g.name] = policy.get(g.name, 0.0) if nxt is None else space.ratio_for(g, nxt)
    for widths in (wanted, stepped):
        out = _like(space, widths, policy)
        if space.signature(out) != space.signature(policy):
            return space.validate(out)
    return None


def timed(ev: Evaluator, run: Run, rounds: int, against: Run | None = None) -> Latency:
    """``run`` against the dense model prepared in the same runtime (or ``against``, another
    run: the ratio is then to it), with the node held."""
    reference = against or ev.latency.run_of(ev.dense)
    with ev.lock.exclusive():
        return ev.latency.time(run, reference, rounds=rounds)


def architecture_latency(ev: Evaluator, policy: Policy, rounds: int, against: Run | None = None) -> Latency:
    """The policy's architecture (no recovery: latency does not depend on the weights) exported
    and run by the job's runtime, against the dense model (or ``against``)."""
    return timed(ev, ev.run_of(policy), rounds, against)


@dataclass(frozen=True)
class Fitted:
    """What :func:`fit_to_budget` chose: the policy to fine-tune, at which measurement step it
    was found (0: the searched policy itself; each later step another width: narrower than the
    searched one, or for a baseline placed under the best's cost, wider) and its architecture's
    measured latency (None when nothing was measured): against dense, or ``against_best``,
    against the best found's published file."""

    policy: Policy
    tightened: int
    latency: Latency | None
    against_best: bool = False


def between(space: SearchSpace, under: Policy, over: Policy) -> Policy | None:
    """A policy halfway (in kept channels, on the space's levels) from ``under`` (within the
    budget) back toward the wider ``over``. Where the levels are too coarse for any group to move
    halfway (one level apart: a uniform network's next step), half of the groups that can widen
    go one level up instead (in the space's order), so the steps between the two still get
    measured. None when no group lies below ``over``."""
    kept_u, kept_o = space.kept(under), space.kept(over)
    wanted = {}
    for g in space.groups:
        mid = (kept_u[g.name] + kept_o[g.name]) / 2
        fits = [k for k in space.levels(g) if kept_u[g.name] <= k <= mid + 1e-9]
        wanted[g.name] = space.ratio_for(g, max(fits, default=kept_u[g.name]))
    out = _like(space, wanted, under)
    if space.signature(out) == space.signature(under):
        up = {g.name: [k for k in space.levels(g) if kept_u[g.name] < k <= kept_o[g.name]] for g in space.groups}
        movable = [g for g in space.groups if up[g.name]]
        if not movable:
            return None
        for g in movable[: max(1, len(movable) // 2)]:
            wanted[g.name] = space.ratio_for(g, up[g.name][0])
        out = _like(space, wanted, under)
    if space.signature(out) in (space.signature(under), space.signature(over)):
        return None  # nothing strictly between: both were measured
    return space.validate(out)


def fit_to_budget(
    ev: Evaluator, budget: LatencyBudget, policy: Policy, *, tries: int, rounds: int,
    on_step: Callable[[int, Latency], None] | None = None, best_file: Run | None = None,
) -> Fitted:
    """``policy``, or a narrower one meeting ``budget``, with at most ``tries`` more measured:
    tightened while over it; once a tightened one meets it well under the budget (by more than
    the tolerance), widened back halfway toward the last one over it, so that an overshoot does
    not give up quality for speed nobody asked for. The widest measured within the budget, or,
    when none is, the closest one measured. With ``best_file`` (the best found's published file)
    each architecture is timed against it, ``budget`` is a ratio to it
    (:meth:`LatencyBudget.matching`), and a policy under it by more than the tolerance is also
    widened toward it (a baseline placed at the best's cost, not below)."""
    tried: list[Fitted] = []
    met: Fitted | None = None  # each one met is wider than the last (halfway back)
    over: Fitted | None = None  # each one over is narrower than the last
    current = policy
    for step in range(tries + 1):
        lat = architecture_latency(ev, current, rounds, best_file)
        found = Fitted(current, step, lat, best_file is not None)
        tried.append(found)
        if on_step is not None:
            on_step(step, lat)
        if budget.met(lat):
            met = found
        else:
            over = found
        if step == tries:
            break
        if met is None:
            nxt = rescaled(ev.space, current, budget.scale(lat))
        elif found is met and budget.excess(lat) >= -budget.tolerance:
            break  # close enough under the budget
        elif over is None:
            if best_file is None:
                break  # met as searched: the search chose it, finalize does not widen it
            # a baseline under the best's cost: widened toward it, or it would be compared at a
            # lower cost than the best's (and score lower for speed nobody asked for)
            nxt = rescaled(ev.space, current, budget.scale(lat))
        else:
            nxt = between(ev.space, met.policy, over.policy)
        if nxt is None:
            break
        current = nxt
    if met is not None:
        return met
    return min(tried, key=lambda f: budget.excess(f.latency))  # type: ignore[arg-type]


def published_latency(ev: Evaluator, bundle: Path, model: nn.Module, rounds: int) -> tuple[Latency, str, Run]:
    """The exact file a bundle publishes for the job's runtime (``runtime.published``), against
    the dense model exported the same way; what was measured: ``"bundle"``, or ``"model"``
    when the bundle holds no file for the runtime (e.g. no ``onnx`` export was asked for) and
    the model's own export, the file it would have written, is measured instead; and its run
    (loaded: it outlives the staging directory's rename)."""
    lat = ev.latency
    try:
        run = ev.runtime.published(bundle, model, lat.example, threads=lat.threads)
        source = "bundle"
    except FileNotFoundError:
        run, source = lat.run_of(model), "model"
    return timed(ev, run, rounds), source, run


def side_by_side(ev: Evaluator, runs: list[Run], rounds: int) -> list[Latency]:
    """The published files' ``runs`` and the dense model timed round-robin in one timing, the
    node held: their figures compare exactly (each file's own delivered timing is a separate
    one, and two timings differ by a few per cent on a shared machine)."""
    with ev.lock.exclusive():
        return ev.latency.side_by_side(ev.latency.run_of(ev.dense), runs, rounds=rounds)


def delivery_metrics(
    runtime: Runtime, lat: Latency, searched: Metrics | None, fitted: Fitted,
    budget: LatencyBudget | None, source: str,
) -> dict[str, Any]:
    """What an artifact says about its latency promise: the runtime, the delivered figures (the
    published file measured) beside the search-time ones, and whether the budget is met.

    ``budget_met`` is None when the budget has no latency term; ``budget_excess`` is delivered /
    budget − 1 (the worse latency term; negative when under it); ``tightened`` is how many
    narrower policies were measured before the one shipped (the artifact's policy; 0: the
    searched policy as it was)."""
    out: dict[str, Any] = {
        "runtime": runtime.name,
        "runtime_title": runtime.title,
        "delivered_latency_ms": lat.ms,
        "delivered_latency_ratio": lat.ratio,
        "delivered_latency_rounds": lat.rounds,
        "delivered_measured": source,
        "searched_latency_ms": searched.latency_ms if searched is not None else None,
        "searched_latency_ratio": searched.latency_ratio if searched is not None else None,
        "architecture_latency_ratio": None,
        "tightened": fitted.tightened,
        "budget_met": None,
        "budget_excess": None,
    }
    if fitted.latency is not None:  # a baseline's is a ratio to the best's file (placed at its cost)
        out["architecture_latency_to_best" if fitted.against_best else "architecture_latency_ratio"] = fitted.latency.ratio
    if budget is not None:
        out.update(budget.report(lat))
    return out
