"""The search loop the service runs: ask → evaluate in parallel → report → tell, with resume.

Workers know nothing of databases: every finished trial goes out through ``on_outcome`` (the
service commits it there) and the agent's state through ``on_state`` (saved after ``ask`` so a
restart re-proposes the same pending trials, and after ``tell``). On resume the service passes
the outcomes it already stored; a re-proposed trial found there is answered from it, neither
evaluated nor reported again. Equal architectures (same ``space.signature``) are evaluated once
per job; later ones are reported with ``cached=True`` and the first one's metrics.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agents.base import Agent
from agents.types import Outcome, Proposal
from search_spaces.space import PolicyError, SearchSpace
from workers.pool_base import Pool


@dataclass
class SearchSummary:
    """How a search ended and what it did."""

    answered: int = 0  # proposals answered (stored + evaluated + cached + failed)
    evaluated: int = 0  # sent to the pool
    cached: int = 0  # answered from an equal architecture evaluated earlier in the job
    from_storage: int = 0  # answered from the stored outcomes passed in (resume)
    failed: int = 0
    batches: int = 0
    stop_reason: str = "trials"  # trials | finished | exhausted | cancelled
    elapsed_s: float = 0.0
    trial_ids: list[int] = field(default_factory=list)


def _copy_for(proposal: Proposal, source: Outcome) -> Outcome:
    """An outcome for ``proposal`` reusing the evaluation of an equal architecture."""
    if source.metrics is None:
        return Outcome(proposal.trial_id, proposal.policy, None, source.error)
    metrics = copy.deepcopy(source.metrics)
    metrics.extra = {**metrics.extra, "cached_from": source.trial_id}
    return Outcome(proposal.trial_id, proposal.policy, metrics, None)


def run_search(
    agent: Agent,
    pool: Pool,
    *,
    trials: int,
    batch_size: int,
    stored: Mapping[int, Outcome] | None = None,
    on_outcome: Callable[[Proposal, Outcome, bool], None],
    on_state: Callable[[dict[str, Any]], None],
    should_stop: Callable[[], bool],
) -> SearchSummary:
    """Runs the agent until ``trials`` proposals are answered, it finishes, or ``should_stop()``."""
    if trials < 0:
        raise ValueError(f"trials must be >= 0, got {trials}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    stored = dict(stored or {})
    space = pool.space
    t0 = time.perf_counter()
    summary = SearchSummary()
    # first successful evaluation of each architecture in this job (stored ones included)
    by_signature: dict[str, Outcome] = {}
    for o in sorted(stored.values(), key=lambda o: o.trial_id):
        if o.ok:
            by_signature.setdefault(_signature(space, o.policy) or "", o)

    while summary.answered < trials:
        if should_stop():
            summary.stop_reason = "cancelled"
            break
        if agent.finished:
            summary.stop_reason = "finished"
            break
        proposals = agent.ask(min(batch_size, trials - summary.answered))
        if not proposals:
            summary.stop_reason = "exhausted"
            break
        on_state(agent.state_dict())
        summary.batches += 1
        answers = _answer_batch(proposals, pool, stored, by_signature, on_outcome, summary)
        agent.tell([answers[p.trial_id] for p in proposals])
        summary.answered += len(proposals)
        summary.trial_ids += [p.trial_id for p in proposals]
        on_state(agent.state_dict())
    summary.elapsed_s = time.perf_counter() - t0
    return summary


def _signature(space: SearchSpace, policy: Mapping[str, float]) -> str | None:
    try:
        return space.signature(space.validate(policy))
    except PolicyError:
        return None  # invalid: the evaluator reports the error on its own


def _answer_batch(
    proposals: list[Proposal],
    pool: Pool,
    stored: Mapping[int, Outcome],
    by_signature: dict[str, Outcome],
    on_outcome: Callable[[Proposal, Outcome, bool], None],
    summary: SearchSummary,
) -> dict[int, Outcome]:
    space = pool.space
    answers: dict[int, Outcome] = {}
    to_evaluate: list[Proposal] = []
    waiting: dict[str, list[Proposal]] = {}  # equal architectures in this batch wait for the first
    sig_of: dict[int, str | None] = {}

    def report(p: Proposal, o: Outcome, cached: bool) -> None:
        answers[p.trial_id] = o
        summary.failed += 0 if o.ok else 1
        summary.cached += 1 if cached else 0
        on_outcome(p, o, cached)

    for p in proposals:
        if p.trial_id in stored:
            answers[p.trial_id] = stored[p.trial_id]
            summary.from_storage += 1
            continue
        sig = sig_of[p.trial_id] = _signature(space, p.policy)
        if sig is not None and sig in by_signature:
            report(p, _copy_for(p, by_signature[sig]), True)
        elif sig is not None and sig in waiting:
            waiting[sig].append(p)
        else:
            if sig is not None:
                waiting[sig] = []
            to_evaluate.append(p)

    by_id = {p.trial_id: p for p in to_evaluate}
    summary.evaluated += len(to_evaluate)
    if to_evaluate:
        for o in pool.evaluate(to_evaluate):
            p = by_id.pop(o.trial_id)
            report(p, o, False)
            sig = sig_of[p.trial_id]
            if sig is None:
                continue
            if o.ok:
                by_signature.setdefault(sig, o)
            for q in waiting.pop(sig, []):
                report(q, _copy_for(q, o), True)
    if by_id:
        raise RuntimeError(f"pool returned no outcome for trials {sorted(by_id)}")
    return answers
