"""What workers measure for an agent before its search (``Agent.hint_requests``).

The runner (and the benches) call :func:`agent_hints` with the job's pool and pass the result to
``make_agent(..., hints=...)``: the agent states what it needs, the pool measures it on a worker,
and the agent receives plain values — it never sees a model, and the runner knows no agent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agents.latency_table import LatencyTableRequest
from agents.registry import AGENTS
from agents.types import AgentHints, Budget
from workers.pool_base import Pool


def agent_hints(kind: str, budget: Budget, options: Mapping[str, Any] | None, pool: Pool) -> AgentHints:
    """The hints agent ``kind`` asks for under ``budget``, measured through ``pool``."""
    table = None
    for request in AGENTS.get(kind).hint_requests(budget, dict(options or {})):
        if isinstance(request, LatencyTableRequest):
            table = pool.latency_table(tuple(request.ratios))
    return AgentHints(latency_table=table)
