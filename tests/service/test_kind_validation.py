"""Options a model kind cannot use are 422s at submit naming the field, not failures mid-job."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.service.fakes import spec

TEXT = {"model": {"zoo": "all-minilm-l6-v2"}, "dataset": {"name": "docstrings"}, "metric": "embedding_cosine"}

REFUSED: list[tuple[str, dict[str, Any], list[str], str]] = [
    ("activation on a CNN", spec(search_space={"criterion": "activation"}),
     ["body", "search_space", "criterion"], "criterion 'activation' does not apply to an image model"),
    ("fpgm on a transformer", spec(**TEXT, search_space={"criterion": "fpgm"}),
     ["body", "search_space", "criterion"], "criterion 'fpgm' does not apply to a sentence embedder"),
    ("agp on a text job", spec(**TEXT, finalize={"top_k": 1, "schedule": "agp"}),
     ["body", "finalize", "schedule"], "use 'oneshot'"),
    ("accuracy on a text job", spec(**{**TEXT, "metric": "accuracy"}), ["body", "metric"], "is text: use metric"),
    ("embedding_cosine on images", spec(metric="embedding_cosine"), ["body", "metric"], "needs a text dataset"),
    ("an embedder on images", spec(model={"zoo": "all-minilm-l6-v2"}), ["body", "model"], "is a sentence embedder"),
    ("int8 timed in PyTorch eager", spec(search_space={"precision": ["fp32", "int8"]}, target={"runtime": "torch"}),
     ["body", "search_space", "precision"], "set target.runtime to 'onnxruntime'"),
    ("int8 on a CUDA target", spec(search_space={"precision": ["fp32", "int8"]}, target={"device": "cuda"}),
     ["body", "search_space", "precision"], "searched on the CPU"),
    ("int8 without an ONNX export", spec(search_space={"precision": ["fp32", "int8"]},
                                         finalize={"export": ["safetensors"]}),
     ["body", "search_space", "precision"], "add 'onnx' to finalize.export"),
    ("an unknown precision", spec(search_space={"precision": ["fp32", "int4"]}),
     ["body", "search_space", "precision", 1], "'fp32' or 'int8'"),
    ("a precision twice", spec(search_space={"precision": ["fp32", "int8", "int8"]}),
     ["body", "search_space", "precision"], "lists a precision twice"),
    ("int8 alone", spec(search_space={"precision": ["int8"]}),
     ["body", "search_space", "precision"], "must include 'fp32'"),
    ("depth of a CNN without residual blocks", spec(model={"zoo": "vgg16_bn"}, search_space={"depth": True}),
     ["body", "search_space", "depth"], "model 'vgg16_bn' has no residual block with an identity shortcut"),
]


@pytest.mark.parametrize(("case", "body", "loc", "msg"), REFUSED, ids=[c[0] for c in REFUSED])
def test_an_option_the_kind_cannot_use_is_422_naming_the_field(
    client: TestClient, case: str, body: dict[str, Any], loc: list[str], msg: str
) -> None:
    r = client.post("/api/v1/jobs", json=body)
    assert r.status_code == 422, (case, r.text)
    detail = r.json()["detail"]
    assert [d["loc"] for d in detail] == [loc], (case, detail)
    assert msg in detail[0]["msg"], (case, detail)
    assert client.get("/api/v1/jobs").json()["count"] == 0


@pytest.mark.parametrize("body", [spec(search_space={"criterion": "fpgm"}),
                                  spec(search_space={"precision": ["fp32", "int8"]}),
                                  spec(**TEXT, search_space={"precision": ["fp32", "int8"]}, workers=0),
                                  spec(**TEXT, search_space={"criterion": "activation"}, workers=0),
                                  spec(**TEXT, workers=0),
                                  spec(search_space={"depth": True}),
                                  spec(**TEXT, search_space={"depth": True}, workers=0)])
def test_what_the_kind_accepts_is_created(client: TestClient, body: dict[str, Any]) -> None:
    r = client.post("/api/v1/jobs", json=body)
    assert r.status_code == 201, r.text
