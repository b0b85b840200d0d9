"""The multiple-choice knapsack over channel widths, solved exactly as a MILP (HiGHS via scipy).

One binary ``x[g, i]`` per (group, option), exactly one per group. A group's options are its
kept-channel levels and, in a space with int8, the same levels in int8 (``agents.cost_model``):
precision is one more dimension of the multiple choice, so every formulation below stays exact;
assignments are kept-channel dicts with ``bits_key(group): 8`` for int8 groups. Costs (MACs,
params, modelled latency: :class:`agents.cost_model.CostModel`) are linear in ``x`` except for
layers scaled by two groups, whose cost is ``c · f_A · f_B``. Those products are linearised
exactly with one ``z[AB, i, j] ≥ 0`` per pair of levels, tied to the one-hot choices by their
marginals (``Σ_j z[AB, i, j] = x[A, i]``, ``Σ_i z[AB, i, j] = x[B, j]``): with ``x`` integral,
``z[AB, i, j] = x[A, i] · x[B, j]`` is forced, and ``f_A · f_B = Σ_ij a_i b_j z[AB, i, j]``. This
formulation's LP relaxation is tight (exact on chains), so HiGHS proves optimality in a few
nodes where the weaker ``w ≥ f_B + x − 1`` form took seconds.

In a space with depth a group inside a removable unit has one more option, 0 kept channels
(``agents.cost_model.option_levels``): the unit removed. Every layer the group scales then costs
0, so the formulation above is unchanged; one row per unit ties its groups' 0 options together
(``x[G1, 0] = x[Gj, 0]``: the unit goes whole, MDP's block binary), and a 0 option in int8 is
bounded to 0 (a removed layer has no precision).

Extra constraints serve the search: a trust region (L1 distance in levels from a centre) and
"no-good" cuts that exclude architectures already evaluated or pending. A small trust region is
searched by enumeration instead (:data:`ENUMERATE_AT_MOST` points, scored with numpy): a long
search piles up no-good cuts inside the region, which turn each MILP into seconds of
branching, while the region's points are cheap to score exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import lil_matrix

from agents.cost_model import CostModel, is_int8, option_levels
from search_spaces.space import PRECISION_BITS, SearchSpace, bits_key

# HiGHS accepts rows violated by up to 1e-6; a solution is checked exactly and, if it breaks a
# limit by more than this, cut off and the MILP solved again.
_EXACT_TOL = 1e-9
#: trust regions with at most this many architectures are enumerated, not solved as a MILP
ENUMERATE_AT_MOST = 50_000


@dataclass(frozen=True)
class Limit:
    """``model(kept) <= bound``; ``name`` says which budget it is, for messages."""

    name: str
    model: CostModel
    bound: float


class Knapsack:
    """Maximise ``Σ_g values[g][level]`` subject to every :class:`Limit`."""

    def __init__(self, space: SearchSpace, limits: Sequence[Limit]) -> None:
        self.space = space
        self.limits = list(limits)
        self.names = space.names
        self.levels = option_levels(space)
        self.int8 = space.quantizable
        #: per unit, the groups inside it (with depth): all removed (0 kept) or none
        self.units = {u.name: list(u.groups) for u in space.units if u.groups}
        #: per group, its options as (kept channels, int8)
        self.options = {g: [(k, q) for q in ((False, True) if self.int8 else (False,)) for k in lv]
                        for g, lv in self.levels.items()}
        self._x: dict[tuple[str, int], int] = {}
        for g in self.names:
            for i in range(len(self.options[g])):
                self._x[(g, i)] = len(self._x)
        pairs = sorted({p for lim in self.limits for p in lim.model.pairs})
        self._z: dict[tuple[tuple[str, str], int, int], int] = {}
        for a, b in pairs:
            for i in range(len(self.options[a])):
                for j in range(len(self.options[b])):
                    self._z[((a, b), i, j)] = len(self._x) + len(self._z)
        self._pairs = pairs
        self.n_vars = len(self._x) + len(self._z)
        self._base = self._base_rows()

    def _frac(self, g: str, i: int) -> float:
        return self.options[g][i][0] / self.space.group(g).channels

    def option(self, g: str, assignment: Mapping[str, float]) -> int:
        """The option index of group ``g`` in ``assignment``."""
        i = self.levels[g].index(int(assignment[g]))
        return i + len(self.levels[g]) if self.int8 and is_int8(assignment, g) else i

    def assignment(self, choice: Mapping[str, int]) -> dict[str, int]:
        """Option indices as an assignment: kept channels, and ``bits_key: 8`` for int8 groups."""
        out: dict[str, int] = {}
        for g in self.names:
            kept, q = self.options[g][choice[g]]
            out[g] = kept
            if q:
                out[bits_key(g)] = PRECISION_BITS["int8"]
        return out

    def steps(self, g: str, i: int, j: int) -> int:
        """Steps between options ``i`` and ``j`` of group ``g``: levels apart, plus 1 if the
        precision differs; removing or restoring a unit is one step for each of its groups
        (a binary flip, whatever the width it had)."""
        (ki, qi), (kj, qj) = self.options[g][i], self.options[g][j]
        if (ki == 0) != (kj == 0):
            return 1 + int(qi != qj)
        lv = self.levels[g]
        return abs(lv.index(ki) - lv.index(kj)) + int(qi != qj)

    def _base_rows(self) -> list[LinearConstraint]:
        rows: list[tuple[dict[int, float], float, float]] = []
        for g in self.names:  # one option per group
            rows.append(({self._x[(g, i)]: 1.0 for i in range(len(self.options[g]))}, 1.0, 1.0))
        for (a, b) in self._pairs:  # marginals: sum_j z[AB, i, j] = x[A, i], sum_i z[AB, i, j] = x[B, j]
            na, nb = len(self.options[a]), len(self.options[b])
            for i in range(na):
                row: dict[int, float] = {self._z[((a, b), i, j)]: 1.0 for j in range(nb)}
                row[self._x[(a, i)]] = -1.0
                rows.append((row, 0.0, 0.0))
            for j in range(nb):
                row = {self._z[((a, b), i, j)]: 1.0 for i in range(na)}
                row[self._x[(b, j)]] = -1.0
                rows.append((row, 0.0, 0.0))
        for groups in self.units.values():  # a unit goes whole: its groups' 0 options together
            for g in groups[1:]:
                rows.append(({self._x[(groups[0], 0)]: 1.0, self._x[(g, 0)]: -1.0}, 0.0, 0.0))
        for lim in self.limits:
            rows.append((self._model_row(lim.model), -np.inf, lim.bound - lim.model.const))
        return [self._constraint(rows)]

    def _upper_bounds(self) -> np.ndarray:
        """1 for every variable but a removal option in int8 (never chosen)."""
        ub = np.ones(self.n_vars)
        if self.int8:
            for groups in self.units.values():
                for g in groups:
                    ub[self._x[(g, len(self.levels[g]))]] = 0.0
        return ub

    def inconsistent(self, kept: Mapping[str, float]) -> list[str]:
        """The units ``kept`` removes only in part (some of their groups at 0, some not), or
        removes in int8."""
        out = []
        for unit, groups in self.units.items():
            zero = [int(kept[g]) == 0 for g in groups]
            if any(zero) and (not all(zero) or any(is_int8(kept, g) for g in groups)):
                out.append(unit)
        return out

    def _model_row(self, model: CostModel) -> dict[int, float]:
        """``model`` less its constant, as coefficients over the one-hot and product variables."""
        if not set(model.pairs) <= set(self._pairs):
            raise ValueError("the model's pairs must be among the limits' pairs")
        row: dict[int, float] = {}
        for g in self.names:
            for i, v in enumerate(model.linear[g]):
                row[self._x[(g, i)]] = row.get(self._x[(g, i)], 0.0) + v
        for (a, b) in model.pairs:
            for i, (_, qa) in enumerate(self.options[a]):
                for j, (_, qb) in enumerate(self.options[b]):
                    c = model.pair_coef((a, b), qa, qb)
                    row[self._z[((a, b), i, j)]] = c * self._frac(a, i) * self._frac(b, j)
        return row

    def _constraint(self, rows: list[tuple[dict[int, float], float, float]]) -> LinearConstraint:
        a = lil_matrix((len(rows), self.n_vars))
        for r, (row, _, _) in enumerate(rows):
            for j, v in row.items():
                a[r, j] = v
        return LinearConstraint(a.tocsr(), [lo for _, lo, _ in rows], [hi for _, _, hi in rows])

    def solve(
        self,
        values: Mapping[str, Sequence[float]],
        *,
        center: Mapping[str, int] | None = None,
        radius: int | None = None,
        exclude: Sequence[Mapping[str, int]] = (),
        time_limit: float = 20.0,
        gap: float = 0.0,
    ) -> dict[str, int] | None:
        """The kept channels of the best solution, or None when nothing satisfies the limits.

        ``values[g]``: one value per option of ``g`` (its levels; then in int8, in a space with
        int8). ``center``/``radius``: only solutions within ``radius`` steps (L1 in levels, a
        precision change one step) of ``center`` (an assignment). ``exclude``: kept-channel assignments that may not be returned.
        ``gap``: HiGHS' relative MIP gap (0: proven optimal); past ``time_limit`` the best
        solution found so far is returned.
        """
        # A no-good cut only for excluded architectures the trust region can reach: the others
        # cannot come back, and hundreds of standing cuts would slow every solve.
        cuts = [k for k in exclude if center is None or radius is None or self.distance(k, center) <= radius]
        if center is not None and radius is not None and self.region_size(center, radius) <= ENUMERATE_AT_MOST:
            return self._best_in_region(values, center, radius, cuts)
        c = np.zeros(self.n_vars)
        for g in self.names:
            for i, v in enumerate(values[g]):
                c[self._x[(g, i)]] = -float(v)  # milp minimises
        return self._solve_exact(c, center, radius, cuts, time_limit, gap)

    def region_size(self, center: Mapping[str, int], radius: int) -> int:
        """How many architectures lie within ``radius`` level steps (L1) of ``center``, counted
        up to ``ENUMERATE_AT_MOST + 1`` (a wide region of a deep network has more than int64
        holds: an overflowed count once sent a 30-group region to enumeration, exhausting memory)."""
        cap = ENUMERATE_AT_MOST + 1
        ways = np.zeros(radius + 1, dtype=np.int64)  # ways[d]: partial assignments d steps away
        ways[0] = 1
        for g in self.names:
            pos = self.option(g, center)
            away = [d for j in range(len(self.options[g])) if (d := self.steps(g, pos, j)) <= radius]
            steps = np.bincount(away, minlength=radius + 1)
            ways = np.minimum(np.convolve(ways, steps)[: radius + 1], cap)
        return int(min(int(ways.sum()), cap))

    def _region(self, center: Mapping[str, int], radius: int) -> np.ndarray:
        """Option indices (one row per architecture, one column per group) within the region."""
        rows, used = np.zeros((1, 0), dtype=np.int64), np.zeros(1, dtype=np.int64)
        for g in self.names:
            pos = self.option(g, center)
            parts = []
            for j in range(len(self.options[g])):
                if (d := self.steps(g, pos, j)) > radius:
                    continue
                ok = used + d <= radius
                parts.append((np.column_stack([rows[ok], np.full(int(ok.sum()), j)]), used[ok] + d))
            rows, used = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        return rows

    def _model_values(self, model: CostModel, idx: np.ndarray) -> np.ndarray:
        """``model.value`` of every row of option indices ``idx`` at once."""
        col = {g: k for k, g in enumerate(self.names)}
        out = np.full(len(idx), model.const)
        for g, lin in model.linear.items():
            out += np.asarray(lin)[idx[:, col[g]]]
        for (a, b) in model.pairs:
            ia, ib = idx[:, col[a]], idx[:, col[b]]
            fa = np.asarray([self._frac(a, i) for i in range(len(self.options[a]))])[ia]
            fb = np.asarray([self._frac(b, i) for i in range(len(self.options[b]))])[ib]
            qa = np.asarray([q for _, q in self.options[a]])[ia]
            qb = np.asarray([q for _, q in self.options[b]])[ib]
            coef = np.asarray([[model.pair_coef((a, b), x, y) for y in (False, True)] for x in (False, True)])
            out += coef[qa.astype(int), qb.astype(int)] * fa * fb
        return out

    def _best_in_region(
        self,
        values: Mapping[str, Sequence[float]],
        center: Mapping[str, int],
        radius: int,
        exclude: Sequence[Mapping[str, int]],
    ) -> dict[str, int] | None:
        """The trust-region solve by enumeration: the best-valued architecture in the region that
        meets every limit exactly and is not excluded (None when there is none)."""
        idx = self._region(center, radius)
        ok = np.ones(len(idx), dtype=bool)
        col = {g: k for k, g in enumerate(self.names)}
        for groups in self.units.values():  # a unit removed whole (option 0 fp32) or not at all
            removed = [idx[:, col[g]] == 0 for g in groups]
            ok &= np.all(removed, axis=0) | ~np.any(removed, axis=0)
            if self.int8:
                for g in groups:
                    ok &= idx[:, col[g]] != len(self.levels[g])
        for lim in self.limits:
            ok &= self._model_values(lim.model, idx) <= lim.bound + _EXACT_TOL
        if exclude:
            sizes = np.asarray([len(self.options[g]) for g in self.names], dtype=np.int64)
            radix = np.concatenate([[1], np.cumprod(sizes[:-1])])
            taken = np.asarray([[self.option(g, k) for g in self.names] for k in exclude], dtype=np.int64)
            ok &= ~np.isin(idx @ radix, taken @ radix)
        if not ok.any():
            return None
        score = np.zeros(len(idx))
        for k, g in enumerate(self.names):
            score += np.asarray(values[g], dtype=float)[idx[:, k]]
        best = int(np.flatnonzero(ok)[np.argmax(score[ok])])
        return self.assignment({g: int(idx[best, k]) for k, g in enumerate(self.names)})

    def distance(self, a: Mapping[str, int], b: Mapping[str, int]) -> int:
        """L1 distance in level steps (a precision change is one step) between two assignments."""
        return sum(self.steps(g, self.option(g, a), self.option(g, b)) for g in self.names)

    def cheapest(
        self, model: CostModel, *, exclude: Sequence[Mapping[str, int]] = (), time_limit: float = 20.0
    ) -> dict[str, int] | None:
        """The kept channels that minimise ``model`` within the limits, ``exclude`` cut off."""
        c = np.zeros(self.n_vars)
        for j, v in self._model_row(model).items():
            c[j] = v
        return self._solve_exact(c, None, None, list(exclude), time_limit, 0.0)

    def _solve_exact(
        self,
        c: np.ndarray,
        center: Mapping[str, int] | None,
        radius: int | None,
        cuts: list[Mapping[str, int]],
        time_limit: float,
        gap: float,
    ) -> dict[str, int] | None:
        """``_solve_once`` until its solution meets every limit exactly (``cuts`` grows)."""
        for _ in range(20):
            out = self._solve_once(c, center, radius, cuts, time_limit, gap)
            if out is None or not self.violated(out):
                return out
            cuts.append(out)  # over a limit within HiGHS' tolerance only: cut it off, solve again
        return None

    def _solve_once(
        self,
        c: np.ndarray,
        center: Mapping[str, int] | None,
        radius: int | None,
        exclude: Sequence[Mapping[str, int]],
        time_limit: float,
        gap: float,
    ) -> dict[str, int] | None:
        """One MILP: minimise ``c`` (over every variable) within the limits, region and cuts."""
        rows: list[tuple[dict[int, float], float, float]] = []
        if center is not None and radius is not None:
            pos = {g: self.option(g, center) for g in self.names}
            rows.append(
                (
                    {self._x[(g, i)]: float(self.steps(g, pos[g], i)) for g in self.names
                     for i in range(len(self.options[g]))},
                    -np.inf,
                    float(radius),
                )
            )
        for kept in exclude:  # no-good cut: not every group at this option again
            rows.append(
                ({self._x[(g, self.option(g, kept))]: 1.0 for g in self.names}, -np.inf, len(self.names) - 1.0)
            )
        constraints = self._base + ([self._constraint(rows)] if rows else [])
        integrality = np.zeros(self.n_vars)
        integrality[: len(self._x)] = 1
        res = milp(
            c,
            constraints=constraints,
            integrality=integrality,
            bounds=Bounds(np.zeros(self.n_vars), self._upper_bounds() if self.units and self.int8 else np.ones(self.n_vars)),
            options={"time_limit": time_limit, "mip_rel_gap": gap, "presolve": True, "disp": False},
        )
        if res.x is None:
            return None
        return self.assignment(
            {g: int(np.argmax([res.x[self._x[(g, j)]] for j in range(len(self.options[g]))])) for g in self.names})

    def violated(self, kept: Mapping[str, int]) -> list[str]:
        """Names of the limits ``kept`` breaks, evaluated exactly (not through the MILP), and
        ``unit <name>`` for each unit it removes only in part."""
        broken = [lim.name for lim in self.limits if lim.model.value(self.space, kept) > lim.bound + _EXACT_TOL]
        return broken + [f"unit {u}" for u in self.inconsistent(kept)] if self.units else broken
