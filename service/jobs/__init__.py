"""Running jobs, by concern; :class:`service.runner.Runner` puts them together.

- :mod:`service.jobs.leases` — this controller's job leases: claim, renew, fence, release.
- :mod:`service.jobs.run` — one job's orchestration: launch, search, finalize, final state.
- :mod:`service.jobs.candidates` — which trials finalize gets; artifacts as stored.
- :mod:`service.jobs.recorder` — the trials, events and front a running job writes.

Imports point one way: ``runner → run → (recorder, candidates, leases) → db``; none imports the
HTTP layer.
"""
