"""``autoprune space``, ``autoprune prune`` and ``autoprune plugins``: the engine from the command line.

Their user is the operator, so MODEL and --dataset may name any ``entrypoint:module:function``
(a REST job spec may only name registered plugins: ``search_spaces.plugins``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from service.cli import main

if TYPE_CHECKING:
    from search_spaces.space import RoundTo


def _model_and_input(model: str, dataset: str | None, weights: str | None, num_classes: int | None) -> tuple[Any, Any, dict[str, Any]]:
    import torch

    from search_spaces.zoo import DEFAULT_INPUT_SHAPES

    if dataset:
        from search_spaces.data import load_dataset

        splits = load_dataset(dataset)
        shape, classes = splits.input_shape, splits.num_classes
    else:
        shape = DEFAULT_INPUT_SHAPES.get(model, (3, 32, 32))
        classes = 10
    classes = num_classes or classes
    from search_spaces.zoo import build_model

    try:
        net = build_model(model, num_classes=classes, in_channels=shape[0])
    except (KeyError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="MODEL") from None
    if weights:
        from safetensors.torch import load_file

        path = Path(weights)
        state = load_file(str(path)) if path.suffix == ".safetensors" else torch.load(path, weights_only=True)
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            raise click.BadParameter(f"weights do not fit {model}: {str(exc).splitlines()[0]}", param_hint="--weights") from None
    arch = {"source": model, "num_classes": classes, "in_channels": shape[0], "input_shape": tuple(shape)}
    return net.eval(), torch.zeros(1, *shape).normal_(generator=torch.Generator().manual_seed(0)), arch


def _round_to(_ctx: click.Context, _param: click.Parameter, value: str) -> RoundTo:
    from search_spaces.space import parse_round_to

    try:
        return parse_round_to(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@main.command("space")
@click.argument("model")
@click.option("--dataset", default=None, help="take the input shape and classes from this dataset (or entrypoint:<plugin>)")
@click.option("--round-to", default="auto", show_default=True, callback=_round_to,
              help="kept channels are a multiple of this, or 'auto' (scales with each group's width)")
@click.option("--max-ratio", default=0.8, show_default=True, type=click.FloatRange(0, 1, max_open=True))
@click.option("--criterion", default="l1", show_default=True)
@click.option("--depth", is_flag=True, help="also list the residual blocks a policy may remove ('<block>@keep': 0)")
@click.option("--json", "as_json", is_flag=True, help="print the whole space as JSON")
def space_cmd(model: str, dataset: str | None, round_to: RoundTo, max_ratio: float, criterion: str, depth: bool,
              as_json: bool) -> None:
    """List MODEL's prunable channel groups and its dense MACs/params.

    MODEL is a built-in zoo name (resnet20, ...; an unknown one lists them all),
    torchvision:<name> or timm:<name> (random weights, nothing downloaded), or
    entrypoint:<plugin name or module:function>.
    """
    from search_spaces.build import build_space

    net, x, _ = _model_and_input(model, dataset, None, None)
    space = build_space(net, x, round_to=round_to, max_ratio=max_ratio, criterion=criterion, depth=depth)
    if as_json:
        click.echo(json.dumps(space.to_dict()))
        return
    click.echo(f"{model}: {len(space)} groups, {space.dense_macs / 1e6:.2f} MMACs, {space.dense_params / 1e6:.3f} M params")
    click.echo(f"{'#':>3} {'group':<28} {'kind':<10} {'ch':>5} {'in':>5} {'k':>2} {'s':>2} {'MMACs':>8} {'params':>9}")
    for g in space.groups:
        click.echo(f"{g.index:>3} {g.name:<28} {g.kind:<10} {g.channels:>5} {g.in_channels:>5} {g.kernel:>2} {g.stride:>2} {g.macs / 1e6:>8.2f} {g.params:>9}")
    if depth:
        click.echo(f"removable blocks ('<block>@keep': 0 removes one): {len(space.units)}"
                   + ("" if space.units else " (no residual block with an identity shortcut)"))
        for u in space.units:
            click.echo(f"{u.index:>3} {u.name:<28} {u.kind:<10} {u.macs / 1e6:>8.2f} MMACs {u.params:>9} params")


@main.command("prune")
@click.argument("model")
@click.option("--uniform", type=click.FloatRange(0, 1, max_open=True), help="the same ratio for every group")
@click.option("--policy", "policy_file", type=click.Path(exists=True, dir_okay=False), help="JSON {group: ratio}")
@click.option("--criterion", default="l1", show_default=True, help="l1, l2, fpgm, bn_scale, taylor, random")
@click.option("--round-to", default="auto", show_default=True, callback=_round_to,
              help="kept channels are a multiple of this, or 'auto' (scales with each group's width)")
@click.option("--max-ratio", default=0.8, show_default=True, type=click.FloatRange(0, 1, max_open=True))
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), help="state dict (.safetensors, or a weights_only torch file)")
@click.option("--dataset", default=None, help="input shape/classes from this dataset (default: the model's usual input)")
@click.option("--rounds", default=40, show_default=True, type=click.IntRange(3, 10_000), help="latency rounds")
@click.option("--runtime", default="onnxruntime", show_default=True,
              help="where latency is measured: onnxruntime (the exported model.onnx) or torch (eager)")
@click.option("--depth", is_flag=True, help="the policy may remove residual blocks ('<block>@keep': 0)")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="bundle directory")
@click.option("--json", "as_json", is_flag=True)
def prune_cmd(
    model: str, uniform: float | None, policy_file: str | None, criterion: str, round_to: RoundTo, max_ratio: float,
    weights: str | None, dataset: str | None, rounds: int, runtime: str, depth: bool, out_dir: str, as_json: bool,
) -> None:
    """Prune MODEL with a uniform ratio or a policy file and write the bundle to --out.

    MODEL is as for `autoprune space`: a zoo name, torchvision:<name>, timm:<name> or
    entrypoint:<plugin name or module:function>.

    Without --weights the model is randomly initialised: fine for sizes and latency, not for
    quality. Latency is batch 1, 1 thread, dense and pruned interleaved in --runtime, median of
    --rounds.
    """
    if (uniform is None) == (policy_file is None):
        raise click.UsageError("give exactly one of --uniform or --policy")
    from search_spaces.build import build_space
    from search_spaces.bundle import export_onnx, save_bundle
    from search_spaces.criteria import CRITERIA
    from search_spaces.measure import count_macs_params, latency_stats, time_interleaved
    from search_spaces.prune import apply_policy
    from search_spaces.space import PolicyError
    from workers.runtimes import RUNTIMES, get_runtime

    if runtime not in RUNTIMES:
        raise click.BadParameter(f"unknown runtime {runtime!r}; valid: {', '.join(RUNTIMES.names())}", param_hint="--runtime")
    if criterion not in CRITERIA:
        raise click.BadParameter(f"unknown criterion {criterion!r}; valid: {', '.join(CRITERIA.names())}", param_hint="--criterion")
    net, x, arch = _model_and_input(model, dataset, weights, None)
    space = build_space(net, x, round_to=round_to, max_ratio=max_ratio, criterion=criterion, depth=depth)
    if uniform is not None:
        if uniform > max_ratio:
            raise click.BadParameter(f"{uniform} is above --max-ratio {max_ratio}", param_hint="--uniform")
        policy = space.uniform(uniform)
    else:
        try:
            policy = json.loads(Path(str(policy_file)).read_text())
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--policy") from None
        if not isinstance(policy, dict):
            raise click.BadParameter("expected a JSON object {group: ratio}", param_hint="--policy")
    try:
        pruned = apply_policy(net, space, policy, criterion=criterion, example_input=x)
    except PolicyError as exc:
        raise click.BadParameter(str(exc), param_hint="--policy") from None
    macs, params = count_macs_params(pruned, x)
    rt = get_runtime(runtime)
    try:
        runs = [rt.prepare(m, x, threads=1, export=export_onnx) for m in (net, pruned)]
    except Exception as exc:  # noqa: BLE001 - a model the exporter cannot take: say so, suggest eager
        raise click.ClickException(f"cannot run {model} in {runtime}: {type(exc).__name__}: {exc} "
                                   "(--runtime torch measures it in PyTorch eager)") from None
    with rt.timing(1):
        times = time_interleaved(runs, rounds=rounds, warmup=5, sync=rt.sync(x))
    dense_lat, pruned_lat = (latency_stats(t, batch_size=int(x.shape[0]), threads=1) for t in times)
    result = {
        "macs": macs,
        "params": params,
        "dense_macs": space.dense_macs,
        "dense_params": space.dense_params,
        "macs_ratio": macs / space.dense_macs,
        "params_ratio": params / space.dense_params,
        "latency_ms": {"dense": dense_lat.median_ms, "pruned": pruned_lat.median_ms},
        "latency_iqr_ms": {"dense": dense_lat.iqr_ms, "pruned": pruned_lat.iqr_ms},
        "latency_ratio": pruned_lat.median_ms / dense_lat.median_ms,
        "runtime": runtime,
    }
    full_arch = {"format": 1, **arch, "input_shape": list(arch["input_shape"]), "kept": space.kept(policy)}
    if depth:  # the removed blocks, rebuilt as identities by load_bundle
        from search_spaces.bundle import architecture

        gone = space.removed_groups(policy)
        full_arch = architecture(
            str(arch["source"]), num_classes=int(arch["num_classes"]), in_channels=int(arch["in_channels"]),
            input_shape=tuple(arch["input_shape"]), kept={n: k for n, k in space.kept(policy).items() if n not in gone},
            removed=space.removed_units(policy), kept_layers=space.kept_units(policy))
        result.update(removed_units=space.removed_units(policy), kept_layers=space.kept_units(policy))
    files = save_bundle(out_dir, pruned, arch=full_arch, policy=space.validate(policy), metrics=result)
    result["files"] = files
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"{'':<10}{'dense':>14}{'pruned':>14}{'ratio':>8}")
    click.echo(f"{'MACs':<10}{space.dense_macs:>14,}{macs:>14,}{result['macs_ratio']:>8.3f}")
    click.echo(f"{'params':<10}{space.dense_params:>14,}{params:>14,}{result['params_ratio']:>8.3f}")
    lr = pruned_lat.median_ms / dense_lat.median_ms
    click.echo(f"{'latency ms':<10}{dense_lat.median_ms:>14.3f}{pruned_lat.median_ms:>14.3f}{lr:>8.3f}" + ("" if math.isfinite(lr) else " (n/a)") + f" ({rt.title})")
    click.echo(f"bundle: {out_dir} ({', '.join(f for f, v in files.items() if not v.startswith('not'))})")


@main.command("plugins")
@click.option("--json", "as_json", is_flag=True)
def plugins_cmd(as_json: bool) -> None:
    """List the plugins a REST job spec may name on this machine (nothing is imported).

    They are the 'autoprune.models' / 'autoprune.datasets' / 'autoprune.metrics' entry points of
    the installed packages, and the targets and module prefixes in AUTOPRUNE_PLUGINS.
    """
    from search_spaces.plugins import listing
    from search_spaces.registry import allow_plugins
    from service.config import Settings

    allow_plugins(Settings().plugins)
    found = listing()
    if as_json:
        click.echo(json.dumps(found))
        return
    for kind, names in found.items():
        click.echo(f"{kind}: {', '.join(names) or 'none'}")
