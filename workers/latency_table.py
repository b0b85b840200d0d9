"""Measuring a per-group latency table on this worker (``agents.latency_table.LatencyTable``).

Entry (g, k): the network with group g pruned to k kept channels and every other group dense,
timed interleaved with the dense model by the evaluator's ``LatencyMeter`` — so each entry is an
ordinary latency measurement: cached by architecture signature (in memory and in the node's
latency cache file, shared with evaluations and across restarts) and taken with the node held
exclusively. Only the architecture matters for latency, so the policy is applied the model
kind's way (``Evaluator.shrink``) with no recovery.

In a space with int8 each group is also timed in int8 (the table's ``int8`` entries), unpruned
and at the middle of its table widths, every other group dense fp32: as the runtime runs it (the
kind's export, quantized by ``workers.quantized`` with one calibration batch — scales do not
change the kernels), and cached by the same signature an evaluation of that policy would use.
Two widths per group, not all of them: an int8 entry costs an export, a quantization and a
session besides its timing, and the latency model's int8 terms (a per-group offset, a slope
shared by all groups) need two points per group, not more.

In a space with depth each removable unit is also timed removed, the rest dense (the table's
``removed`` entries): removal takes a block's fixed per-layer cost away too, which no narrowing
entry shows, and the latency model has one term per unit to learn it.

The same stage resolves ``search_space.round_to: "runtime"`` (:func:`resolve_round_to`): widths
timed in the job's runtime choose the channel multiple the space rounds to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

from agents.latency_table import LatencyTable
from search_spaces.measure import time_interleaved
from search_spaces.space import SearchSpace, keep_key

if TYPE_CHECKING:
    from workers.evaluator import Evaluator
    from workers.task_types import Task


def table_policies(space: SearchSpace, ratios: Sequence[float]) -> dict[str, list[dict[str, float]]]:
    """Per group, the distinct single-group policies at ``ratios`` (clipped to ``max_ratio``)."""
    out: dict[str, list[dict[str, float]]] = {}
    for g in space.groups:
        seen, policies = {g.channels}, []
        for r in sorted(ratios):
            k = space.kept_channels(g, min(r, space.max_ratio))
            if k not in seen:
                seen.add(k)
                policies.append({g.name: space.ratio_for(g, k)})
        out[g.name] = policies
    return out


def int8_table_policies(space: SearchSpace, ratios: Sequence[float]) -> dict[str, list[dict[str, float]]]:
    """Per group, the group in int8 unpruned and at the middle of its table widths (the less
    pruned of two), every other group dense fp32 (none in a space without int8)."""
    if not space.quantizable:
        return {}
    return {name: [space.with_int8(p, [name]) for p in [{name: 0.0}, *policies[(len(policies) - 1) // 2:][:1]]]
            for name, policies in table_policies(space, ratios).items()}


def removal_policies(space: SearchSpace) -> dict[str, dict[str, float]]:
    """Per unit (a space with depth; none otherwise), the policy with that unit removed and
    every group dense."""
    return {u.name: space.validate({keep_key(u.name): 0.0}) for u in space.units}


def measure_latency_table(evaluator: Evaluator, ratios: Sequence[float]) -> LatencyTable:
    """The table for ``evaluator``'s task at ``ratios`` (see the module docstring)."""
    space, meter = evaluator.space, evaluator.latency
    if meter.rounds < 1:
        raise ValueError("a latency table needs latency measurement, which this evaluator has off (latency_rounds=0)")
    dense = meter.measure(evaluator.dense_signature, evaluator.dense)

    def ratio(policy: dict[str, float]) -> float:
        signature = space.signature(policy)
        lat = meter.cached(signature)
        if lat is None:
            lat = meter.measure(signature, evaluator.shrink(policy), export=evaluator.export_of(policy))
        return lat.ratio

    def rows(plan: dict[str, list[dict[str, float]]]) -> dict[str, tuple[tuple[int, float], ...]]:
        return {name: tuple((space.kept(p)[name], ratio(p)) for p in policies) for name, policies in plan.items()}

    return LatencyTable(dense_ms=dense.ms, entries=rows(table_policies(space, ratios)),
                        int8=rows(int8_table_policies(space, ratios)),
                        removed={unit: ratio(p) for unit, p in removal_policies(space).items()})


# --- search_space.round_to: "runtime" ------------------------------------------------------------
#: the steps ``round_to: "runtime"`` chooses among, and the offsets above a multiple of 16 it times
RUNTIME_STEPS = (1, 4, 8, 16)
#: a step is fine enough when its widths' extra time over the linear share of the 16-channel span
#: is at most this fraction of the span (a runtime padding to blocks of 8 costs 0.44 at step 1,
#: 0.25 at 4 and 0 at 8; one padding to 16 costs 0.5 at 8)
STEP_EXCESS_TOLERANCE = 0.2


@dataclass(frozen=True)
class RuntimeStep:
    """What ``round_to: "runtime"`` measured: the chosen step, and per offset ``s`` above a
    multiple of 16 (every probed group at ``16·m + s`` channels) the latency ratio to dense and
    the excess over the straight line between offsets 0 and 16 (a fraction of that span)."""

    step: int
    latency: dict[int, float]
    excess: dict[int, float]
    groups: int


def step_probe_policies(space: SearchSpace) -> dict[int, dict[str, float]]:
    """Per offset s in 0, 1, 4, 8, 16: every group of ≥ 32 channels (pruned channel by channel;
    attention heads are already their unit) at ``16·⌊channels/32⌋ + s`` kept channels, the rest
    dense. A network-wide change keeps the effect well above the noise of one measurement."""
    probe = replace(space, round_to=1)
    out: dict[int, dict[str, float]] = {}
    for s in (0, *RUNTIME_STEPS):
        policy = {}
        for g in space.groups:
            if g.kind == "heads" or g.round_to != 1 or g.channels < 32:
                continue
            kept = 16 * (g.channels // 32) + s
            if kept < g.channels and probe.ratio_for(g, kept) <= space.max_ratio:
                policy[g.name] = probe.ratio_for(g, kept)
        out[s] = policy
    return out


def choose_step(latency: dict[int, float]) -> tuple[int, dict[int, float]]:
    """The finest step whose widths run as fast as their channels suggest (see the constants)."""
    span = latency[16] - latency[0]
    if span <= 0:  # no measurable width effect (or noise): nothing to round for
        return 1, {s: 0.0 for s in RUNTIME_STEPS}
    excess = {s: (latency[s] - latency[0] - span * s / 16) / span for s in RUNTIME_STEPS}
    step = next(s for s in RUNTIME_STEPS if s == 16 or excess[s] <= STEP_EXCESS_TOLERANCE)
    return step, excess


def measure_runtime_step(evaluator: Evaluator, *, rounds: int = 20) -> RuntimeStep:
    """Times the probes of :func:`step_probe_policies` against dense, interleaved in one run in
    the evaluator's runtime (its task's space must accept single channels: ``round_to`` 1).

    Each probe's figure is its fastest round over the dense model's: what its kernels cost,
    robust to bursts of load from other processes (a median moves with them; the step is a
    property of the kernels, not of the machine's load).
    """
    plan = step_probe_policies(evaluator.space)
    groups = len(plan[0])
    if not groups:
        return RuntimeStep(1, {}, {}, 0)
    meter = evaluator.latency
    runs = [meter.run_of(evaluator.dense)] + [meter.run_of(evaluator.shrink(plan[s])) for s in plan]
    sync = meter.runtime.sync(meter.example)
    with meter.lock.exclusive(), meter.runtime.timing(meter.threads):
        (one,) = time_interleaved(runs[:1], rounds=1, warmup=1, sync=sync)
        repeat = max(1, min(100, int(5.0 / max(one[0], 1e-3))))  # rounds of about 5 ms
        times = time_interleaved(runs, rounds=rounds, repeat=repeat, warmup=2, sync=sync)
    ratios = {s: min(times[i + 1]) / min(times[0]) for i, s in enumerate(plan)}
    step, excess = choose_step(ratios)
    return RuntimeStep(step, ratios, excess, groups)


def resolve_round_to(task: Task, *, rounds: int = 20) -> Task:
    """``task`` with ``round_to: "runtime"`` resolved: its space's ``runtime_step`` measured in
    the job's runtime (the controller does it once, at task load; Ray actors get the space)."""
    if task.space.round_to != "runtime":
        return task
    from workers.evaluator import Evaluator

    probe = replace(task, space=replace(task.space, round_to=1))
    found = measure_runtime_step(Evaluator(probe, latency_rounds=rounds), rounds=rounds)
    return replace(task, space=replace(task.space, runtime_step=found.step),
                   info={**task.info, "runtime_step": asdict(found)})
