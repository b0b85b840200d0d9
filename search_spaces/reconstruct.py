"""Layer-wise least-squares reconstruction of a pruned model (Channel Pruning / ThiNet / AMC).

Pruning a group removes channels that the next layer (its *consumer*: the conv/linear reading
them) had learnt to use. Instead of fine-tuning, refit each consumer's weights so that, on a few
calibration batches, its outputs match the dense model's outputs of the same layer:

    W' = argmin ||X_p W - Y_d||² + λ ||W - W_0||²

where X_p are the consumer's inputs *in the pruned network* (so errors of earlier layers are
corrected too), Y_d the dense layer's outputs (at the kept output channels), W_0 the plainly
pruned weights and λ a small ridge (relative to the inputs' energy) that keeps ill-posed fits
near W_0. A k×k conv is a linear map of its input patches: rows are sampled output positions,
columns the in·k·k patch values (the unfolded input, gathered only at the sampled positions).

All calibration batches run as ONE forward pass in BatchNorm-training mode with a forward
pre-hook on every consumer: each layer is refit just before it runs, on inputs that already
reflect the refits upstream, and each BatchNorm's running statistics are re-estimated on what it
then sees (cumulative average, as ``recalibrate_bn``). One pass: reconstruction and BN
recalibration together. Grouped (depthwise) convs and non-zero padding modes are left as they are.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from search_spaces.measure import hooked_pass

_Layer = nn.Conv1d | nn.Conv2d | nn.Linear


def _supported(m: nn.Module) -> bool:
    if isinstance(m, nn.Linear):
        return True
    if isinstance(m, nn.Conv1d | nn.Conv2d):
        return m.groups == 1 and m.padding_mode == "zeros" and not isinstance(m.padding, str)
    return False


@dataclass
class _Target:
    rows: torch.Tensor  # flat indices into (batch, *output spatial) of the sampled positions
    spatial: tuple[int, ...]  # the output's spatial shape (empty for a linear layer)
    y: torch.Tensor  # dense outputs at those positions: (rows, out_channels)


def _flat_outputs(out: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """(positions, channels) view of a layer's output."""
    if isinstance(layer, nn.Linear):
        return out.reshape(-1, out.shape[-1])
    return out.movedim(1, -1).reshape(-1, out.shape[1])


def _patches(x: torch.Tensor, layer: _Layer, target: _Target) -> torch.Tensor:
    """The layer's input at the sampled output positions: (rows, in·k·k), the weight's layout."""
    if isinstance(layer, nn.Linear):
        return x.reshape(-1, x.shape[-1])[target.rows]
    dims = len(target.spatial)
    assert not isinstance(layer.padding, str)  # _supported leaves string paddings out
    pad = [p for p in reversed(layer.padding) for _ in (0, 1)]
    xp = nn.functional.pad(x, pad) if any(pad) else x
    # unravel the flat row index into (n, o_1, ..., o_d)
    rest = target.rows
    coords = []
    for size in reversed(target.spatial):
        coords.append(rest % size)
        rest = rest // size
    n, outs = rest, coords[::-1]
    cols = []
    for offset in _offsets(layer.kernel_size):
        idx = [
            outs[d] * layer.stride[d] + offset[d] * layer.dilation[d] for d in range(dims)
        ]
        at: tuple[torch.Tensor | slice, ...] = (n, slice(None), *idx)
        cols.append(xp[at])  # (rows, in_channels)
    return torch.stack(cols, dim=-1).reshape(len(target.rows), -1)


def _offsets(kernel: Sequence[int]) -> list[tuple[int, ...]]:
    grid = torch.cartesian_prod(*[torch.arange(k) for k in kernel]).reshape(-1, len(kernel))
    return [tuple(int(v) for v in row) for row in grid]


class DenseTargets:
    """The dense model's layer outputs on the calibration inputs, at sampled positions.

    Computed once (one forward pass of the dense model) and reused for every policy. ``max_rows``
    caps the positions per layer (drawn with a fixed seed): a least-squares fit of ``d`` unknowns
    needs a few times ``d`` rows, not every pixel of every image.
    """

    def __init__(
        self, dense: nn.Module, inputs: torch.Tensor, *, max_rows: int = 4096, seed: int = 0
    ) -> None:
        self.inputs = inputs
        self.targets: dict[str, _Target] = {}
        gen = torch.Generator().manual_seed(seed)
        layers = {n: m for n, m in dense.named_modules() if _supported(m)}

        def keep(name: str, out: torch.Tensor) -> None:  # sampled at once: never every pixel
            flat = _flat_outputs(out, layers[name])
            rows = torch.randperm(flat.shape[0], generator=gen)[:max_rows].sort().values
            spatial = () if isinstance(layers[name], nn.Linear) else tuple(out.shape[2:])
            rows = rows.to(flat.device)
            self.targets[name] = _Target(rows, spatial, flat[rows].clone())

        hooked_pass(dense, inputs, [
            m.register_forward_hook(lambda _m, _i, out, name=name: keep(name, out))
            for name, m in layers.items()
        ])


def _solve(x: torch.Tensor, y: torch.Tensor, w0: torch.Tensor, ridge: float) -> torch.Tensor:
    """argmin ||x w - y||² + λ||w - w0||², λ = ridge · mean diagonal of xᵀx; w: (d, out)."""
    xtx = (x.T @ x).double()
    xty = (x.T @ y).double()
    lam = ridge * float(xtx.diagonal().mean()) + 1e-12
    a = xtx + lam * torch.eye(xtx.shape[0], dtype=xtx.dtype, device=xtx.device)
    b = xty + lam * w0.double()
    return torch.linalg.lstsq(a, b).solution.to(w0.dtype)


def consumers(pruned: nn.Module, dense: nn.Module) -> list[str]:
    """Supported layers whose inputs lost channels: the ones pruning broke, in network order."""
    dense_modules = dict(dense.named_modules())
    out = []
    for name, m in pruned.named_modules():
        d = dense_modules.get(name)
        if _supported(m) and d is not None and m.weight.shape[1] < d.weight.shape[1]:
            out.append(name)
    return out


@torch.no_grad()
def reconstruct(
    pruned: nn.Module,
    dense: nn.Module,
    targets: DenseTargets,
    kept_out: Mapping[str, Sequence[int]],
    *,
    layers: Sequence[str] | None = None,
    ridge: float = 1e-3,
) -> list[str]:
    """Refits ``layers`` (default: every consumer of a pruned group) and recalibrates BatchNorm.

    ``kept_out`` maps a layer whose own outputs were pruned to the dense indices it kept
    (``apply_policy(..., kept_out=...)``). Returns the names of the layers refit; the model is
    left in eval mode.
    """
    modules = dict(pruned.named_modules())
    names = list(layers) if layers is not None else consumers(pruned, dense)
    names = [n for n in names if n in targets.targets and _supported(modules[n])]

    def refit(name: str, layer: _Layer, x: torch.Tensor) -> None:
        target = targets.targets[name]
        y = target.y
        if name in kept_out:
            y = y[:, torch.as_tensor(list(kept_out[name]), device=y.device)]
        cols = _patches(x, layer, target)
        w0 = layer.weight.reshape(layer.weight.shape[0], -1).T
        if layer.bias is not None:
            cols = torch.cat([cols, torch.ones_like(cols[:, :1])], dim=1)
            w0 = torch.cat([w0, layer.bias[None, :]], dim=0)
        w = _solve(cols, y, w0, ridge)
        if layer.bias is not None:
            layer.bias.copy_(w[-1])
            w = w[:-1]
        layer.weight.copy_(w.T.reshape(layer.weight.shape))

    hooks = [
        modules[n].register_forward_pre_hook(
            lambda m, args, name=n: refit(name, m, args[0])  # type: ignore[arg-type]
        )
        for n in names
    ]
    bns = [m for m in pruned.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = {m: m.momentum for m in bns}
    pruned.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # one batch: the running stats become that batch's statistics
        m.train()
    try:
        pruned(targets.inputs)
    finally:
        for h in hooks:
            h.remove()
        for m, mom in saved.items():
            m.momentum = mom
        pruned.eval()
    return names


def output_error(model: nn.Module, dense: nn.Module, layer: str, inputs: torch.Tensor,
                 kept: Sequence[int] | None = None) -> float:
    """Relative (L2) error of ``layer``'s output in ``model`` vs ``dense``, both in eval mode.

    ``kept``: the dense output channels the pruned layer kept (all when None).
    """
    got: dict[str, torch.Tensor] = {}

    with torch.no_grad():
        for key, mod in (("model", model), ("dense", dense)):
            h = dict(mod.named_modules())[layer].register_forward_hook(lambda _m, _i, out, key=key: got.__setitem__(key, out))
            mod.eval()
            mod(inputs)
            h.remove()
    ref = got["dense"]
    if kept is not None:
        ref = ref[:, list(kept)]
    err = (got["model"] - ref).pow(2).sum() / ref.pow(2).sum().clamp_min(1e-12)
    return math.sqrt(float(err))
