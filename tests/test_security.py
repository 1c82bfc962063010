"""Admin APIs are closed by default on both protocols; inference stays open."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

import shopvision
from shopvision import contract
from shopvision.contract import ADMIN_KEY_HEADER
from shopvision.samples import product_jpeg
from tests.conftest import RunningServer, start_server

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::shopvision.SyntheticWeightsWarning")]


def repository_index_over_http(server: RunningServer, headers: dict[str, str]) -> tuple[int, str]:
    request = urllib.request.Request(f"{server.http_url}/v2/repository/index", data=b"{}", headers=headers,
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_repository_api_is_refused_without_the_key_but_inference_works(triton: RunningServer) -> None:
    status, body = repository_index_over_http(triton, {})
    assert status == 403 and "restricted" in json.loads(body)["error"]
    assert repository_index_over_http(triton, {ADMIN_KEY_HEADER: "guess"})[0] == 403
    client = grpcclient.InferenceServerClient(triton.grpc_address)
    with pytest.raises(InferenceServerException, match="restricted"):
        client.get_model_repository_index()
    with pytest.raises(InferenceServerException, match="restricted"):
        client.unload_model("shopvision")
    with shopvision.Client(triton.grpc_url) as sdk:
        assert sdk.embed([product_jpeg(1)]).shape == (1, 2048)
    assert client.is_model_ready("shopvision")


def test_the_admin_key_opens_the_repository_api_on_both_protocols(built_repository: Path, tmp_path: Path) -> None:
    server = start_server(built_repository, tmp_path / "admin.log", admin_key="test-admin-key")
    try:
        status, body = repository_index_over_http(server, {ADMIN_KEY_HEADER: "test-admin-key"})
        assert status == 200 and {entry["name"] for entry in json.loads(body)} >= {"shopvision", "resnet50"}
        client = grpcclient.InferenceServerClient(server.grpc_address)
        admin = {f"triton-grpc-protocol-{ADMIN_KEY_HEADER}": "test-admin-key"}
        index = client.get_model_repository_index(headers=admin)
        assert {model.name for model in index.models} == {
            contract.ENSEMBLE_MODEL, contract.PREPROCESS_MODEL, contract.RESNET_MODEL, contract.QUALITY_MONITOR_MODEL}
        assert repository_index_over_http(server, {})[0] == 403
        # Model control mode is "none": even with the key, nothing can be loaded or unloaded.
        with pytest.raises(InferenceServerException, match="explicit model load / unload is not allowed"):
            client.unload_model("shopvision", headers=admin)
        with shopvision.Client(server.grpc_url) as sdk:
            assert np.isfinite(sdk.embed([product_jpeg(2)])).all()
            with pytest.raises(shopvision.PermissionDeniedError, match="admin key"):
                sdk.repository_index()
        for url in (server.grpc_url, server.http_url):
            with shopvision.Client(url, admin_key="test-admin-key") as admin_sdk:
                ready = {entry["name"] for entry in admin_sdk.repository_index() if entry.get("state") == "READY"}
                assert ready == {contract.ENSEMBLE_MODEL, contract.PREPROCESS_MODEL, contract.RESNET_MODEL,
                                 contract.QUALITY_MONITOR_MODEL}, url
                with pytest.raises(shopvision.RequestRejectedError, match="explicit model load / unload"):
                    admin_sdk.unload_model(contract.ENSEMBLE_MODEL)
    finally:
        server.server.stop()
