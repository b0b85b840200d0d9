"""Per-layer int8 by onnxruntime's quantizers: which nodes a layer is, that exactly those turn
int8, that the int8 file still computes the model, and OrtModule as a drop-in torch module."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from search_spaces import apply_policy, build_space
from search_spaces.bundle import export_onnx
from search_spaces.models.resnet_cifar import resnet20
from search_spaces.quantize import OrtModule, module_name, ort_session, quantize_onnx, weight_layers
from search_spaces.transformers.bundle import export_onnx as export_text
from tests.search_spaces.tiny_models import concat_net, tiny_cnn, tiny_encoder
from tests.search_spaces.tiny_text import tiny_embedder, token_batch


def _pruned_resnet20() -> nn.Module:
    model, x = resnet20().eval(), torch.randn(1, 3, 32, 32)
    space = build_space(model, x, round_to=4)
    policy = {g.name: 0.2 + 0.5 * (i % 3) / 2 for i, g in enumerate(space.groups)}
    return apply_policy(model, space, policy, example_input=x).eval()


CNNS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "concat_net": (concat_net, (3, 16, 16)),
    "tiny_encoder": (tiny_encoder, (1, 64)),  # Conv1d, MatMul linears, a Gemm head
    "tiny_cnn": (tiny_cnn, (1, 16, 16)),
    "resnet20": (resnet20, (3, 32, 32)),
    "resnet20_pruned": (_pruned_resnet20, (3, 32, 32)),
}


def _calibration(shape: tuple[int, ...], n: int = 2) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal((8, *shape), dtype=np.float32) for _ in range(n)]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[nn.Module, Path]]:
    """Each model exported once per module: name -> (model, file)."""
    cache: dict[str, tuple[nn.Module, Path]] = {}

    def get(name: str) -> tuple[nn.Module, Path]:
        if name not in cache:
            path = tmp_path_factory.mktemp("quant") / f"{name}.onnx"
            torch.manual_seed(0)
            if name == "text":
                model = tiny_embedder(initializer_range=0.3)  # weights that move the output
                export_text(model, token_batch(1, 16), path)
            else:
                build, shape = CNNS[name]
                model = build().eval()
                export_onnx(model, torch.randn(1, *shape), path)
            cache[name] = (model, path)
        return cache[name]

    return get


def _weight_modules(model: nn.Module) -> set[str]:
    return {n for n, m in model.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))}


def _graph(path: Path) -> onnx.GraphProto:
    return onnx.load(str(path)).graph


def _static_int8(path: Path) -> set[str]:
    """Weight nodes whose weight comes out of a DequantizeLinear of an int8 initializer."""
    g = _graph(path)
    int8 = {t.name for t in g.initializer if t.data_type == onnx.TensorProto.INT8}
    dq = {n.output[0] for n in g.node if n.op_type == "DequantizeLinear" and n.input[0] in int8}
    return {n.name for n in g.node if n.op_type in ("Conv", "Gemm", "MatMul") and n.input[1] in dq}


def _float_weight_nodes(path: Path) -> set[str]:
    g = _graph(path)
    fp32 = {t.name for t in g.initializer if t.data_type == onnx.TensorProto.FLOAT}
    return {n.name for n in g.node if n.op_type in ("Conv", "Gemm", "MatMul") and n.input[1] in fp32}


def test_module_name_follows_the_exporters_scopes() -> None:
    assert module_name("/layer1/layer1.0/conv1/Conv") == "layer1.0.conv1"
    assert module_name("/layer2/layer2.0/shortcut/shortcut.0/Conv") == "layer2.0.shortcut.0"
    assert module_name("/backbone/encoder/layer.0/attention/self/query/MatMul") == \
        "backbone.encoder.layer.0.attention.self.query"
    assert module_name("/features/features.0/features.0.1/Conv_1") == "features.0.1"
    assert module_name("/fc/Gemm") == "fc"


class _Inner(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.sub, self.conv = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1)), nn.Conv2d(8, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.sub[0](x))  # a grandchild called past its container


class _Unusual(nn.Module):
    """Modules reached past their containers: the exporter's scopes drop the ModuleDict's name."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.block = nn.Sequential(nn.Conv2d(3, 8, 3)), _Inner()
        self.heads = nn.ModuleDict({"cls": nn.Linear(8, 4)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads["cls"](self.block(self.stem[0](x)).mean((2, 3)))


def test_module_names_the_scopes_leave_out_are_recovered_from_the_models(tmp_path: Path) -> None:
    model, path = _Unusual().eval(), tmp_path / "unusual.onnx"
    export_onnx(model, torch.randn(1, 3, 16, 16), path)
    assert set(weight_layers(path)) == {"stem.0", "block.sub.0", "block.conv", "cls"}
    names = [n for n, _ in model.named_modules()]
    assert set(weight_layers(path, modules=names)) == _weight_modules(model)
    report = quantize_onnx(path, tmp_path / "q.onnx", int8_layers=["heads.cls"], scheme="static",
                           calibration=_calibration((3, 16, 16)), modules=names)
    assert report.int8_nodes == ("/cls/Gemm",)


@pytest.mark.parametrize("name", list(CNNS))
def test_cnn_mapping_covers_every_weight_node(exported: Callable[..., tuple[nn.Module, Path]],
                                              name: str) -> None:
    model, path = exported(name)
    layers = weight_layers(path)
    assert set(layers) == _weight_modules(model)
    nodes = [n for ns in layers.values() for n in ns]
    g = _graph(path)
    assert sorted(nodes) == sorted(n.name for n in g.node if n.op_type in ("Conv", "Gemm")
                                   or (n.op_type == "MatMul" and name == "tiny_encoder"
                                       and "/attn/MatMul" not in n.name))


def test_text_mapping_covers_every_linear_and_no_attention_product(
        exported: Callable[..., tuple[nn.Module, Path]]) -> None:
    model, path = exported("text")
    layers = weight_layers(path)
    assert set(layers) == _weight_modules(model)  # backbone.encoder.layer.0.attention.self.query...
    assert all(len(ns) == 1 for ns in layers.values())
    inits = {t.name for t in _graph(path).initializer}
    matmuls = {n.name: n for n in _graph(path).node if n.op_type == "MatMul"}
    linear = {k for k, n in matmuls.items() if n.input[1] in inits}
    assert {ns[0] for ns in layers.values()} == linear
    assert len(matmuls) - len(linear) == 2 * 2  # q.k and attention.v in each of two layers: not layers


def test_static_subset_quantizes_exactly_those_layers(
        exported: Callable[..., tuple[nn.Module, Path]], tmp_path: Path) -> None:
    _, path = exported("resnet20_pruned")
    layers = weight_layers(path)
    chosen = list(layers)[::3]
    want = {n for layer in chosen for n in layers[layer]}
    report = quantize_onnx(path, tmp_path / "q.onnx", int8_layers=chosen, scheme="static",
                           calibration=_calibration((3, 32, 32)))
    assert _static_int8(tmp_path / "q.onnx") == want == set(report.int8_nodes)
    rest = {n for ns in layers.values() for n in ns} - want
    assert _float_weight_nodes(tmp_path / "q.onnx") == rest == set(report.fp32_nodes)
    assert report.scheme == "static" and report.bytes == (tmp_path / "q.onnx").stat().st_size


def test_dynamic_subset_quantizes_exactly_those_layers(
        exported: Callable[..., tuple[nn.Module, Path]], tmp_path: Path) -> None:
    _, path = exported("text")
    layers = weight_layers(path)
    chosen = [k for k in layers if ".layer.0." in k or k.endswith("intermediate.dense")]
    want = {n for layer in chosen for n in layers[layer]}
    report = quantize_onnx(path, tmp_path / "q.onnx", int8_layers=chosen, scheme="dynamic")
    g = _graph(tmp_path / "q.onnx")
    integer = [n for n in g.node if n.op_type == "MatMulInteger"]
    assert len(integer) == len(want) == len(report.int8_nodes)
    assert {n.name.removesuffix("_quant") for n in integer} == want
    # one DynamicQuantizeLinear per distinct int8 input (q, k and v share theirs)
    assert 0 < sum(n.op_type == "DynamicQuantizeLinear" for n in g.node) <= len(want)
    assert _float_weight_nodes(tmp_path / "q.onnx") == set(report.fp32_nodes)
    assert set(report.fp32_nodes) == {n for ns in layers.values() for n in ns} - want


@pytest.mark.parametrize("name", ["resnet20", "tiny_encoder"])
def test_all_int8_static_stays_close_to_fp32(
        exported: Callable[..., tuple[nn.Module, Path]], tmp_path: Path, name: str) -> None:
    _, path = exported(name)
    shape = CNNS[name][1]
    quantize_onnx(path, tmp_path / "q.onnx", int8_layers=list(weight_layers(path)), scheme="static",
                  calibration=_calibration(shape, 4))
    x = torch.from_numpy(_calibration(shape, 1)[0])  # the calibrated input distribution
    fp32, int8 = OrtModule(path)(x), OrtModule(tmp_path / "q.onnx")(x)
    # thresholds a broken quantizer fails: another seed's model is nowhere near any of them
    assert F.cosine_similarity(fp32, int8).min() > 0.995
    assert (fp32 - int8).abs().max() < 0.1 * fp32.abs().max()
    assert (fp32.argmax(1) == int8.argmax(1)).float().mean() >= 0.75


def test_all_int8_dynamic_stays_close_to_fp32(
        exported: Callable[..., tuple[nn.Module, Path]], tmp_path: Path) -> None:
    _, path = exported("text")
    quantize_onnx(path, tmp_path / "q.onnx", int8_layers=list(weight_layers(path)), scheme="dynamic")
    ids = token_batch(8, 24, seed=1)
    fp32, int8 = OrtModule(path)(ids), OrtModule(tmp_path / "q.onnx")(ids)
    assert F.cosine_similarity(fp32, int8).min() > 0.995  # another seed's model: far below
    assert not torch.equal(fp32, int8)  # it is int8, not a copy


def test_empty_int8_layers_is_a_plain_copy(exported: Callable[..., tuple[nn.Module, Path]],
                                           tmp_path: Path) -> None:
    _, path = exported("concat_net")
    report = quantize_onnx(path, tmp_path / "q.onnx", int8_layers=[], scheme="static")
    assert (tmp_path / "q.onnx").read_bytes() == path.read_bytes()
    assert report.int8_nodes == () and len(report.fp32_nodes) == 4
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(OrtModule(path)(x), OrtModule(tmp_path / "q.onnx")(x))


def test_bad_requests_name_what_is_wrong(exported: Callable[..., tuple[nn.Module, Path]],
                                         tmp_path: Path) -> None:
    _, path = exported("concat_net")
    with pytest.raises(ValueError, match="'nope.conv'"):
        quantize_onnx(path, tmp_path / "q.onnx", int8_layers=["a.0", "nope.conv"], scheme="dynamic")
    with pytest.raises(ValueError, match="calibration"):
        quantize_onnx(path, tmp_path / "q.onnx", int8_layers=["a.0"], scheme="static")
    with pytest.raises(ValueError, match="scheme"):
        quantize_onnx(path, tmp_path / "q.onnx", int8_layers=["a.0"], scheme="qat")  # type: ignore[arg-type]
    assert not (tmp_path / "q.onnx").exists()


def test_calibration_cache_replaces_the_batches(exported: Callable[..., tuple[nn.Module, Path]],
                                                tmp_path: Path) -> None:
    _, path = exported("concat_net")
    cache, layers = tmp_path / "ranges.json", list(weight_layers(path))
    quantize_onnx(path, tmp_path / "a.onnx", int8_layers=layers, scheme="static",
                  calibration=_calibration((3, 16, 16)), calibration_cache=cache)
    assert cache.is_file()
    quantize_onnx(path, tmp_path / "b.onnx", int8_layers=layers, scheme="static", calibration_cache=cache)
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


def test_ort_module_is_the_session_behind_a_torch_forward(
        exported: Callable[..., tuple[nn.Module, Path]]) -> None:
    model, path = exported("text")
    ids = token_batch(3, 16)
    module = OrtModule(path, threads=1).eval().to("cpu")
    want = ort_session(path, 1).run(None, {"input_ids": ids.numpy()})[0]
    got = module(ids)
    assert isinstance(got, torch.Tensor) and np.array_equal(got.numpy(), want)
    with torch.no_grad():
        assert torch.allclose(got, model(ids), atol=1e-5)
    assert list(module.parameters()) == []
    twin = copy.deepcopy(module)  # copies reopen the file: a session does not copy
    assert torch.equal(twin(ids), got)


def test_dynamic_takes_matmul_and_conv_layers_and_names_a_gemm_it_cannot(
        exported: Callable[..., tuple[nn.Module, Path]], tmp_path: Path) -> None:
    _, path = exported("tiny_encoder")
    with pytest.raises(ValueError, match="'head' run as Gemm"):  # quantize_dynamic has no int8 Gemm
        quantize_onnx(path, tmp_path / "q.onnx", int8_layers=["embed", "head"], scheme="dynamic")
    report = quantize_onnx(path, tmp_path / "q.onnx", int8_layers=["embed", "blocks.0.fc1"],
                           scheme="dynamic")
    ops = sorted(n.op_type for n in _graph(tmp_path / "q.onnx").node if "Integer" in n.op_type)
    assert ops == ["ConvInteger", "MatMulInteger"]
    assert report.int8_nodes == ("/embed/Conv", "/blocks/blocks.0/fc1/MatMul")
