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


def agent_hints(kind: str, budget: Budget, options: Mapping[str, Any] | None, pool: Any) -> AgentHints:
    """The hints agent ``kind`` asks for under ``budget``, measured through ``pool``.

    A pool that cannot measure (a test double without ``latency_table``) gives none; the agent
    then works from its priors.
    """
    table = None
    for request in AGENTS.get(kind).hint_requests(budget, dict(options or {})):
        if isinstance(request, LatencyTableRequest) and hasattr(pool, "latency_table"):
            table = pool.latency_table(request.ratios)
    return AgentHints(latency_table=table)
