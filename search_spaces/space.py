"""The search space: what can be pruned, and what a policy costs, without touching a model.

A :class:`SearchSpace` is built once from a model (see ``search_spaces.build.build_space``) and is
then a plain, serialisable value: agents read it, the service stores it, workers use it to check
and key policies. Its cost model (``macs`` / ``params``) is analytic, so an agent can bisect a ratio
to a budget thousands of times per second; ``apply_policy`` guarantees the real pruned model has
exactly the channel counts that :meth:`SearchSpace.kept_channels` predicts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

#: A compression policy: group name -> fraction of that group's channels to remove (groups left
#: out are not pruned: ratio 0) and, in a space with ``int8`` among its precisions,
#: ``bits_key(group) -> 8.0`` for each group whose layers run in int8 (left out: fp32) and, in a
#: space with depth (``SearchSpace.units``), ``keep_key(unit) -> 0.0`` for each removed block or
#: layer (left out: kept). One flat mapping of floats, so every place that stores, sends or shows
#: a policy carries precision and depth as is.
Policy = dict[str, float]

#: the precisions a space can offer, by their bits in a policy
PRECISION_BITS = {"fp32": 32, "int8": 8}
BITS_SUFFIX = "@bits"


def bits_key(group: str) -> str:
    """The policy entry holding ``group``'s precision in bits."""
    return f"{group}{BITS_SUFFIX}"


def is_bits_key(key: str) -> bool:
    return key.endswith(BITS_SUFFIX)


KEEP_SUFFIX = "@keep"


def keep_key(unit: str) -> str:
    """The policy entry saying whether ``unit`` is kept (1.0, or absent) or removed (0.0)."""
    return f"{unit}{KEEP_SUFFIX}"


def is_keep_key(key: str) -> bool:
    return key.endswith(KEEP_SUFFIX)

#: ``round_to`` is a fixed channel multiple, "auto" (a step that scales with the group's width) or
#: "runtime" ("auto", but never finer than the channel multiple the job's runtime runs fastest,
#: ``SearchSpace.runtime_step``, measured on the target when the task is loaded).
RoundTo = int | Literal["auto", "runtime"]


def auto_step(channels: int) -> int:
    """The "auto" rounding step: channels // 16, rounded down to a power of two (at least 1).

    A 16- or 31-channel group moves one channel at a time, 64 channels in steps of 4, 512 in
    steps of 32: every group has about 16 widths (fewer below ``max_ratio``), where a fixed
    ``round_to: 8`` leaves a 16-channel ResNet stage two.
    """
    return 1 << max(0, (max(1, channels // 16)).bit_length() - 1)


def parse_round_to(value: Any) -> RoundTo:
    """``"auto"``, ``"runtime"`` or an integer >= 1 (as given in a spec, a stored space or on the
    command line)."""
    if value in ("auto", "runtime"):
        return value  # type: ignore[no-any-return]
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"round_to must be 'auto' or an integer >= 1, or 'runtime', got {value!r}")
    return value


class PolicyError(ValueError):
    """A policy that cannot be applied to a space; the message names the group and the reason."""

    def __init__(self, group: str, reason: str) -> None:
        super().__init__(f"policy group {group!r}: {reason}")
        self.group = group
        self.reason = reason


@dataclass(frozen=True)
class Group:
    """One set of coupled channels that is pruned as a unit (and so shares one ratio).

    The features are what an agent sees as its state for this group (AMC's layer embedding).
    ``name`` is the qualified name of the group's root module (the layer whose output channels
    the group removes), stable across copies of the same architecture.
    """

    name: str
    index: int
    kind: str  # "conv", "conv1d", "depthwise", "linear", "attention", "heads", "mlp", "hidden"
    channels: int  # prunable channels of the root layer (its output channels; heads for "heads")
    in_channels: int
    kernel: int
    stride: int
    macs: int  # dense MACs of every layer the group touches (outputs or inputs)
    params: int  # dense parameters of every layer the group touches
    layers: tuple[str, ...] = ()  # module names coupled in this group, for display
    round_to: int = 1  # kept channels are a multiple of this (heads for attention, say)
    min_channels: int = 1
    # Channel importance under the space's criterion, ascending and normalised by the group's
    # mean: lets the ``global`` agent rank channels across groups without seeing the model.
    importance: tuple[float, ...] = ()
    #: the conv/linear layers whose precision this group's choice sets: those whose outputs it
    #: prunes (CNNs), a transformer layer's attention or MLP linears
    weights: tuple[str, ...] = ()


@dataclass(frozen=True)
class LayerCost:
    """Dense cost of one piece of the network and the groups whose keep-fractions scale it.

    A conv whose outputs belong to group A and inputs to group B has ``scale_by=("A", "B")``; a
    depthwise conv tied to A has ``("A",)``; a bias of A, ``("A",)``; the stem's input, nothing.
    """

    name: str
    macs: int
    params: int
    scale_by: tuple[str, ...] = ()


@dataclass(frozen=True)
class Unit:
    """A block or layer that a policy may remove whole, the residual stream passing through.

    CNNs: a residual block whose output is its input plus a branch of the same shape (an
    identity shortcut); transformers: an encoder layer (attention and MLP). ``name`` is the
    module's qualified name; ``index`` its position among the space's units.
    """

    name: str
    index: int
    kind: str  # "block" (CNN residual block) or "layer" (transformer encoder layer)
    #: the groups wholly inside the unit: their widths (and precisions) stop mattering once it goes
    groups: tuple[str, ...]
    #: the names of the ``LayerCost`` entries that vanish with it
    costs: tuple[str, ...]
    macs: int  # dense MACs of its layers
    params: int  # dense parameters of its layers


@dataclass(frozen=True)
class SearchSpace:
    """The groups of a model, their bounds, and an analytic cost model."""

    groups: tuple[Group, ...]
    costs: tuple[LayerCost, ...]
    dense_macs: int
    dense_params: int
    input_shape: tuple[int, ...]  # one example, without the batch dimension
    max_ratio: float = 0.8
    round_to: RoundTo = "auto"
    ignored: tuple[str, ...] = ()
    #: with ``round_to: "runtime"``: the channel multiple the job's runtime runs fastest
    #: (``workers.latency_table.resolve_round_to`` measures it; 1, i.e. plain "auto", until then)
    runtime_step: int = 1
    #: the precisions a policy may give a group (``search_space.precision``); fp32 only: widths only
    precisions: tuple[str, ...] = ("fp32",)
    #: the blocks/layers a policy may remove (``search_space.depth``); none: widths only
    units: tuple[Unit, ...] = ()
    _by_name: dict[str, Group] = field(default=None, repr=False, compare=False)  # type: ignore[assignment,arg-type]
    _units_by_name: dict[str, Unit] = field(default=None, repr=False, compare=False)  # type: ignore[assignment,arg-type]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {g.name: g for g in self.groups})
        object.__setattr__(self, "_units_by_name", {u.name: u for u in self.units})

    # --- groups -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.groups)

    def group(self, name: str) -> Group:
        try:
            return self._by_name[name]
        except KeyError:
            raise PolicyError(name, "unknown group") from None

    @property
    def names(self) -> list[str]:
        return [g.name for g in self.groups]

    # --- rounding -----------------------------------------------------------------------------
    def kept_channels(self, group: Group | str, ratio: float) -> int:
        """Channels the group keeps at ``ratio``: prune floor(n·ratio), round kept up to a step."""
        g = self.group(group) if isinstance(group, str) else group
        n = g.channels
        step = self.step(g)
        kept = n - math.floor(n * ratio + 1e-9)
        kept = min(n, math.ceil(kept / step) * step)
        return max(kept, min(n, max(g.min_channels, step)))

    def step(self, group: Group | str) -> int:
        """Granularity of kept channels: the space's ``round_to`` combined with the group's own."""
        g = self.group(group) if isinstance(group, str) else group
        if g.kind == "heads":  # a head is already the unit: rounding 12 heads to 8 leaves 2 levels
            return max(1, g.round_to)
        if self.round_to == "auto":
            base = auto_step(g.channels)
        elif self.round_to == "runtime":
            base = auto_step(g.channels)
            # the runtime's multiple, halved until the group has two widths: a 16-channel group
            # under a step of 16 moves by 8 rather than falling back to single channels
            fast = max(1, self.runtime_step)
            while fast > 1 and fast >= g.channels:
                fast //= 2
            base = max(base, fast)
        else:
            base = max(1, self.round_to)
        step = math.lcm(base, max(1, g.round_to))
        return step if step < g.channels else max(1, g.round_to)

    def levels(self, group: Group | str) -> list[int]:
        """Every kept-channel count reachable within ``max_ratio``, ascending."""
        g = self.group(group) if isinstance(group, str) else group
        lowest = self.kept_channels(g, self.max_ratio)
        step = self.step(g)
        levels = list(range(lowest, g.channels, step))
        return [*levels, g.channels]

    def ratio_for(self, group: Group | str, kept: int) -> float:
        """The smallest ratio whose rounding keeps exactly ``kept`` channels."""
        g = self.group(group) if isinstance(group, str) else group
        return (g.channels - kept) / g.channels

    # --- policies -----------------------------------------------------------------------------
    def validate(self, policy: Mapping[str, float]) -> Policy:
        """Checks a policy and returns it complete (every group's ratio present, and a bits entry
        for each int8 group only), or raises PolicyError."""
        int8, removed = [], []
        for name, value in policy.items():
            if is_keep_key(name):
                if self._check_keep(name.removesuffix(KEEP_SUFFIX), value):
                    removed.append(name.removesuffix(KEEP_SUFFIX))
                continue
            if is_bits_key(name):
                group = name.removesuffix(BITS_SUFFIX)
                self.group(group)
                bits = {int(b) for b in (PRECISION_BITS[p] for p in self.precisions)}
                if isinstance(value, bool) or value not in bits:
                    offered = ", ".join(f"{b} ({p})" for p, b in PRECISION_BITS.items() if p in self.precisions)
                    raise PolicyError(group, f"bits must be one of {offered}, got {value!r}")
                if value == PRECISION_BITS["int8"]:
                    int8.append(group)
                continue
            self.group(name)
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise PolicyError(name, f"ratio must be a number, got {type(value).__name__}")
            if math.isnan(value) or math.isinf(value):
                raise PolicyError(name, f"ratio must be finite, got {value}")
            if not 0.0 <= value <= self.max_ratio + 1e-9:
                raise PolicyError(name, f"ratio {value:g} is outside [0, {self.max_ratio:g}]")
        out = {g.name: float(policy.get(g.name, 0.0)) for g in self.groups}
        return self.with_removed(self.with_int8(out, int8), removed)

    def _check_keep(self, unit: str, value: Any) -> bool:
        """Whether a keep entry removes ``unit`` (0), or a PolicyError naming it."""
        self.unit(unit)
        if isinstance(value, bool) or not isinstance(value, int | float) or value not in (0, 1):
            raise PolicyError(unit, f"keep must be 1 (kept) or 0 (removed), got {value!r}")
        return value == 0

    # --- precision ----------------------------------------------------------------------------
    @property
    def quantizable(self) -> bool:
        """Whether policies may put groups in int8."""
        return "int8" in self.precisions

    def int8_groups(self, policy: Mapping[str, float]) -> list[str]:
        """The groups ``policy`` runs in int8, in network order (not those of a removed unit:
        their layers are gone)."""
        eight = PRECISION_BITS["int8"]
        gone = self.removed_groups(policy)
        return [g.name for g in self.groups if policy.get(bits_key(g.name)) == eight and g.name not in gone]

    def int8_layers(self, policy: Mapping[str, float]) -> list[str]:
        """The conv/linear layers ``policy`` runs in int8 (the int8 groups' ``weights``, less those
        inside a removed unit: a residual chain's group has layers in the blocks it runs through)."""
        return [w for name in self.int8_groups(policy) for w in self.group(name).weights
                if not self.in_removed(w, policy)]

    def widths(self, policy: Mapping[str, float]) -> Policy:
        """``policy``'s architecture alone (its ratios and removed units), every layer fp32."""
        return {k: float(v) for k, v in policy.items() if not is_bits_key(k)}

    def with_int8(self, policy: Mapping[str, float], groups: Iterable[str]) -> Policy:
        """``policy``'s architecture with exactly ``groups`` in int8."""
        out = self.widths(policy)
        chosen = set(groups)
        if chosen and not self.quantizable:
            raise PolicyError(sorted(chosen)[0], "int8 is not among this space's precisions "
                                                 "(search_space.precision)")
        eight = float(PRECISION_BITS["int8"])
        out.update({bits_key(g.name): eight for g in self.groups if g.name in chosen})
        return out

    def kept(self, policy: Mapping[str, float]) -> dict[str, int]:
        return {g.name: self.kept_channels(g, policy.get(g.name, 0.0)) for g in self.groups}

    def signature(self, policy: Mapping[str, float]) -> str:
        """The compressed model as a string: kept channels, then the int8 groups' indices and the
        removed units' indices when there are any (equal policies share it; an all-fp32 policy
        that removes nothing has its widths alone). A removed unit's groups read as dense."""
        gone = self.removed_groups(policy)
        widths = "-".join(
            str(self.group(n).channels if n in gone else k) for n, k in self.kept(policy).items()
        )
        int8 = self.int8_groups(policy)
        if int8:
            widths = f"{widths}|int8:" + ",".join(str(self.group(g).index) for g in int8)
        dropped = self.removed_units(policy)
        if dropped:
            widths = f"{widths}|drop:" + ",".join(str(self.unit(u).index) for u in dropped)
        return widths

    def round(self, policy: Mapping[str, float]) -> Policy:
        """The canonical policy of the same model (each ratio the smallest that rounds to it, the
        same groups in int8, the same units removed; a removed unit's groups dense and fp32)."""
        gone = self.removed_groups(policy)
        rounded = {n: 0.0 if n in gone else self.ratio_for(n, k) for n, k in self.kept(policy).items()}
        return self.with_removed(self.with_int8(rounded, self.int8_groups(policy)), self.removed_units(policy))

    # --- depth --------------------------------------------------------------------------------
    @property
    def depth(self) -> bool:
        """Whether policies may remove blocks/layers."""
        return bool(self.units)

    def unit(self, name: str) -> Unit:
        try:
            return self._units_by_name[name]
        except KeyError:
            raise PolicyError(name, "unknown removable block/layer") from None

    def removed_units(self, policy: Mapping[str, float]) -> list[str]:
        """The units ``policy`` removes, in network order."""
        return [u.name for u in self.units if policy.get(keep_key(u.name)) == 0.0]

    def in_removed(self, layer: str, policy: Mapping[str, float]) -> bool:
        """Whether module ``layer`` lies inside a unit ``policy`` removes."""
        return layer.startswith(tuple(f"{u}." for u in self.removed_units(policy)))

    def kept_units(self, policy: Mapping[str, float]) -> list[str]:
        """The units ``policy`` keeps, in network order (what an artifact lists as ``kept_layers``)."""
        return [u.name for u in self.units if policy.get(keep_key(u.name)) != 0.0]

    def removed_groups(self, policy: Mapping[str, float]) -> set[str]:
        """The groups inside the units ``policy`` removes (their widths do not matter)."""
        return {g for u in self.removed_units(policy) for g in self.unit(u).groups}

    def with_removed(self, policy: Mapping[str, float], units: Iterable[str]) -> Policy:
        """``policy`` with exactly ``units`` removed (its widths and precisions as they are)."""
        out = {k: float(v) for k, v in policy.items() if not is_keep_key(k)}
        for name in dict.fromkeys(units):
            self.unit(name)
            out[keep_key(name)] = 0.0
        return out

    # --- analytic cost ------------------------------------------------------------------------
    def _fractions(self, policy: Mapping[str, float]) -> dict[str, float]:
        return {g.name: self.kept_channels(g, policy.get(g.name, 0.0)) / g.channels for g in self.groups}

    def _live_costs(self, policy: Mapping[str, float]) -> list[LayerCost]:
        """The costs left once ``policy``'s removed units are gone."""
        dropped = self.removed_units(policy)
        if not dropped:
            return list(self.costs)
        gone = {c for u in dropped for c in self.unit(u).costs}
        return [c for c in self.costs if c.name not in gone]

    def macs(self, policy: Mapping[str, float]) -> float:
        frac = self._fractions(policy)
        return sum(c.macs * math.prod(frac[g] for g in c.scale_by) for c in self._live_costs(policy))

    def params(self, policy: Mapping[str, float]) -> float:
        frac = self._fractions(policy)
        return sum(c.params * math.prod(frac[g] for g in c.scale_by) for c in self._live_costs(policy))

    def macs_ratio(self, policy: Mapping[str, float]) -> float:
        return self.macs(policy) / self.dense_macs

    def params_ratio(self, policy: Mapping[str, float]) -> float:
        return self.params(policy) / self.dense_params

    def uniform(self, ratio: float) -> Policy:
        return {g.name: ratio for g in self.groups}

    # --- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "groups": [asdict(g) for g in self.groups],
            "costs": [asdict(c) for c in self.costs],
            "dense_macs": self.dense_macs,
            "dense_params": self.dense_params,
            "input_shape": list(self.input_shape),
            "max_ratio": self.max_ratio,
            "round_to": self.round_to,
            "ignored": list(self.ignored),
            "runtime_step": self.runtime_step,
            "precisions": list(self.precisions),
            "units": [asdict(u) for u in self.units],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchSpace:
        return cls(
            groups=tuple(
                Group(**{**g, "layers": tuple(g.get("layers", ())), "importance": tuple(g.get("importance", ())),
                         "weights": tuple(g.get("weights", ()))})
                for g in data["groups"]
            ),
            costs=tuple(LayerCost(**{**c, "scale_by": tuple(c["scale_by"])}) for c in data["costs"]),
            dense_macs=int(data["dense_macs"]),
            dense_params=int(data["dense_params"]),
            input_shape=tuple(data["input_shape"]),
            max_ratio=float(data["max_ratio"]),
            round_to=parse_round_to(data["round_to"]),
            ignored=tuple(data.get("ignored", ())),
            runtime_step=int(data.get("runtime_step", 1)),
            precisions=tuple(data.get("precisions", ("fp32",))),
            units=tuple(
                Unit(**{**u, "groups": tuple(u["groups"]), "costs": tuple(u["costs"])})
                for u in data.get("units", ())
            ),
        )
