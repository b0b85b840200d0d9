"""CLI commands for the service: ``serve``, ``submit``, ``watch``, ``jobs``, ``pull``, ``demo``."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click

from service.cli import main
from service.client import ApiError, Client
from service.states import FINAL_STATES

server_option = click.option(
    "--server", default=None, metavar="URL",
    help="API base URL (default: $AUTOPRUNE_SERVER, else the local server on AUTOPRUNE_HOST/PORT).",
)


def _fail(exc: ApiError) -> None:
    click.secho(f"error: {exc}", fg="red", err=True)
    sys.exit(2 if exc.status == 422 else 1)


def load_spec(path: str) -> dict[str, Any]:
    """A job spec from a JSON or YAML file ('-' reads stdin)."""
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    if path.endswith((".yaml", ".yml")) or (path == "-" and not text.lstrip().startswith("{")):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise click.BadParameter(f"not valid YAML: {exc}", param_hint="SPEC") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"not valid JSON: {exc}", param_hint="SPEC") from None
    if not isinstance(data, dict):
        raise click.BadParameter("the spec must be a JSON/YAML object", param_hint="SPEC")
    return data


@main.command()
@click.option("--host", default=None, help="Interface to bind (default AUTOPRUNE_HOST, 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Port (default AUTOPRUNE_PORT, 8000).")
def serve(host: str | None, port: int | None) -> None:
    """Run the controller: REST API, dashboard and job runner (migrates the database first)."""
    import uvicorn

    from service.api.app import create_app
    from service.config import Settings
    from service.db import upgrade

    overrides = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    settings = Settings(**overrides)  # type: ignore[arg-type]
    settings.ensure_dirs()
    upgrade(settings.db_url)
    click.echo(f"autoprune: database {settings.db_url.split('@')[-1]}; http://{settings.host}:{settings.port}/")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning")


@main.command()
@click.argument("spec", type=click.Path(allow_dash=True))
@click.option("--watch", "follow", is_flag=True, help="Follow the job until it finishes.")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Upload these weights first and reference them from the spec.")
@server_option
def submit(spec: str, follow: bool, weights: Path | None, server: str | None) -> None:
    """Submit the job spec in SPEC (JSON or YAML)."""
    client = Client(server)
    body = load_spec(spec)
    try:
        if weights is not None:
            body.setdefault("model", {})["weights"] = client.upload(weights)["id"]
        job = client.submit(body)
    except ApiError as exc:
        _fail(exc)
        return
    click.echo(job["id"])
    if follow:
        sys.exit(0 if watch_job(client, job["id"])["state"] == "succeeded" else 1)


def _best_text(job: dict[str, Any]) -> str:
    best = job.get("best")
    if not best or not best.get("metrics"):
        return "best: -"
    m = best["metrics"]
    return f"best q={m['quality']:.4f} macs={m['macs_ratio']:.2f}"


def watch_job(client: Client, job_id: str, interval: float = 1.0) -> dict[str, Any]:
    """A progress bar (trials, best so far, ETA) until the job finishes; returns the final job."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("[bold]{task.fields[state]:<10}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[best]}"), TextColumn("eta {task.fields[eta]}"), TimeElapsedColumn())
    job = client.job(job_id)
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task("job", total=job["progress"]["trials_total"], state=job["state"], best="", eta="-")
        while True:
            p = job["progress"]
            eta = p.get("eta_seconds")
            bar.update(task, completed=p["trials_done"], state=job["state"], best=_best_text(job),
                       eta=f"{eta:.0f}s" if eta is not None else "-")
            if job["state"] in FINAL_STATES:
                break
            time.sleep(interval)
            job = client.job(job_id)
    colour = {"succeeded": "green", "failed": "red"}.get(job["state"], "yellow")
    click.secho(f"job {job_id}: {job['state']}" + (f" — {job['error']}" if job.get("error") else ""), fg=colour)
    _say_budget(job)
    return job


def _say_budget(job: dict[str, Any]) -> None:
    """A finished job that missed its latency budget says so, with how much and in which runtime."""
    delivery = job.get("delivery") or {}
    if delivery.get("budget_met") is False:
        click.secho(f"job {job['id']}: {delivery.get('note') or 'over its latency budget'}", fg="red")


def delivered_columns(job: dict[str, Any]) -> tuple[str, str, str]:
    """A job's runtime, its latency ratio at search / delivered (the best's, rank 1's published
    file), and its budget verdict ("met", "over +12.3 %", "-" without a latency term)."""
    delivery = job.get("delivery") or {}
    runtime = delivery.get("runtime") or job.get("runtime") or "-"
    best = (job.get("best") or {}).get("metrics") or {}
    first = (delivery.get("artifacts") or [{}])[0]
    searched = first.get("searched_latency_ratio", best.get("latency_ratio"))
    latency = f"{_fmt(searched, '.3f')} / {_fmt(first.get('delivered_latency_ratio'), '.3f')}"
    met = delivery.get("budget_met")
    if met is None:
        verdict = "-"
    elif met:
        verdict = "met"
    else:
        verdict = f"over +{100 * (delivery.get('budget_excess') or 0.0):.1f} %"
    return runtime, latency, verdict


@main.command()
@click.argument("job_id")
@server_option
def watch(job_id: str, server: str | None) -> None:
    """Follow job JOB_ID: trials done, best so far, ETA."""
    try:
        job = watch_job(Client(server), job_id)
    except ApiError as exc:
        _fail(exc)
        return
    sys.exit(0 if job["state"] == "succeeded" else 1)


@main.command()
@click.option("--limit", default=20, show_default=True)
@server_option
def jobs(limit: int, server: str | None) -> None:
    """List jobs, newest first."""
    from rich.console import Console
    from rich.table import Table

    try:
        page = Client(server).jobs(limit=limit)
    except ApiError as exc:
        _fail(exc)
        return
    table = Table("id", "name", "state", "trials", "best quality", "runtime", "latency search / delivered",
                  "latency budget", "created")
    for j in page["items"]:
        best = (j.get("best") or {}).get("metrics") or {}
        q = best.get("quality")
        table.add_row(j["id"], j["name"], j["state"], f"{j['progress']['trials_done']}/{j['progress']['trials_total']}",
                      f"{q:.4f}" if q is not None else "-", *delivered_columns(j), (j["created_at"] or "")[:19])
    Console(width=200).print(table)
    for j in page["items"]:
        _say_budget(j)
    click.echo(f"{page['count']} job(s)")


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@server_option
def upload(file: Path, server: str | None) -> None:
    """Upload weights in FILE (.safetensors) and print their id, for a spec's model.weights."""
    try:
        up = Client(server).upload(file)
    except ApiError as exc:
        _fail(exc)
        return
    click.echo(up["id"])
    click.echo(f"{up['name']}: {up['size']} bytes, sha256 {up['sha256'][:12]}…", err=True)


@main.command()
@click.argument("job_id")
@click.option("--rank", default=1, show_default=True, help="Which artifact (1 = best).")
@click.option("-o", "--out", "out_dir", default=".", type=click.Path(file_okay=False, path_type=Path))
@server_option
def pull(job_id: str, rank: int, out_dir: Path, server: str | None) -> None:
    """Download artifact RANK of JOB_ID into OUT (checksums verified)."""
    try:
        target, art = Client(server).pull(job_id, rank, out_dir)
    except ApiError as exc:
        _fail(exc)
        return
    click.echo(f"{target} ({len(art['files'])} files, trial {art['trial_id']})")


# --- demo ---------------------------------------------------------------------------------------
#: The demo job. 25 % MACs: the cut where the search has work to do and latency really falls;
#: the default proxy (least-squares reconstruction, 2 calibration batches) scores candidates
#: honestly there (docs/benchmarks.md, "Proxy study"); the uniform-fill baseline is fine-tuned
#: too, so the table compares like with like.
DEMO_SPEC: dict[str, Any] = {
    "name": "demo: resnet20 on digits, 25% MACs",
    "model": {"zoo": "resnet20"},
    "dataset": {"name": "digits"},
    "budget": {"macs_ratio": 0.25},
    "agent": {"kind": "optuna-tpe", "trials": 60},
    "finalize": {"top_k": 1, "finetune_epochs": 3, "baseline": True},
    "workers": 2,
    "seed": 0,
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _fmt(v: Any, spec: str) -> str:
    return format(v, spec) if isinstance(v, int | float) else "-"


@main.command()
@click.option("--trials", default=DEMO_SPEC["agent"]["trials"], show_default=True, help="Policies the agent evaluates.")
@click.option("--workers", default=DEMO_SPEC["workers"], show_default=True, help="Ray evaluators (0: in-process).")
@click.option("--port", default=None, type=int, help="Port of the embedded server (default: a free one).")
def demo(trials: int, workers: int, port: int | None) -> None:
    """The main job end to end on embedded defaults: SQLite, local Ray, digits, resnet20, 25 % MACs.

    Prints dense vs the uniform-fill baseline vs the best found, at search time and after the
    same final fine-tune, and says plainly whether the search beat the baseline.
    """
    import uvicorn

    from service.api.app import create_app
    from service.config import Settings

    settings = Settings(host="127.0.0.1", port=port or _free_port(), api_token=None)
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="autoprune-demo-server", daemon=True)
    t0 = time.monotonic()
    thread.start()
    url = f"http://{settings.host}:{settings.port}"
    client = Client(url, token="")
    while not client.health():
        if not thread.is_alive():
            raise click.ClickException("the embedded server did not start")
        time.sleep(0.2)
    spec = {**DEMO_SPEC, "agent": {**DEMO_SPEC["agent"], "trials": trials}, "workers": workers}
    try:
        job = client.submit(spec)
        click.echo(f"job {job['id']} — dashboard while it runs: {url}/  (database {settings.db_url})")
        job = watch_job(client, job["id"])
        if job["state"] == "succeeded":
            _report(client, job, settings, time.monotonic() - t0)
    finally:
        server.should_exit = True
        thread.join(60)
    click.echo("dashboard afterwards: `autoprune serve`, then http://127.0.0.1:8000/ (same database)")
    sys.exit(0 if job["state"] == "succeeded" else 1)


def _report(client: Client, job: dict[str, Any], settings: Any, elapsed: float) -> None:
    from rich.console import Console

    arts = client.artifacts(job["id"])
    table, verdict = demo_table(job, arts)
    Console(width=130).print(table)
    for line in verdict:
        click.echo(line)
    if arts:
        folder = Path(settings.artifacts_dir) / job["id"] / f"rank-{arts[0]['rank']}"
        click.echo(f"artifact (rank 1, trial {arts[0]['trial_id']}): {folder}")
    click.echo(f"finished in {elapsed:.0f} s")


#: the int8 baselines of a joint width × precision search (``search_space.precision``)
INT8_BASELINES = ("quantize-only", "quantize+uniform-fill")
#: every baseline reported in a column of its own beside uniform-fill: the int8 ones, and
#: depth-only of a depth search (``search_space.depth``)
EXTRA_BASELINES = (*INT8_BASELINES, "depth-only")


def demo_table(job: dict[str, Any], arts: list[dict[str, Any]]) -> tuple[Any, list[str]]:
    """Dense vs the uniform-fill baseline (and, for a joint search with int8, quantize-only and
    quantize + uniform-fill; for a depth search, depth-only) vs the best found, at search time and after the final fine-tune;
    and a plain verdict on whether the search beat each of them."""
    from rich.table import Table

    dense = job.get("dense") or {}
    best_trial, base_trial = job.get("best") or {}, job.get("baseline") or {}
    best, base = best_trial.get("metrics") or {}, base_trial.get("metrics") or {}
    by_trial = {a["trial_id"]: a.get("metrics") or {} for a in arts}
    best_final = arts[0].get("metrics") or {} if arts else {}
    base_final = by_trial.get(base_trial.get("trial_id"), {})
    # the int8 and depth-only baselines: finalized beside the best (search-time figures in the trials)
    others = [(role, next((a.get("metrics") or {} for a in arts if (a.get("metrics") or {}).get("role") == role),
                          None)) for role in EXTRA_BASELINES]
    extra = [(role, m) for role, m in others if m is not None]
    table = Table("", "dense", "uniform-fill baseline", *(role for role, _ in extra), "best found")
    metric = (job.get("spec") or {}).get("metric") or "quality"
    none = ["-"] * len(extra)

    def final(key: str, fmt: str) -> list[str]:
        return [_fmt(m.get(key), fmt) for _, m in extra]

    table.add_row(f"{metric} at search (val)", _fmt(dense.get("quality"), ".4f"),
                  _fmt(base.get("quality"), ".4f"), *none, _fmt(best.get("quality"), ".4f"))
    table.add_row(f"{metric} after final fine-tune (test)", _fmt(best_final.get("dense_test_quality"), ".4f"),
                  _fmt(base_final.get("test_quality"), ".4f"), *final("test_quality", ".4f"),
                  _fmt(best_final.get("test_quality"), ".4f"))
    if extra or best_final.get("int8_groups") is not None:
        table.add_row("groups in int8 (shipped file)", "0", _fmt(base_final.get("int8_groups", 0), "d"),
                      *final("int8_groups", "d"), _fmt(best_final.get("int8_groups", 0), "d"))
    if any("removed_units" in m for m in (best_final, base_final, *(m for _, m in extra))):
        table.add_row("blocks/layers removed (shipped)", "0", _removed(base_final), *(_removed(m) for _, m in extra),
                      _removed(best_final))
    table.add_row("MACs", _fmt(dense.get("macs"), ",d"), _fmt(base.get("macs"), ",d"), *final("macs", ",d"),
                  _fmt(best.get("macs"), ",d"))
    table.add_row("MACs ratio", "1.000", _fmt(base.get("macs_ratio"), ".3f"), *final("macs_ratio", ".3f"),
                  _fmt(best.get("macs_ratio"), ".3f"))
    table.add_row("params", _fmt(dense.get("params"), ",d"), _fmt(base.get("params"), ",d"), *final("params", ",d"),
                  _fmt(best.get("params"), ",d"))
    # Latency drifts between sessions: each final figure next to the dense one measured
    # interleaved with it (ms / ratio), so the two ms numbers agree with the ratio.
    table.add_row("latency ms, final (pruned / dense, same session)", _fmt(dense.get("latency_ms"), ".3f"),
                  _latency_pair(base_final), *(_latency_pair(m) for _, m in extra), _latency_pair(best_final))
    table.add_row("latency ratio (measured at search / final)", "1.000",
                  _ratio_pair(base, base_final), *(_ratio_pair({}, m) for _, m in extra), _ratio_pair(best, best_final))
    if "latency_to_best" in best_final:  # the published files timed together, one run
        table.add_row("latency × the best's (files timed side by side)", "",
                      _fmt(base_final.get("latency_to_best"), ".3f"), *final("latency_to_best", ".3f"),
                      _fmt(best_final.get("latency_to_best"), ".3f"))
    runtime = best_final.get("runtime") or job.get("runtime") or "-"
    table.add_row(f"latency budget met in {runtime} (delivered file)", "",
                  _budget_cell(base_final), *(_budget_cell(m) for _, m in extra), _budget_cell(best_final))
    verdict = _verdict(best_trial, base_trial, best_final, base_final)
    verdict += [_versus(role, best_final, m) for role, m in extra]
    note = (job.get("delivery") or {}).get("note")
    return table, [*verdict, note] if note else verdict


def _removed(final: dict[str, Any]) -> str:
    """How many units a depth artifact removed, and which (``removed_units``)."""
    gone = final.get("removed_units")
    if not isinstance(gone, list):
        return "-"
    return f"{len(gone)}: {', '.join(gone)}" if gone else "0"


def _versus(role: str, best: dict[str, Any], other: dict[str, Any]) -> str:
    """One line: the best found against an int8 or depth-only baseline, quality after the same recovery and
    the delivered files' latency."""
    q, q_other = best.get("test_quality"), other.get("test_quality")
    lat, lat_other = best.get("latency_ratio"), other.get("latency_ratio")
    if not isinstance(q, int | float) or not isinstance(q_other, int | float):
        return f"{role}: nothing to compare"
    where = (f" at {lat:.3f} vs {lat_other:.3f} of dense latency"
             if isinstance(lat, int | float) and isinstance(lat_other, int | float) else "")
    if isinstance(other.get("latency_to_best"), int | float):
        where += f"; timed side by side it runs at {other['latency_to_best']:.3f}× the best's latency"
    if q > q_other:
        return f"Against {role}: the best found is {100 * (q - q_other):+.1f} points ahead on the test split{where}."
    return (f"Against {role}: the search did NOT beat it ({q:.4f} vs {q_other:.4f} on the test split{where}).")


def _budget_cell(final: dict[str, Any]) -> str:
    met, excess = final.get("budget_met"), final.get("budget_excess")
    if met is None:
        return "-"
    return "yes" if met else f"NO, over by {100 * (excess or 0.0):.1f} %"


def _verdict(best_trial: dict[str, Any], base_trial: dict[str, Any], best_final: dict[str, Any],
             base_final: dict[str, Any]) -> list[str]:
    q_best = (best_trial.get("metrics") or {}).get("quality")
    q_base = (base_trial.get("metrics") or {}).get("quality")
    if q_best is None or q_base is None:
        return ["no feasible baseline or best to compare"]
    lines = []
    if best_trial.get("trial_id") == base_trial.get("trial_id") or q_best <= q_base:
        lines.append(f"The search did NOT beat the uniform-fill baseline at search time (best {q_best:.4f}, "
                     f"baseline {q_base:.4f}).")
    else:
        lines.append(f"At search time the best found beats the uniform-fill baseline by "
                     f"{100 * (q_best - q_base):+.1f} points ({q_best:.4f} vs {q_base:.4f}).")
    t_best, t_base = best_final.get("test_quality"), base_final.get("test_quality")
    if isinstance(t_best, int | float) and isinstance(t_base, int | float):
        if t_best > t_base:
            lines.append(f"After the same final fine-tune it is {100 * (t_best - t_base):+.1f} points "
                         f"ahead on the test split ({t_best:.4f} vs {t_base:.4f}).")
        else:
            lines.append(f"After the same final fine-tune it is NOT better than the baseline on the test "
                         f"split ({t_best:.4f} vs {t_base:.4f}).")
    return lines


def _ratio_pair(search: dict[str, Any], final: dict[str, Any]) -> str:
    return f"{_fmt(search.get('latency_ratio'), '.3f')} / {_fmt(final.get('latency_ratio'), '.3f')}"


def _latency_pair(metrics: dict[str, Any]) -> str:
    ms, ratio = metrics.get("latency_ms"), metrics.get("latency_ratio")
    if not ms or not ratio:
        return _fmt(ms, ".3f")
    return f"{ms:.3f} / {ms / ratio:.3f}"
