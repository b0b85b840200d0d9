"""Plugin registries: entry points found without importing, the operator's allowlist, and
torchvision/timm names that would need a download refused before anything is built."""

from __future__ import annotations

import socket
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from search_spaces.plugins import DATASET_PLUGINS, METRIC_PLUGINS, MODEL_PLUGINS, listing
from search_spaces.registry import (
    Allowlist,
    DisallowedTargetError,
    NotRegisteredError,
    allow_plugins,
    allowed_plugins,
)
from search_spaces.zoo import DownloadRefusedError, build_model, check_hub_source
from tests.plugin_dist import MODULE, forget, write_plugin_dist, write_tripwire


@pytest.fixture
def plugin_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The test plugin package "installed" on sys.path; calls noted in ``$PLUGIN_CALLS``."""
    calls = tmp_path / "calls.txt"
    monkeypatch.setenv("PLUGIN_CALLS", str(calls))
    monkeypatch.syspath_prepend(str(write_plugin_dist(tmp_path / "site")))
    forget(MODULE)
    yield calls
    forget(MODULE)


def test_allowlist_parses_targets_and_prefixes() -> None:
    a = Allowlist.parse(["mypkg.models:build", " other.pkg. ", "third.*", "fourth", ""])
    assert a.targets == {"mypkg.models:build"}
    assert a.prefixes == ("other.pkg", "third", "fourth")
    assert a.describe() == ["mypkg.models:build", "other.pkg.*", "third.*", "fourth.*"]
    for bad in ["os system", "mypkg:", ":build", "a..b:c", "mypkg.models:build()", "../x", "pkg-name."]:
        with pytest.raises(ValueError, match="allowlist entry"):
            Allowlist.parse([bad])


def test_allowlist_matches_exact_targets_and_whole_module_prefixes() -> None:
    a = Allowlist.parse(["mypkg.models:build", "plugs.", "exact:Factory.make"])
    assert a.allows("mypkg.models:build") and a.allows("exact:Factory.make")
    assert not a.allows("mypkg.models:other") and not a.allows("mypkg.models.sub:build")
    assert a.allows("plugs:fn") and a.allows("plugs.deep.er:fn")
    assert not a.allows("plugsevil:fn")  # a prefix ends at a module boundary
    assert not a.allows("plugs.mod:os.system")  # one attribute deep, not a path through imports
    assert not a.allows("plugs.mod:_private")
    assert not a.allows("os:system") and not a.allows("plugs")


def test_entry_points_are_listed_and_checked_without_importing(plugin_dist: Path) -> None:
    assert MODEL_PLUGINS.names() == ["quadnet"] and "quadnet" in MODEL_PLUGINS
    assert DATASET_PLUGINS.names() == ["four_digits"]
    assert METRIC_PLUGINS.names() == ["counted_accuracy"]
    assert MODEL_PLUGINS.target("quadnet") == f"{MODULE}:build_quadnet"
    assert MODEL_PLUGINS.check("quadnet") == "quadnet"
    assert listing() == {"models": ["quadnet"], "datasets": ["four_digits"], "metrics": ["counted_accuracy"]}
    assert MODULE not in sys.modules and not plugin_dist.exists()  # nothing was imported
    # a module that is importable but not registered is not a plugin, however it is spelled
    for ref in (f"{MODULE}:build_quadnet", "os:system", "quadnet2"):
        with pytest.raises(NotRegisteredError, match="registered: quadnet") as info:
            MODEL_PLUGINS.check(ref)
        assert "autoprune.models" in str(info.value)
    assert MODULE not in sys.modules

    net = build_model("entrypoint:quadnet", num_classes=4, in_channels=1, trusted=False)
    assert net(torch.zeros(2, 1, 8, 8)).shape == (2, 4)
    assert plugin_dist.read_text().splitlines() == ["imported"]


def test_allowed_targets_load_and_others_are_refused_unimported(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "IMPORTED"
    site = tmp_path / "site"
    site.mkdir()
    write_tripwire(site, "tripwire_mod", marker)
    (site / "plug_ok.py").write_text("from os import system\n\ndef metric(model, loader):\n    return 0.5\n")
    monkeypatch.syspath_prepend(str(site))
    forget("tripwire_mod", "plug_ok")
    previous = allow_plugins(["plug_ok"])
    try:
        assert allowed_plugins().prefixes == ("plug_ok",)
        assert METRIC_PLUGINS.load("plug_ok:metric")(None, None) == 0.5
        # allowed by prefix, but the object was only imported into the module: refused
        with pytest.raises(DisallowedTargetError, match="outside the allowed prefix"):
            METRIC_PLUGINS.load("plug_ok:system")
        with pytest.raises(NotRegisteredError, match="plug_ok.*"):
            METRIC_PLUGINS.load("tripwire_mod:metric")
        assert "tripwire_mod" not in sys.modules and not marker.exists()
        # the operator's own call may import anything it names
        METRIC_PLUGINS.load("tripwire_mod:metric", trusted=True)
        assert marker.read_text() == "imported"
    finally:
        allow_plugins(previous)
        forget("tripwire_mod", "plug_ok")


# --- torchvision / timm: nothing is downloaded -----------------------------------------------
@pytest.mark.parametrize(("source", "words"), [
    ("timm:resnet50.a1_in1k", ["pretrained", "'a1_in1k'", "download", "timm:resnet50"]),
    ("timm:hf-hub:timm/resnet50.a1_in1k", ["timm:<architecture>", "download"]),
    ("torchvision:resnet18:IMAGENET1K_V1", ["torchvision:<architecture>", "download"]),
    ("torchvision:", ["torchvision:<architecture>"]),
    ("hub:resnet18", ["unknown model source"]),
])
def test_names_that_need_a_download_fail_at_once(source: str, words: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        check_hub_source(source)
    for w in words:
        assert w in str(info.value), (source, str(info.value))
    with pytest.raises(ValueError):  # build_model refuses the same, before importing the hub
        build_model(source)
    assert "timm" not in sys.modules and "torchvision" not in sys.modules


def test_missing_torchvision_or_timm_is_a_clear_error() -> None:
    if "torchvision" in sys.modules or "timm" in sys.modules:
        pytest.skip("torchvision/timm are installed here")
    for source, package in (("torchvision:resnet18", "torchvision"), ("timm:resnet18", "timm")):
        with pytest.raises(ValueError, match=f"needs the '{package}' package, which is not installed"):
            build_model(source)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"a network connection was attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _fake_torchvision(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, seen: dict[str, Any]) -> None:
    """A stand-in for torchvision.models (not installed here) whose detection-style builder
    downloads an ImageNet backbone unless told ``weights_backbone=None``, as torchvision's do."""
    def fasterrcnn_like(*, weights: Any = None, weights_backbone: Any = "IMAGENET1K_V1",
                        num_classes: int = 91) -> torch.nn.Module:
        seen.update(weights=weights, weights_backbone=weights_backbone, num_classes=num_classes)
        if weights_backbone is not None:
            torch.hub.load_state_dict_from_url("https://download.pytorch.org/models/resnet50.pth",
                                               model_dir=str(tmp_path / "hub"))
        return torch.nn.Linear(3, num_classes)

    def downloads_anyway(*, weights: Any = None, num_classes: int = 1000) -> torch.nn.Module:
        torch.hub.load_state_dict_from_url("https://download.pytorch.org/models/x.pth",
                                           model_dir=str(tmp_path / "hub"))
        return torch.nn.Linear(3, num_classes)

    builders = {"fasterrcnn_like": fasterrcnn_like, "downloads_anyway": downloads_anyway}

    def get_model_builder(name: str) -> Any:
        if name not in builders:
            raise ValueError(f"Unknown model {name}")
        return builders[name]

    models = types.ModuleType("torchvision.models")
    models.get_model_builder = get_model_builder  # type: ignore[attr-defined]
    package = types.ModuleType("torchvision")
    package.models = models  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torchvision", package)
    monkeypatch.setitem(sys.modules, "torchvision.models", models)


def test_torchvision_builds_without_weights_and_never_downloads(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_network: None
) -> None:
    seen: dict[str, Any] = {}
    _fake_torchvision(monkeypatch, tmp_path, seen)
    real_download = torch.hub.download_url_to_file
    model = build_model("torchvision:fasterrcnn_like", num_classes=7)
    assert seen == {"weights": None, "weights_backbone": None, "num_classes": 7}
    assert model.out_features == 7
    with pytest.raises(DownloadRefusedError, match="tried to download .*never downloads weights"):
        build_model("torchvision:downloads_anyway")
    assert torch.hub.download_url_to_file is real_download  # the guard is gone afterwards
    with pytest.raises(ValueError, match="torchvision has no model 'nope'"):
        build_model("torchvision:nope")
    with pytest.raises(ValueError, match="3 input channels"):
        build_model("torchvision:fasterrcnn_like", in_channels=1)
