"""The request size limit: one number in the contract, spelled by the gateway, the Ingress, compose and the
chart; a real nginx with the gateway's own configuration refusing a burst of oversized requests in front of a
real tritonserver; the Python backend's shared memory capped."""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

import shopvision
from benchmarks.limits import PrivateShmServer, batch_at_limit, infer, one_image, private_namespaces_work
from benchmarks.processes import tree_rss_bytes
from shopvision.contract import (
    ENSEMBLE_MODEL,
    MAX_BATCH_SIZE,
    MAX_IMAGE_BYTES,
    MAX_IMAGE_PIXELS,
    MIB,
    PREPROCESS_MODEL,
    REQUEST_ENVELOPE_BYTES,
    max_request_bytes,
)
from shopvision.repository.configs import ModelConfig, read_config
from shopvision.samples import product_jpeg
from shopvision.server.limits import (
    LARGE_REQUEST_BYTES,
    GatewayLimits,
    preprocess_batch_bytes,
    request_body_limit,
    shm_size_bytes,
)
from shopvision.server.tritonserver import ServerOptions, free_ports
from tests.support.gateway import TEMPLATE as GATEWAY_TEMPLATE, LocalGateway, render
from tests.support.servers import TEMPLATE, start_server
from tests.test_deploy import CHART, PRODUCTION_VALUES, compose_config, render as render_chart

LIMITS_REPORT = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "limits" / "results.json"
OVER_LIMIT = max_request_bytes() + MIB


def template_config(model: str, config_name: str | None = None) -> ModelConfig:
    """A model's config in the template: ``config.pbtxt``, or ``configs/<name>.pbtxt``."""
    return read_config(TEMPLATE / model / ("config.pbtxt" if config_name is None else f"configs/{config_name}.pbtxt"))


def preprocess_instances(config_name: str | None) -> int:
    return sum(group.count for group in template_config(PREPROCESS_MODEL, config_name).instance_group)


def kubernetes_bytes(quantity: str) -> int:
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi|mb|gb)?", quantity).groups()  # type: ignore[union-attr]
    return int(number) * {"Mi": MIB, "mb": MIB, "Gi": 1024 * MIB, "gb": 1024 * MIB, None: 1}[unit]


def test_the_request_limit_is_a_full_batch_at_the_image_limit() -> None:
    assert max_request_bytes() >= MAX_BATCH_SIZE * (MAX_IMAGE_BYTES + 4) > max_request_bytes() - 2 * MIB
    assert request_body_limit() == f"{max_request_bytes() // MIB}m"
    # MAX_BATCH_SIZE is what the server takes in one request, and the largest batch preprocess is handed.
    assert template_config(ENSEMBLE_MODEL).max_batch_size == MAX_BATCH_SIZE
    assert all(template_config(PREPROCESS_MODEL, name).max_batch_size == MAX_BATCH_SIZE for name in ("cpu", None))


def test_the_gateway_counts_as_large_what_a_single_image_request_never_reaches() -> None:
    text = GATEWAY_TEMPLATE.read_text()
    (digits,) = re.findall(r'"~\^\[0-9\]\{1,(\d+)\}\$" "";', text)
    assert 10 ** int(digits) == LARGE_REQUEST_BYTES
    assert MAX_IMAGE_BYTES + 4 + REQUEST_ENVELOPE_BYTES < LARGE_REQUEST_BYTES < max_request_bytes()
    assert set(GatewayLimits().environment()) <= template_variables()


def template_variables() -> set[str]:
    """The variables the gateway's template needs: the nginx image leaves an undefined one in, and nginx fails."""
    return set(re.findall(r"\$\{([A-Z_]+)\}", GATEWAY_TEMPLATE.read_text()))


def test_the_gateway_and_the_ingresses_spell_the_contracts_limit() -> None:
    text = GATEWAY_TEMPLATE.read_text()
    assert re.findall(r"client_max_body_size (\S+);", text) == [request_body_limit()] * 2
    refusals = re.findall(r"larger than (\S+), the most a request may carry \((\d+) images of at most (\d+) MiB", text)
    assert refusals == [(request_body_limit(), str(MAX_BATCH_SIZE), str(MAX_IMAGE_BYTES // MIB))] * 2
    manifests = render_chart({"ingress": {"enabled": True, "grpc": {"host": "grpc.example.com"},
                                          "annotations": {"cert-manager.io/cluster-issuer": "letsencrypt"}}})
    http, grpc = manifests["Ingress"], manifests["Ingress/shop-shopvision-grpc"]
    for ingress in (http, grpc):
        annotations = ingress["metadata"]["annotations"]
        assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == request_body_limit()
        assert annotations["cert-manager.io/cluster-issuer"] == "letsencrypt"  # the user's own are kept
    assert grpc["metadata"]["annotations"]["nginx.ingress.kubernetes.io/backend-protocol"] == "GRPC"
    (rule,) = grpc["spec"]["rules"]
    assert rule["host"] == "grpc.example.com"
    assert rule["http"]["paths"][0]["backend"]["service"]["port"] == {"name": "grpc"}
    assert "backend-protocol" not in json.dumps(http["metadata"]["annotations"])
    assert "Ingress/shop-shopvision-grpc" not in render_chart({"ingress": {"enabled": True}})
    # Triton's own gRPC TLS on: the Ingress speaks TLS to it too.
    tls = render_chart({"ingress": {"enabled": True, "grpc": {"host": "grpc.example.com"}},
                        "tls": {"grpc": {"enabled": True, "secretName": "grpc-tls"}}})["Ingress/shop-shopvision-grpc"]
    assert tls["metadata"]["annotations"]["nginx.ingress.kubernetes.io/backend-protocol"] == "GRPCS"


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
def test_compose_exposes_triton_only_through_the_gateway_with_enough_shared_memory(profile: str) -> None:
    result = compose_config(profile, GRAFANA_ADMIN_PASSWORD="s3cret")
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    publishing = {port["published"]: name for name, service in services.items() for port in service.get("ports", [])}
    assert publishing["8000"] == publishing["8001"] == "gateway"
    gateway = services["gateway"]
    assert {volume["target"] for volume in gateway["volumes"]} == {"/etc/nginx/templates/triton.conf.template"}
    assert Path(gateway["volumes"][0]["source"]) == GATEWAY_TEMPLATE
    assert gateway["environment"]["TRITON_HTTP_ADDRESS"] == "triton:8000"
    assert gateway["environment"]["TRITON_GRPC_ADDRESS"] == "triton:8001"
    expected = GatewayLimits().environment()
    assert {name: gateway["environment"][name] for name in expected} == expected
    assert template_variables() <= set(gateway["environment"])
    assert gateway["depends_on"][f"triton-{profile}"]["condition"] == "service_healthy"
    # What the gateway's template becomes is a configuration this nginx accepts (tested by the burst below).
    assert "${" not in render(triton_http="triton:8000", triton_grpc="triton:8001", http_port=8000, grpc_port=8001)
    instances = preprocess_instances("cpu" if profile == "cpu" else None)
    assert int(services[f"triton-{profile}"]["shm_size"]) == shm_size_bytes(instances)


def test_the_charts_shared_memory_and_memory_come_from_the_limits_and_the_measurement() -> None:
    for values, config_name in (({}, "cpu"), ({"gpu": {"count": 1}}, None)):
        pod = render_chart(values)["Deployment"]["spec"]["template"]["spec"]
        shm = next(volume for volume in pod["volumes"] if volume["name"] == "dshm")
        assert kubernetes_bytes(shm["emptyDir"]["sizeLimit"]) == shm_size_bytes(preprocess_instances(config_name))
    report = json.loads(LIMITS_REPORT.read_text())
    # shm_size_bytes allows twice a full batch per preprocess instance: what the measurement saw fits in it.
    assert 0 < report["burst"]["preprocess_pool_mb"] * MIB <= 2 * preprocess_batch_bytes()
    sizing = report["chart_sizing"]
    resources = render_chart({})["Deployment"]["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert kubernetes_bytes(resources["limits"]["memory"]) >= sizing["limit_mib"] * MIB
    assert kubernetes_bytes(resources["requests"]["memory"]) >= sizing["request_mib"] * MIB


def test_the_gateways_bounds_keep_triton_inside_the_charts_memory_limit() -> None:
    """Every slot of the chart's gateway taken (the large ones at the request limit, the rest just under 10 MB, one
    dearest image decoding), with the costs measured in benchmarks/results/limits, fits Triton's memory limit."""
    pod = render_chart({})["Deployment"]["spec"]["template"]["spec"]
    triton, gateway = pod["containers"]
    env = {item["name"]: item["value"] for item in gateway["env"]}
    chart_limits = GatewayLimits(
        large_requests=int(env["GATEWAY_LARGE_REQUESTS"]), requests=int(env["GATEWAY_REQUESTS"]),
        requests_per_client=int(env["GATEWAY_REQUESTS_PER_CLIENT"]),
        rate_per_client=int(env["GATEWAY_RATE_PER_CLIENT"]), burst_per_client=int(env["GATEWAY_BURST_PER_CLIENT"]),
        trusted_proxies=env["GATEWAY_TRUSTED_PROXIES"])
    assert chart_limits == GatewayLimits(trusted_proxies="0.0.0.0/0")  # the defaults, but for the Ingress in front
    report = json.loads(LIMITS_REPORT.read_text())
    shipped = report["burst"]
    per_request = (shipped["peak_mb"] - shipped["idle_mb"]) / 4
    worst = chart_limits.memory_mib(idle_mib=shipped["idle_mb"], per_request_at_limit_mib=per_request,
                                    decode_mib=report["chart_sizing"]["decode_mb"])
    assert worst * MIB <= kubernetes_bytes(triton["resources"]["limits"]["memory"])
    # Two more large requests would not fit: the bound is what the memory allows, not an arbitrary number.
    more = GatewayLimits(large_requests=chart_limits.large_requests + 2).memory_mib(
        idle_mib=shipped["idle_mb"], per_request_at_limit_mib=per_request,
        decode_mib=report["chart_sizing"]["decode_mb"])
    assert more * MIB > kubernetes_bytes(triton["resources"]["limits"]["memory"])
    assert (CHART / "values.yaml").read_text().count("benchmarks/results/limits") >= 1


def refused_by_gateway(outcome: object) -> bool:
    if not isinstance(outcome, InferenceServerException):
        return False
    return (str(outcome.status()) in ("413", "StatusCode.RESOURCE_EXHAUSTED")
            and f"larger than {request_body_limit()}" in (outcome.message() or ""))


@pytest.mark.integration
@pytest.mark.system
def test_a_burst_of_oversized_requests_is_refused_at_the_gateway_before_triton_gets_more_than_the_limit(
        built_repository, tmp_path) -> None:
    running = start_server(built_repository, tmp_path / "tritonserver.log")
    # Room for all six large requests of the burst at once and the small gRPC ones beside them (gRPC sends no length,
    # so each counts as large): this test is about what oversized requests cost; the bound on large requests in
    # flight has its own test (tests/test_security.py).
    gateway = LocalGateway(tmp_path / "gateway", triton_http=running.http_address, triton_grpc=running.grpc_address,
                           limits=GatewayLimits(large_requests=8))
    try:
        with gateway:
            addresses = {"http": gateway.http_address, "grpc": gateway.grpc_address}
            small = np.array([[product_jpeg(7)]], dtype=object)
            under = batch_at_limit()
            before = tree_rss_bytes(running.server.pid or 0)
            outcomes: dict[str, object] = {}
            good_answers: list[object] = []
            bursting = threading.Event()

            def record(name: str, protocol: str, images: np.ndarray) -> None:
                try:
                    outcomes[name] = infer(protocol, addresses[protocol], images)
                except Exception as error:
                    outcomes[name] = error

            def keep_asking() -> None:  # good requests all through the burst, over both protocols
                while bursting.is_set():
                    for protocol in addresses:
                        try:
                            good_answers.append(infer(protocol, addresses[protocol], small))
                        except Exception as error:
                            good_answers.append(error)

            bursting.set()
            regular = threading.Thread(target=keep_asking)
            regular.start()
            senders = [threading.Thread(target=record, args=(f"{protocol} over {index}", protocol,
                                                             one_image(OVER_LIMIT)))
                       for protocol in addresses for index in range(2)]
            senders += [threading.Thread(target=record, args=(f"{protocol} under", protocol, under))
                        for protocol in addresses]
            for sender in senders:
                sender.start()
            for sender in senders:
                sender.join()
            bursting.clear()
            regular.join()

            refused = {name: outcome for name, outcome in outcomes.items() if "over" in name}
            assert all(refused_by_gateway(outcome) for outcome in refused.values()), refused
            assert outcomes["http under"] == outcomes["grpc under"] == MAX_BATCH_SIZE, outcomes
            assert good_answers and all(answer == 1 for answer in good_answers), good_answers
            assert running.server.is_ready()
            # No refused request reached the model: the ensemble counts no failure.
            with httpclient.InferenceServerClient(running.http_address) as client:
                statistics = client.get_inference_statistics(ENSEMBLE_MODEL)
            assert statistics["model_stats"][0]["inference_stats"]["fail"]["count"] == 0
            # What reached Triton of the refused requests, counted by nginx (its access log), not guessed from the
            # server's memory, which the allocator makes vary by more than a request from run to run. An HTTP body
            # is read whole before it is passed on: a refused one never reaches Triton. A gRPC body is streamed: Triton
            # gets at most the limit of it before the gateway resets the stream.
            http_port, grpc_port = (int(address.rsplit(":", 1)[1]) for address in addresses.values())
            refusals = [entry for entry in gateway.requests() if entry.status in (413, 204)]
            assert Counter(entry.port for entry in refusals) == {http_port: 2, grpc_port: 2}, refusals
            assert not any(entry.reached_triton for entry in refusals if entry.port == http_port), refusals
            framing = max_request_bytes() * 9 // 16_384 + 64 * 1024  # HTTP/2: 9 bytes a 16 KiB frame, and headers
            assert all(entry.bytes_to_triton <= max_request_bytes() + framing
                       for entry in refusals if entry.port == grpc_port), refusals
            growth = tree_rss_bytes(running.server.pid or 0) - before
            print(f"server memory grew {growth / MIB:.0f} MiB over the burst (not asserted: allocator noise); "
                  f"gRPC bytes of refused requests that reached Triton: "
                  f"{[entry.bytes_to_triton for entry in refusals if entry.port == grpc_port]}")

            # What an SDK user sees for a request over the limit, on both protocols.
            for url in (f"http://{gateway.http_address}", f"grpc://{gateway.grpc_address}"):
                with shopvision.Client(url) as client, pytest.raises(shopvision.RequestRejectedError,
                                                                                   match="larger than"):
                    client.embed([bytes(OVER_LIMIT)])
    finally:
        running.server.stop()
    assert "too large body" in gateway.error_log()


@pytest.mark.integration
def test_past_the_shared_memory_cap_a_request_fails_fast_and_the_server_keeps_serving(built_repository,
                                                                                       tmp_path) -> None:
    if not private_namespaces_work():
        pytest.skip("needs a private mount namespace for its own /dev/shm (root or user namespaces)")
    http, grpc, metrics = free_ports(3)
    cap = 512 * MIB
    server = PrivateShmServer(ServerOptions(built_repository, http_port=http, grpc_port=grpc, metrics_port=metrics),
                              shm_bytes=cap, log=(tmp_path / "tritonserver.log").open("ab"))
    server.start()
    try:
        address = f"127.0.0.1:{http}"
        before = tree_rss_bytes(server.pid or 0)
        with pytest.raises(InferenceServerException, match="Failed to increase the shared memory pool size"):
            infer("http", address, one_image(cap + 64 * MIB))
        assert infer("http", address, np.array([[product_jpeg(3)]], dtype=object)) == 1
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc}")
        assert client.is_server_ready()
        # The pool could not grow past the cap: the server holds no copy of the refused request.
        assert tree_rss_bytes(server.pid or 0) - before < 2 * cap
    finally:
        server.stop()


def test_the_readmes_limits_table_says_what_the_code_enforces() -> None:
    readme = (CHART.parent.parent.parent / "README.md").read_text()
    table = readme.split("## Limits", 1)[1].split("\n\n")[1].splitlines()[2:]
    rows = {row.split("|")[1].strip(): row.split("|")[2].strip() for row in table}
    where = {row.split("|")[1].strip(): row.split("|")[3].strip() for row in table}
    gib = 1024 * MIB
    assert rows["one image"].startswith(f"{MAX_IMAGE_BYTES // MIB} MiB, {MAX_IMAGE_PIXELS // 1_000_000} MP ")
    assert rows["images in a request"] == str(MAX_BATCH_SIZE)
    assert rows["one request"] == f"{max_request_bytes() // MIB} MiB"
    cpu, gpu = (shm_size_bytes(preprocess_instances(name)) / gib for name in ("cpu", None))
    assert rows["Python backend shared memory"] == f"{cpu:g} GiB CPU, {gpu:g} GiB GPU"
    resources = render_chart({})["Deployment"]["spec"]["template"]["spec"]["containers"][0]["resources"]
    request, limit = (kubernetes_bytes(resources[kind]["memory"]) / gib for kind in ("requests", "limits"))
    assert f"The chart's {limit:g} GiB memory limit ({request:g} GiB request)" in where["inference in flight"]
    gateway = GatewayLimits()
    assert rows["inference in flight"] == (
        f"{gateway.large_requests} over {LARGE_REQUEST_BYTES // 1_000_000} MB (every gRPC one counts), "
        f"{gateway.requests} in all, {gateway.requests_per_client} and {gateway.rate_per_client}/s per client")
    queue = template_config(PREPROCESS_MODEL, "cpu").dynamic_batching.default_queue_policy
    assert rows["queued requests"] == str(queue.max_queue_size)


def test_the_security_doc_quotes_the_dearest_image_from_the_limits_report() -> None:
    report = json.loads(LIMITS_REPORT.read_text())
    dearest = max(report["expensive_images"], key=lambda cost: cost["peak_growth_mb"])
    text = " ".join((CHART.parent.parent.parent / "docs" / "security.md").read_text().split())
    assert (f"a {MAX_IMAGE_PIXELS // 1_000_000} MP {dearest['name']} of {dearest['encoded_mb']} MB, peaks at "
            f"{dearest['peak_growth_mb']} MB of memory and {dearest['cpu_s']} CPU seconds") in text
    request = report["expensive_request"]
    assert request["image"] == dearest["name"] and request["served"] == MAX_BATCH_SIZE
    assert f"in one request cost {request['preprocess_cpu_s']} CPU seconds of preprocess" in text


def test_the_operations_doc_quotes_the_limits_report() -> None:
    (uncapped, capped) = json.loads(LIMITS_REPORT.read_text())["shm_cap"]
    text = " ".join((CHART.parent.parent.parent / "docs" / "operations.md").read_text().split())
    assert (f"one request of {uncapped['request_bytes'] / 1e9:.1f} GB sent straight to Triton left it "
            f"{uncapped['rss_growth_mb'] / 1e3:.1f} GB larger") in text
    assert capped["shm_cap_bytes"] == shm_size_bytes(preprocess_instances("cpu")) and capped["rss_growth_mb"] < 10


@pytest.mark.system
@pytest.mark.parametrize("values", [{}, PRODUCTION_VALUES], ids=["default", "grpc-mutual-tls"])
def test_the_charts_gateway_is_the_gateway_file_with_every_variable_and_nginx_accepts_it(values, tmp_path) -> None:
    from string import Template

    from tests.support.certificates import self_signed_certificate
    from tests.support.gateway import TLS_INCLUDE, nginx_test

    manifests = render_chart(values)
    (configmap,) = [manifest for kind, manifest in manifests.items()
                    if kind.startswith("ConfigMap") and manifest["metadata"]["name"] == "shop-shopvision-gateway"]
    assert configmap["data"]["triton.conf.template"] == GATEWAY_TEMPLATE.read_text().rstrip("\n")
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    gateway = next(container for container in pod["containers"] if container["name"] == "gateway")
    env = {item["name"]: item["value"] for item in gateway["env"]}
    assert template_variables() <= set(env)  # else the image's envsubst leaves a ${...} that nginx refuses
    mounts = {mount["mountPath"]: mount for mount in gateway["volumeMounts"]}
    assert "/etc/nginx/templates" in mounts and "/etc/nginx/conf.d" in mounts
    text = Template(configmap["data"]["triton.conf.template"]).safe_substitute(env)
    if "tls.conf" in configmap["data"]:  # gRPC over TLS: the certificate and, mutual, the client CA
        assert env["GATEWAY_GRPC_TLS"] == "ssl" and env["GATEWAY_TRITON_GRPC_SCHEME"] == "grpcs"
        assert TLS_INCLUDE + "tls.conf" in mounts and "/etc/shopvision/tls" in mounts
        certificate, key = self_signed_certificate(tmp_path)
        directives = (configmap["data"]["tls.conf"].replace("/etc/shopvision/tls/tls.crt", str(certificate))
                      .replace("/etc/shopvision/tls/tls.key", str(key))
                      .replace("/etc/shopvision/tls/ca.crt", str(certificate)))
        assert "ssl_verify_client on;" in directives
        (tmp_path / "tls").mkdir()
        (tmp_path / "tls" / "tls.conf").write_text(directives)
        text = text.replace(TLS_INCLUDE, f"{tmp_path / 'tls'}/")
    else:
        assert env["GATEWAY_GRPC_TLS"] == "" and env["GATEWAY_TRITON_GRPC_SCHEME"] == "grpc"
    checked = nginx_test(tmp_path / "nginx", text)
    assert checked.returncode == 0, checked.stderr
