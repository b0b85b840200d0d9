"""Tensors into JSON without pickle: safetensors bytes, base64-encoded."""

from __future__ import annotations

import base64
from typing import Any

import torch
from safetensors.torch import load, save


def pack(tensors: dict[str, torch.Tensor]) -> str:
    return base64.b64encode(save({k: v.detach().contiguous() for k, v in tensors.items()})).decode("ascii")


def unpack(text: str) -> dict[str, torch.Tensor]:
    return load(base64.b64decode(text))


def pack_optimizer(opt: torch.optim.Optimizer) -> dict[str, Any]:
    """An optimizer's state dict with its tensors packed (Adam: step, exp_avg, exp_avg_sq)."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{idx}.{k}"] = v
            else:
                scalars[f"{idx}.{k}"] = v
    return {"tensors": pack(tensors) if tensors else "", "scalars": scalars, "param_groups": sd["param_groups"]}


def unpack_optimizer(opt: torch.optim.Optimizer, data: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, v in (unpack(data["tensors"]) if data["tensors"] else {}).items():
        idx, _, k = key.partition(".")
        state.setdefault(int(idx), {})[k] = v
    for key, v in data["scalars"].items():
        idx, _, k = key.partition(".")
        state.setdefault(int(idx), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": data["param_groups"]})
