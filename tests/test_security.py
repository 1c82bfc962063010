"""Admin APIs are closed by default on both protocols; inference stays open."""

from __future__ import annotations

import json
import socket
import threading
import time
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
from tests.support.servers import RunningServer, start_server

pytestmark = pytest.mark.integration


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


@pytest.mark.system
def test_the_gateway_passes_inference_and_refuses_administration_on_both_protocols(triton: RunningServer,
                                                                                   tmp_path: Path) -> None:
    """deploy/gateway in a real nginx: the admin key opens nothing through it (with explicit model control,
    loading a model runs its code), while the SDK's own calls all pass."""
    from tests.support.gateway import LocalGateway

    admin = {ADMIN_KEY_HEADER: "whatever", "Content-Type": "application/json"}
    with LocalGateway(tmp_path / "gateway", triton_http=triton.http_address,
                      triton_grpc=triton.grpc_address) as gateway:
        base = f"http://{gateway.http_address}"
        for method, path in (("POST", "/v2/repository/index"), ("POST", "/v2/repository/models/resnet50/unload"),
                             ("POST", "/v2/repository/models/resnet50/load"), ("GET", "/v2/logging"),
                             ("GET", "/v2/trace/setting"), ("GET", "/v2/models/resnet50/trace/setting"),
                             ("GET", "/v2/systemsharedmemory/status"),
                             ("POST", "/v2/cudasharedmemory/region/x/unregister"), ("GET", "/metrics")):
            request = urllib.request.Request(base + path, data=b"{}" if method == "POST" else None, headers=admin,
                                             method=method)
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=10)
            assert refused.value.code == 403, path
            assert "refused by the gateway" in json.loads(refused.value.read())["error"], path
        for path in ("/v2/health/ready", "/v2", f"/v2/models/{contract.ENSEMBLE_MODEL}",
                     f"/v2/models/{contract.ENSEMBLE_MODEL}/config", f"/v2/models/{contract.RESNET_MODEL}/ready",
                     "/v2/models/stats"):
            with urllib.request.urlopen(base + path, timeout=10) as response:
                assert response.status == 200, path
        grpc = grpcclient.InferenceServerClient(gateway.grpc_address)
        for call in (grpc.get_model_repository_index, lambda: grpc.unload_model(contract.RESNET_MODEL),
                     grpc.get_log_settings, grpc.get_trace_settings, grpc.get_system_shared_memory_status):
            with pytest.raises(InferenceServerException, match="refused by the gateway"):
                call()
        assert grpc.is_server_ready() and grpc.is_model_ready(contract.RESNET_MODEL)  # nothing was unloaded
        assert grpc.get_inference_statistics(contract.ENSEMBLE_MODEL) is not None
        for url in (f"http://{gateway.http_address}", f"grpc://{gateway.grpc_address}"):
            with shopvision.Client(url) as client:
                (result,) = client.analyze([product_jpeg(41)], top_k=3)
                assert len(result.predictions) == 3 and result.embedding.shape == (client.provenance().embedding_dim,)


@pytest.mark.system
def test_the_gateway_never_passes_a_chunked_body_on(tmp_path: Path) -> None:
    """CVE-2025-23310/23311 overflow Triton 24.10's HTTP server with a body of many small chunks: the gateway
    reads the body whole and sends it on with a Content-Length (docs/security.md), seen here by an upstream
    that records what it received."""
    import http.server
    import socket
    import threading

    from shopvision.server.tritonserver import free_ports
    from tests.support.gateway import LocalGateway

    received: dict[str, object] = {}

    class Upstream(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
            received.update(self.headers.items())
            received["body"] = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *arguments: object) -> None:
            pass

    (port,) = free_ports(1)
    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", port), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    try:
        with LocalGateway(tmp_path / "gateway", triton_http=f"127.0.0.1:{port}",
                          triton_grpc=f"127.0.0.1:{port}") as gateway:
            host, gateway_port = gateway.http_address.split(":")
            with socket.create_connection((host, int(gateway_port)), timeout=10) as client:
                client.sendall(b"POST /v2/models/shopvision/infer HTTP/1.1\r\nHost: x\r\n"
                               b"Transfer-Encoding: chunked\r\n\r\n" + b"1\r\nx\r\n" * 3000 + b"0\r\n\r\n")
                assert client.recv(100).startswith(b"HTTP/1.1 200")
    finally:
        upstream.shutdown()
    assert "Transfer-Encoding" not in received and received["Content-Length"] == "3000"
    assert received["body"] == b"x" * 3000


TRITON_REFUSES_EMPTY = 500
"""tritonserver 2.51's answer to an inference request whose JSON has no inputs: any answer but the gateway's 429."""


def post_infer(address: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    """A raw HTTP inference POST: status, headers and body, whether Triton or the gateway answers."""
    request = urllib.request.Request(f"http://{address}/v2/models/{contract.ENSEMBLE_MODEL}/infer", data=body,
                                     headers={"Content-Type": "application/json", **(headers or {})}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode()


def held_upload(address: str, length: int) -> socket.socket:
    """An inference request that announces ``length`` bytes and sends a few: in flight until the socket closes."""
    host, port = address.rsplit(":", 1)
    connection = socket.create_connection((host, int(port)), timeout=10)
    connection.sendall(f"POST /v2/models/{contract.ENSEMBLE_MODEL}/infer HTTP/1.1\r\nHost: gateway\r\n"
                       f"Content-Length: {length}\r\n\r\n".encode() + bytes(1024))
    return connection


def answer_to_headers(address: str, length: int) -> str:
    """What the gateway answers to an inference request's headers alone (it need not read a body to refuse one)."""
    with held_upload(address, length) as connection:
        return connection.recv(4096).decode(errors="replace")


@pytest.mark.system
def test_the_gateway_bounds_large_requests_in_flight_and_lets_small_ones_pass(triton: RunningServer,
                                                                              tmp_path: Path) -> None:
    """At most GATEWAY_LARGE_REQUESTS requests over 10 MB, or of unknown length (every gRPC message), reach
    Triton at once (shopvision.server.limits.GatewayLimits sizes it to the chart's memory): one slot here."""
    from shopvision.server.limits import LARGE_REQUEST_BYTES, GatewayLimits
    from tests.support.gateway import LocalGateway

    limits = GatewayLimits(large_requests=1)
    with LocalGateway(tmp_path / "gateway", triton_http=triton.http_address, triton_grpc=triton.grpc_address,
                      limits=limits) as gateway:
        grpc = grpcclient.InferenceServerClient(gateway.grpc_address)
        image = grpcclient.InferInput(contract.IMAGE_INPUT, [1, 1], "BYTES")
        image.set_data_from_numpy(np.array([[product_jpeg(5)]], dtype=object))
        holder = held_upload(gateway.http_address, 2 * LARGE_REQUEST_BYTES)
        try:
            time.sleep(0.5)  # the gateway has read its headers: the slot is taken
            refusal = answer_to_headers(gateway.http_address, LARGE_REQUEST_BYTES + 1)
            assert refusal.startswith("HTTP/1.1 503") and "Retry-After: 1" in refusal, refusal
            assert "gateway busy" in refusal and "1 over 10 MB" in refusal
            with pytest.raises(InferenceServerException, match="gateway busy") as busy:
                grpc.infer(contract.ENSEMBLE_MODEL, [image])
            assert busy.value.status() == "StatusCode.UNAVAILABLE"
            # A request under 10 MB is not held back: one image at the byte limit always fits under it.
            with shopvision.Client(f"http://{gateway.http_address}") as client:
                assert client.embed([product_jpeg(6)]).shape[0] == 1
            # The SDK retries the gateway's 503/UNAVAILABLE with backoff: this call waits out the held slot.
            releaser = threading.Timer(1.0, holder.close)
            releaser.start()
            with shopvision.Client(f"grpc://{gateway.grpc_address}") as client:
                assert client.embed([product_jpeg(7)]).shape[0] == 1
            releaser.join()
        finally:
            holder.close()
        assert grpc.infer(contract.ENSEMBLE_MODEL, [image]).as_numpy(contract.EMBEDDING).shape[0] == 1
    assert "limiting connections by zone \"triton_large\"" in gateway.error_log()


@pytest.mark.system
def test_the_gateway_limits_each_clients_rate_and_knows_clients_only_from_trusted_proxies(
        triton: RunningServer, tmp_path: Path) -> None:
    from shopvision.server.limits import GatewayLimits
    from tests.support.gateway import LocalGateway

    limits = GatewayLimits(rate_per_client=1, burst_per_client=1)  # this test's own 127.0.0.1 is the trusted proxy
    with LocalGateway(tmp_path / "gateway", triton_http=triton.http_address, triton_grpc=triton.grpc_address,
                      limits=limits) as gateway:
        answers = [post_infer(gateway.http_address, b"{}") for _ in range(2)]
        assert [answer[0] for answer in answers] == [TRITON_REFUSES_EMPTY] * 2, answers  # passed to Triton
        status, headers, body = post_infer(gateway.http_address, b"{}")
        assert status == 429 and headers["Retry-After"] == "1"
        assert "more than 1 inference requests per second from your address" in json.loads(body)["error"]
        grpc = grpcclient.InferenceServerClient(gateway.grpc_address)
        with pytest.raises(InferenceServerException, match="per second from your address") as too_fast:
            grpc.infer(contract.ENSEMBLE_MODEL, [])
        assert too_fast.value.status() == "StatusCode.UNAVAILABLE"
        # Behind a trusted proxy, the last X-Forwarded-For address is the client: another client has its own rate.
        for forwarded in ("203.0.113.9, 198.51.100.7", "198.51.100.8"):
            assert post_infer(gateway.http_address, b"{}", {"X-Forwarded-For": forwarded})[0] == TRITON_REFUSES_EMPTY
    untrusting = GatewayLimits(rate_per_client=1, burst_per_client=1, trusted_proxies="10.0.0.0/8")
    with LocalGateway(tmp_path / "untrusting", triton_http=triton.http_address, triton_grpc=triton.grpc_address,
                      limits=untrusting) as gateway:
        spoofed = [post_infer(gateway.http_address, b"{}", {"X-Forwarded-For": f"198.51.100.{n}"})[0]
                   for n in range(3)]
        # From an address it does not trust, the header names nobody: all three are one client's.
        assert spoofed == [TRITON_REFUSES_EMPTY] * 2 + [429]


@pytest.mark.system
def test_the_charts_helm_test_passes_through_the_gateway_and_fails_past_it(triton: RunningServer,
                                                                            tmp_path: Path) -> None:
    """The `helm test` pod's own script, run here with the Service's address swapped for a real gateway's (and
    then for Triton's own port, where the repository index is refused by Triton's key check, not the gateway)."""
    import subprocess

    from tests.support.gateway import LocalGateway
    from tests.test_deploy import render

    pod = render({})["Pod"]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    script = container["args"][0]
    service = "http://shop-shopvision:8000"
    assert service in script

    def helm_test(base: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["sh", "-c", script.replace(service, base)], capture_output=True, text=True,
                              timeout=60, check=False)

    with LocalGateway(tmp_path / "gateway", triton_http=triton.http_address,
                      triton_grpc=triton.grpc_address) as gateway:
        passed = helm_test(f"http://{gateway.http_address}")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "health: 200" in passed.stdout
    bypassed = helm_test(triton.http_url)  # Triton itself, no gateway in front
    assert bypassed.returncode != 0, bypassed.stdout


def raw_http(address: str, request: bytes) -> tuple[int, str]:
    """A request sent byte for byte (no client normalises its path): the status and body of the answer."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode(errors="replace")


TRITON_PARSE_ERRORS = ("failed to parse the request JSON", "Unable to parse")
"""tritonserver 2.51 classes its JSON parser's errors as internal and answers 500 (triton-inference-server/server
#8762; docs/security.md): the one 5xx a malformed request may get, from Triton, which keeps serving."""


@pytest.mark.system
def test_a_battery_of_hostile_requests_through_the_gateway_gets_4xx_and_triton_keeps_serving(
        triton: RunningServer, tmp_path: Path) -> None:
    from tests.support.gateway import LocalGateway

    infer = f"/v2/models/{contract.ENSEMBLE_MODEL}/infer"
    body = json.dumps({"inputs": [{"name": contract.IMAGE_INPUT, "shape": [1, 1], "datatype": "BYTES",
                                   "data": ["not an image"]}]}).encode()

    def post(path: str, data: bytes, extra: str = "") -> bytes:
        return (f"POST {path} HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\nContent-Length: {len(data)}\r\n"
                f"{extra}\r\n").encode() + data

    def get(path: str, extra: str = "") -> bytes:
        return f"GET {path} HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n{extra}\r\n".encode()

    battery = {
        "load a model": post("/v2/repository/models/resnet50/load", b"{}", f"{ADMIN_KEY_HEADER}: x\r\n"),
        "dot segments to the repository": post("/v2/models/x/../../repository/index", b"{}"),
        "encoded dot segments to load": post(
            "/v2/repository/models/x/load/..%2F..%2F..%2F..%2Fmodels/shopvision/ready", b"{}"),
        "encoded dots": get("/v2/models/%2e%2e/%2e%2e/logging"),
        "doubled slashes": post("//v2//repository//index", b"{}"),
        "a backslash": get("/v2/models/shopvision%5c..%5c..%5clogging"),
        "absolute-form target": get("http://triton/v2/logging"),
        "trace settings of a model": post("/v2/models/resnet50/trace/setting", b'{"trace_file": "/tmp/x"}'),
        "log settings": post("/v2/logging", b'{"log_file": "/tmp/x"}'),
        "shared memory": post("/v2/systemsharedmemory/region/r/register", b'{"key": "k", "offset": 0, "byte_size": 8}'),
        "unknown model": post("/v2/models/nosuch/infer", body),
        "an input that is not an image": post(infer, body),
        "a batch over the limit": post(infer, json.dumps({"inputs": [{
            "name": contract.IMAGE_INPUT, "shape": [33, 1], "datatype": "BYTES", "data": ["x"] * 33}]}).encode()),
        "a header length past the body": post(infer, b'{"inputs":[]}', "Inference-Header-Content-Length: 99999\r\n"),
        "a wrong method": get(infer),
        "a body over the limit": (f"POST {infer} HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n"
                                  f"Content-Length: {10 ** 9}\r\n\r\n").encode(),
        "not HTTP at all": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64) + b"\r\n\r\n",
        "malformed JSON": post(infer, b"{not json"),
    }
    with LocalGateway(tmp_path / "gateway", triton_http=triton.http_address,
                      triton_grpc=triton.grpc_address) as gateway:
        answers = {name: raw_http(gateway.http_address, request) for name, request in battery.items()}
        for name, (status, text) in answers.items():
            from_triton_parser = status == 500 and any(error in text for error in TRITON_PARSE_ERRORS)
            assert 400 <= status < 500 or from_triton_parser, (name, status, text)
            assert text.strip(), name  # a reason, never an empty answer
        assert answers["malformed JSON"][0] == 500  # pinned: a Triton that answers 400 here changes the doc
        for name in ("load a model", "dot segments to the repository", "encoded dot segments to load", "encoded dots",
                     "doubled slashes", "a backslash", "trace settings of a model", "log settings", "shared memory"):
            assert answers[name][0] in (400, 403) and "refused by the gateway" in answers[name][1], name
        # gRPC: methods by raw name, with bytes no client would send.
        import grpc as grpclib

        channel = grpclib.insecure_channel(gateway.grpc_address)

        def call(method: str, message: bytes) -> grpclib.StatusCode:
            try:
                channel.unary_unary(f"/inference.GRPCInferenceService/{method}", request_serializer=bytes,
                                    response_deserializer=bytes)(message, timeout=30)
            except grpclib.RpcError as error:
                return error.code()
            return grpclib.StatusCode.OK

        assert call("RepositoryModelLoad", b"\n\x08resnet50") == grpclib.StatusCode.PERMISSION_DENIED
        assert call("RepositoryModelLoad/../ModelInfer", b"") == grpclib.StatusCode.PERMISSION_DENIED
        assert call("ModelInfer", b"") == grpclib.StatusCode.NOT_FOUND  # no model named
        assert call("ModelInfer", b"\n\nshopvision") == grpclib.StatusCode.INVALID_ARGUMENT  # no inputs
        assert call("ModelInfer", b"\xff\xff\xff\xff garbage") == grpclib.StatusCode.INTERNAL  # Triton's parser
        channel.close()
        grpc = grpcclient.InferenceServerClient(gateway.grpc_address)
        assert grpc.is_server_ready() and grpc.is_model_ready(contract.RESNET_MODEL)
        with shopvision.Client(f"http://{gateway.http_address}") as client:
            assert client.embed([product_jpeg(43)]).shape[0] == 1
    assert not any(line for line in triton.log_path.read_text().splitlines() if "Segmentation fault" in line)
