"""Depth for CNNs: which residual blocks can be removed whole, and removing them.

A block is removable when its output is its input plus a residual branch of the same shape
(an identity shortcut): without the branch it passes its input on. The rule is conservative —
known block types only, checked on their attributes — rather than traced: a traced ``x + f(x)``
does not say whether an activation after the add changes ``x`` (ResNet's ``relu(x + f(x))``).
For the post-add ReLU blocks the removed block is ``relu(x)``, which is ``x`` when the block's
input is never negative (the previous block or the stem ends in a ReLU); :func:`removable_blocks`
checks that on the example input and leaves out a block whose input is not.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from search_spaces.measure import hooked_pass
from search_spaces.space import Group, LayerCost, Unit


def _identity_shortcut(m: nn.Module) -> tuple[bool, bool] | None:
    """(removable, needs a non-negative input) for a known residual block; None for any other."""
    kind = type(m)
    name = f"{kind.__module__}.{kind.__qualname__}"
    if name == "search_spaces.models.resnet_cifar.BasicBlock":
        return isinstance(getattr(m, "shortcut", None), nn.Identity), True
    if name == "search_spaces.models.mobilenetv2_cifar.InvertedResidual":
        return bool(getattr(m, "use_res", False)), False  # x + conv(x): no activation after the add
    return None


def removable_blocks(model: nn.Module, example_input: torch.Tensor, ignore: Sequence[str] = ()) -> list[str]:
    """Names of the model's removable residual blocks, in network order (none holds an ignored
    module; a post-add-ReLU block only when its input on ``example_input`` is non-negative)."""
    found: list[tuple[str, bool]] = []
    for name, m in model.named_modules():
        rule = _identity_shortcut(m)
        if rule is None or not rule[0] or any(i == name or i.startswith(f"{name}.") for i in ignore):
            continue
        if any(name.startswith(f"{outer}.") for outer, _ in found):
            continue  # a block inside a removable block goes with it
        found.append((name, rule[1]))
    modules = dict(model.named_modules())
    negative: set[str] = set()

    def watch(name: str):  # type: ignore[no-untyped-def]
        def fn(module: nn.Module, args: tuple) -> None:
            if isinstance(args[0], torch.Tensor) and bool((args[0] < 0).any()):
                negative.add(name)

        return fn

    hooked_pass(model, example_input,
                [modules[n].register_forward_pre_hook(watch(n)) for n, relu_after in found if relu_after])
    return [n for n, _ in found if n not in negative]


def units_of(names: Iterable[str], kind: str, groups: Sequence[Group], costs: Sequence[LayerCost]) -> tuple[Unit, ...]:
    """The space's record of each removable module: the groups wholly inside it (every layer of
    theirs under its name) and the costs of its layers."""
    units = []
    for index, name in enumerate(names):
        prefix = f"{name}."
        inside = [c for c in costs if c.name.startswith(prefix)]
        units.append(
            Unit(
                name=name,
                index=index,
                kind=kind,
                groups=tuple(g.name for g in groups if g.layers and all(m.startswith(prefix) for m in g.layers)),
                costs=tuple(c.name for c in inside),
                macs=sum(c.macs for c in inside),
                params=sum(c.params for c in inside),
            )
        )
    return tuple(units)


def remove_blocks(model: nn.Module, names: Iterable[str]) -> nn.Module:
    """Replaces each named block of ``model`` IN PLACE by ``nn.Identity`` (its input passed on)."""
    for name in names:
        parent, _, child = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        setattr(owner, child, nn.Identity())
    return model
