"""Deployment artefacts, validated offline: Helm chart, Dockerfiles, compose, push script, alert rules,
dashboard. Then a real Prometheus scraping the real server and evaluating the rules."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

import shopvision
from shopvision.contract import CONFIDENCE_METRIC, QUALITY_MONITOR_MODEL, RESNET_MODEL
from shopvision.samples import product_jpeg
from shopvision.server.container import gpu_visible, options_from_environment
from shopvision.server.tritonserver import free_ports, triton_arguments
from tests.support import helm
from tests.support.metrics import (
    assert_counter_between,
    counts_reaching,
    inference_counts,
    metric,
    samples,
    scrape,
    wait_for_metric,
)
from tests.support.search_service import ServiceThread
from tests.support.servers import RunningServer

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "helm" / "shopvision"
ALERTS = CHART / "files" / "alerts.yml"
DASHBOARD = CHART / "files" / "grafana-dashboard.json"
KUBERNETES_VERSION = "1.30"
CUSTOM_RESOURCES = {"ServiceMonitor", "PrometheusRule"}  # CRDs of prometheus-operator, not in Kubernetes' schemas
GPU_ONLY_METRICS = {"nv_gpu_utilization", "nv_gpu_memory_used_bytes"}  # a CPU-only server cannot export these

PRODUCTION_VALUES = {
    "gpu": {"count": 1},
    "autoscaling": {"enabled": True, "queueTime": {"enabled": True}},
    "ingress": {"enabled": True, "className": "nginx", "grpc": {"host": "grpc.shopvision.example.com"},
                "tls": [{"secretName": "shopvision-tls",
                         "hosts": ["shopvision.example.com", "grpc.shopvision.example.com"]}]},
    "tls": {"grpc": {"enabled": True, "secretName": "shopvision-grpc-tls", "mutual": True}},
    "adminApi": {"existingSecret": "shopvision-admin"},
    "modelRepository": {"source": "pvc", "pvc": {"claimName": "models", "subPath": "shopvision"}},
    "metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True},
                "grafanaDashboard": {"enabled": True}},
    "extraArgs": ["--log-verbose=1"],
    "modelControl": "explicit",
}
OBJECT_STORE_VALUES = {"modelRepository": {"source": "objectStore", "objectStore": {
    "url": "s3://bucket/shopvision/model_repository", "credentialsSecret": "aws-credentials"}}}


def render(values: dict, *, component: str = "inference-server") -> dict[str, dict]:
    """Manifests of one component (Triton's, or the search service's "search-api") by kind: one of each."""
    rendered = helm.render(values)
    manifests = {}
    for path, text in rendered.items():
        if path.endswith(".yaml"):
            for document in yaml.safe_load_all(text):
                if document and document["metadata"]["labels"]["app.kubernetes.io/component"] == component:
                    kind = document["kind"]
                    manifests[f"{kind}/{document['metadata']['name']}" if kind in manifests else kind] = document
    return manifests


API_VALUES = {"api": {"enabled": True, "apiKeySecret": "shop-api", "corsOrigins": ["https://shop.example"],
                      "ingress": {"host": "search.example.com"}, "catalog": {"efSearch": 256},
                      "readsNeedKey": True, "readKeySecret": "shop-reader"},
              "ingress": {"enabled": True}}
API_MILVUS_VALUES = {"api": {"enabled": True, "autoscaling": {"enabled": True},
                             "catalog": {"milvusUri": "https://milvus:19530", "milvusTokenSecret": "milvus-auth",
                                         "milvusTlsSecret": "milvus-tls", "milvusTlsServerName": "milvus.shop"}}}


@pytest.mark.parametrize("values", [API_VALUES, API_MILVUS_VALUES], ids=["embedded", "milvus"])
def test_the_search_service_renders_valid_manifests_with_probes_and_its_catalog(values) -> None:
    import kubernetes_validate

    api = render(values, component="search-api")
    for kind, manifest in api.items():
        assert manifest["metadata"]["labels"]["app.kubernetes.io/name"] == "shopvision-api", kind
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    pod = api["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert pod["securityContext"]["runAsNonRoot"] and container["securityContext"]["allowPrivilegeEscalation"] is False
    env = {item["name"]: item for item in container["env"]}
    # Triton's own gRPC port: the gateway would count the whole service as one client.
    assert env["SHOPVISION_URL"]["value"] == "grpc://shop-shopvision:8011"
    # Triton's Service must not send inference traffic to the search service's pods, nor the reverse.
    triton = render(values)
    pod_labels = api["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert not triton["Service"]["spec"]["selector"].items() <= pod_labels.items()
    assert api["Service"]["spec"]["selector"].items() <= pod_labels.items()
    if values is API_VALUES:
        assert env["SHOPVISION_CATALOG"]["value"] == "/catalog/index" and "PersistentVolumeClaim" in api
        assert api["Deployment"]["spec"]["strategy"] == {"type": "Recreate"}
        assert env["SHOPVISION_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "shop-api", "key": "api-key"}
        assert env["SHOPVISION_CORS_ORIGINS"]["value"] == "https://shop.example"
        assert env["SHOPVISION_CATALOG_EF_SEARCH"]["value"] == "256"  # what ApiSettings.from_environment reads
        assert env["SHOPVISION_API_READ_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "shop-reader", "key": "read-key"}
        assert env["SHOPVISION_API_READS_NEED_KEY"]["value"] == "true"
        hosts = {rule["host"]: rule for rule in triton["Ingress"]["spec"]["rules"]}
        assert hosts["search.example.com"]["http"]["paths"][0]["backend"]["service"]["name"] == "shop-shopvision-api"
    else:
        assert env["SHOPVISION_CATALOG"]["value"] == "https://milvus:19530" and "PersistentVolumeClaim" not in api
        # What shopvision.catalog.milvus_store.MilvusConnection.from_environment() reads in the service.
        assert env["MILVUS_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "milvus-auth", "key": "token"}
        assert env["MILVUS_SERVER_NAME"]["value"] == "milvus.shop" and "SHOPVISION_CATALOG_EF_SEARCH" not in env
        (mount,) = container["volumeMounts"]
        assert f"{mount['mountPath']}/server.pem" == env["MILVUS_SERVER_PEM"]["value"] and mount["readOnly"]
        assert pod["volumes"] == [{"name": mount["name"], "secret": {"secretName": "milvus-tls"}}]
        assert api["HorizontalPodAutoscaler"]["spec"]["minReplicas"] == 2
        assert "replicas" not in api["Deployment"]["spec"]


def test_chart_lints_clean() -> None:
    for values in ({}, PRODUCTION_VALUES, OBJECT_STORE_VALUES, API_VALUES, API_MILVUS_VALUES):
        assert helm.lint(values)["errors"] == []


@pytest.mark.parametrize("values", [{}, PRODUCTION_VALUES, OBJECT_STORE_VALUES], ids=["default", "production", "s3"])
def test_chart_renders_manifests_valid_against_kubernetes_schemas(values) -> None:
    import kubernetes_validate

    manifests = render(values)
    for kind, manifest in manifests.items():
        assert manifest["metadata"]["labels"]["app.kubernetes.io/name"] == "shopvision", kind
        if kind not in CUSTOM_RESOURCES:
            kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    container, gateway = pod["containers"]
    assert {port["name"]: port["containerPort"] for port in container["ports"]} == {
        "triton-http": 8000, "triton-grpc": 8001, "metrics": 8002}
    assert container["startupProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "triton-http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "triton-http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "triton-http"}
    # The Service's http and grpc lead to the gateway, which is ready when Triton is behind it.
    assert {port["name"]: port["containerPort"] for port in gateway["ports"]} == {"http": 8080, "grpc": 8081}
    service_ports = {port["name"]: port["targetPort"] for port in manifests["Service"]["spec"]["ports"]}
    assert service_ports == {"http": "http", "grpc": "grpc", "metrics": "metrics", "triton-grpc": "triton-grpc"}
    assert gateway["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert gateway["securityContext"]["readOnlyRootFilesystem"] is True
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300  # model load, object-store download
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    shm = next(volume for volume in pod["volumes"] if volume["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"
    # Out of the Service first (preStop), then Triton's exit timeout, then a margin.
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "10"]
    assert pod["terminationGracePeriodSeconds"] == 10 + 30 + 15
    assert {item["name"] for item in container["env"]} >= {"SHOPVISION_MODEL_REPOSITORY", "SHOPVISION_EXIT_TIMEOUT_S"}
    # A pod without a GPU (the default) serves the configuration measured for CPU nodes.
    gpu = "nvidia.com/gpu" in container["resources"].get("limits", {})
    config_name = next(item["value"] for item in container["env"] if item["name"] == "SHOPVISION_MODEL_CONFIG_NAME")
    assert config_name == ("default" if gpu else "cpu")


def test_production_values_wire_gpu_tls_admin_key_autoscaling_and_monitoring() -> None:
    manifests = render(PRODUCTION_VALUES)
    container = manifests["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    env = {item["name"]: item for item in container["env"]}
    assert env["SHOPVISION_GRPC_TLS_CLIENT_CA"]["value"] == "/etc/shopvision/tls/ca.crt"
    assert env["SHOPVISION_ADMIN_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "shopvision-admin", "key": "admin-key"}
    assert env["SHOPVISION_MODEL_REPOSITORY"]["value"] == "/mnt/model-repository"
    assert env["SHOPVISION_MODEL_CONTROL"]["value"] == "explicit"
    assert env["SHOPVISION_MODEL_CONFIG_NAME"]["value"] == "default"
    assert container["args"] == ["--log-verbose=1"]
    metrics = manifests["HorizontalPodAutoscaler"]["spec"]["metrics"]
    assert [metric["type"] for metric in metrics] == ["Resource", "Pods"]
    assert "replicas" not in manifests["Deployment"]["spec"]
    assert manifests["PrometheusRule"]["spec"] == yaml.safe_load(ALERTS.read_text())
    assert json.loads(manifests["ConfigMap"]["data"]["shopvision.json"]) == json.loads(DASHBOARD.read_text())
    assert manifests["ServiceMonitor"]["spec"]["endpoints"][0]["port"] == "metrics"
    assert {p["name"]: p.get("appProtocol") for p in manifests["Service"]["spec"]["ports"]}["grpc"] == "grpcs"


def test_object_store_repository_is_passed_to_triton_as_a_url() -> None:
    container = render(OBJECT_STORE_VALUES)["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["SHOPVISION_MODEL_REPOSITORY"] == "s3://bucket/shopvision/model_repository"
    assert container["envFrom"] == [{"secretRef": {"name": "aws-credentials"}}]


@pytest.mark.parametrize("values, message", [
    ({"modelRepository": {"source": "pvc"}}, "claimName is required"),
    ({"modelRepository": {"source": "objectStore"}}, "url is required"),
    ({"tls": {"grpc": {"enabled": True}}}, "secretName is required"),
    ({"modelRepository": {"source": "ftp"}}, "must be image, pvc or objectStore"),
    ({"api": {"enabled": True, "replicaCount": 2}}, "several replicas would corrupt the embedded catalog"),
    ({"api": {"enabled": True, "autoscaling": {"enabled": True}}}, "several replicas would corrupt"),
    ({"adminApi": {"existingSecret": "admin"}, "ingress": {"enabled": True}}, "the Ingress needs TLS"),
    ({"api": {"enabled": True, "apiKeySecret": "k", "feedSync": {"enabled": True}}}, "feedSync.feedUrl is required"),
    ({"api": {"enabled": True, "feedSync": {"enabled": True, "feedUrl": "s3://b/f.tsv"}}}, "needs api.apiKeySecret"),
    ({"api": {"enabled": True, "apiKeySecret": "k", "feedSync": {"enabled": True, "feedUrl": "s3://b/f.tsv",
                                                                 "missing": "delete"}}}, "missing must be remove"),
])
def test_chart_refuses_incomplete_values(values, message) -> None:
    with pytest.raises(helm.ChartRefused, match=message):
        render(values)


def test_container_entrypoint_turns_the_environment_into_tritonserver_flags() -> None:
    options = options_from_environment({
        "SHOPVISION_MODEL_REPOSITORY": "s3://bucket/models", "SHOPVISION_ADMIN_KEY": "k3y",
        "SHOPVISION_GRPC_TLS_CERT": "/tls/tls.crt", "SHOPVISION_GRPC_TLS_KEY": "/tls/tls.key",
        "SHOPVISION_GRPC_TLS_CLIENT_CA": "/tls/ca.crt"}, ["--log-verbose=1"], gpu=True)
    arguments = triton_arguments(options)
    assert "--model-repository=s3://bucket/models" in arguments  # not collapsed into a path
    assert "--http-address=0.0.0.0" in arguments and "--model-control-mode=none" in arguments
    explicit = triton_arguments(options_from_environment({"SHOPVISION_MODEL_CONTROL": "explicit"}, [], gpu=True))
    assert {"--model-control-mode=explicit", "--load-model=*"} <= set(explicit)
    assert not any(argument.startswith("--model-config-name") for argument in arguments)
    restricted = "model-repository,shared-memory,trace,logging:shopvision-admin-key=k3y"
    assert f"--grpc-restricted-protocol={restricted}" in arguments
    assert {"--grpc-use-ssl=true", "--grpc-server-cert=/tls/tls.crt", "--grpc-use-ssl-mutual=true",
            "--grpc-root-cert=/tls/ca.crt"} <= set(arguments)
    assert arguments[-1] == "--log-verbose=1"
    with pytest.raises(SystemExit, match="set together"):
        options_from_environment({"SHOPVISION_GRPC_TLS_CERT": "/tls/tls.crt"}, [], gpu=True)


@pytest.mark.parametrize("requested, gpu, expected", [
    (None, False, "cpu"), ("auto", False, "cpu"), ("", True, None), ("auto", True, None),
    ("default", False, None), ("cpu", True, "cpu"),
])
def test_container_picks_the_cpu_configuration_when_no_gpu_is_visible(requested, gpu, expected) -> None:
    environ = {} if requested is None else {"SHOPVISION_MODEL_CONFIG_NAME": requested}
    arguments = triton_arguments(options_from_environment(environ, [], gpu=gpu))
    names = [argument.removeprefix("--model-config-name=") for argument in arguments
             if argument.startswith("--model-config-name=")]
    assert names == ([expected] if expected else [])


def test_a_gpu_is_visible_when_the_runtime_mounted_its_device(tmp_path: Path) -> None:
    (tmp_path / "nvidiactl").touch()
    assert not gpu_visible(tmp_path)
    (tmp_path / "nvidia0").touch()
    assert gpu_visible(tmp_path)


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "locust.Dockerfile", "api.Dockerfile"])
def test_dockerfiles_pass_hadolint(dockerfile) -> None:
    result = subprocess.run([Path(sys.executable).parent / "hadolint", "--failure-threshold", "warning",
                             ROOT / "deploy" / dockerfile], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_as_non_root_with_a_readiness_healthcheck() -> None:
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    assert re.search(r"^USER 1000:1000$", text, flags=re.MULTILINE)
    assert "/v2/health/ready" in text.split("HEALTHCHECK", 1)[1]
    assert re.search(r"^ARG TRITON_IMAGE=nvcr\.io/nvidia/tritonserver:\d\d\.\d\d-py3$", text, flags=re.MULTILINE)


def test_the_cpu_image_installs_the_engine_the_suite_serves_with() -> None:
    """The CPU node's resnet50 runs on the engine wheel the image installs: the same pin as the `server` extra."""
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    (packages,) = re.findall(r'^ARG ENGINE_PACKAGES="([^"]+)"$', text, flags=re.MULTILINE)
    (server_extra,) = re.findall(r"^server = \[(.*)\]$", (ROOT / "pyproject.toml").read_text(), flags=re.MULTILINE)
    image_pins = packages.split()
    assert image_pins and all(f'"{pin}"' in server_extra for pin in image_pins), (image_pins, server_extra)
    assert any(pin.startswith("onnxruntime==") for pin in image_pins)  # the default engine, and the head's


def test_nothing_in_code_makefile_or_ci_fetches_pins_or_builds_a_triton_backend() -> None:
    """Triton's C++ backends come only with the official container: the product may not build one."""
    # Spelled in pieces so that this file does not find itself.
    forbidden = re.compile("backend" + " build|BACKEND" + "_MIRROR|onnxruntime" + "_backend|c" + "make", re.IGNORECASE)
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True)
    places = [name for name in tracked.stdout.split("\0")
              if name and not name.startswith(("docs/", "benchmarks/results/")) and name != "README.md"]
    assert "Makefile" in places and ".ci/run" in places
    found = [f"{name}:{number}: {line.strip()}" for name in places if (ROOT / name).is_file()
             and not (ROOT / name).is_symlink()
             for number, line in enumerate((ROOT / name).read_text(errors="replace").splitlines(), start=1)
             if forbidden.search(line)]
    assert not found, "\n".join(found)


def compose_config(*profiles: str, **environment: str) -> subprocess.CompletedProcess:
    import compose

    binary = Path(compose.__file__).parent / "docker-compose"
    flags = [flag for profile in profiles for flag in ("--profile", profile)]
    clean = {key: value for key, value in os.environ.items()
             if key not in ("GRAFANA_ADMIN_PASSWORD", "SHOPVISION_BIND")}
    return subprocess.run([binary, "-f", ROOT / "docker-compose.yml", *flags, "config", "--format", "json"],
                          capture_output=True, text=True, check=False, env={**clean, **environment})


@pytest.mark.parametrize("profiles", [["cpu"], ["gpu"], ["cpu", "load"]])
def test_compose_file_is_valid(profiles) -> None:
    result = compose_config(*profiles, GRAFANA_ADMIN_PASSWORD="s3cret")
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    triton = services[f"triton-{profiles[0]}"]
    assert triton["shm_size"] and triton["healthcheck"]["test"][-1].endswith("/v2/health/ready")
    assert triton["environment"]["SHOPVISION_MODEL_CONFIG_NAME"] == {"cpu": "cpu", "gpu": "default"}[profiles[0]]
    assert "SHOPVISION_ADMIN_KEY" in triton["environment"]
    assert {"prometheus", "grafana"} <= set(services)
    assert ("locust" in services) == ("load" in profiles)
    api = services["api"]
    assert api["environment"]["SHOPVISION_URL"] == "grpc://triton:8001"
    assert "/readyz" in api["healthcheck"]["test"][-1]
    assert api["depends_on"][f"triton-{profiles[0]}"]["condition"] == "service_healthy"
    assert any(volume["target"] == "/catalog" for volume in api["volumes"])
    published = [port for service in services.values() for port in service.get("ports", [])]
    assert published and all(port["host_ip"] == "127.0.0.1" for port in published)
    assert services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "s3cret"


def test_compose_needs_a_grafana_password_and_opens_ports_only_when_asked() -> None:
    refused = compose_config("cpu")
    assert refused.returncode != 0 and "set GRAFANA_ADMIN_PASSWORD" in refused.stderr
    opened = compose_config("cpu", GRAFANA_ADMIN_PASSWORD="s3cret", SHOPVISION_BIND="0.0.0.0")
    assert opened.returncode == 0, opened.stderr
    services = json.loads(opened.stdout)["services"]
    assert {port["host_ip"] for service in services.values() for port in service.get("ports", [])} == {"0.0.0.0"}


def test_push_script_dry_run_tags_version_and_git_sha() -> None:
    result = subprocess.run([ROOT / "scripts" / "push-image.sh", "--registry", "ghcr.io/acme", "--dry-run"],
                            capture_output=True, text=True, check=False, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout.strip()
    commands = result.stdout.splitlines()
    assert commands[0].startswith("+ docker build -f deploy/Dockerfile")
    assert f"-t ghcr.io/acme/shopvision:{shopvision.__version__} " in commands[0]
    assert f"ghcr.io/acme/shopvision:{shopvision.__version__}-{sha}" in commands[0]
    assert [line.split()[-1].rsplit(":", 1)[1] for line in commands[1:]][0] == shopvision.__version__
    assert all(line.startswith("+ docker push ") for line in commands[1:])


def promtool(*args: str) -> subprocess.CompletedProcess:
    if shutil.which("promtool") is None:
        pytest.fail("promtool not found: run `make system-deps` (Debian package prometheus)")
    return subprocess.run(["promtool", *args], capture_output=True, text=True, check=False)


@pytest.mark.system
def test_promtool_checks_the_rules_the_compose_config_and_the_rule_unit_tests(tmp_path) -> None:
    assert promtool("check", "rules", str(ALERTS)).returncode == 0
    config = yaml.safe_load((ROOT / "deploy" / "monitoring" / "prometheus.yml").read_text())
    config["rule_files"] = [str(ALERTS)]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    checked = promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", str(ROOT / "deploy" / "monitoring" / "alerts_test.yml"))
    assert tested.returncode == 0, tested.stdout + tested.stderr


PROMQL_WORDS = {"sum", "by", "rate", "max", "avg", "clamp_min", "histogram_quantile", "absent", "on", "le", "route",
                "status",
                "model", "pod", "quantile", "gpu_uuid", "and", "or", "without"}


def metric_names(expression: str) -> set[str]:
    expression = re.sub(r'"[^"]*"', "", expression)  # label values
    expression = re.sub(r"\{[^}]*\}", "", expression)  # label matchers
    expression = re.sub(r"\[[^\]]*\]", "", expression)  # ranges
    expression = re.sub(r"(?<![\w.])\d+(\.\d+)?(e-?\d+)?", "", expression)  # numbers such as 1e-9
    return set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expression)) - PROMQL_WORDS


def dashboard_and_alert_metrics() -> set[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    expressions = [target["expr"] for panel in panels for target in panel["targets"]]
    expressions += [rule["expr"] for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]
    return set().union(*(metric_names(expression) for expression in expressions))


@pytest.mark.integration
def test_the_confidence_histogram_counts_every_classified_image(triton: RunningServer) -> None:
    """One observation an image: the histogram's count is quality_monitor's inference count (exact, from the
    statistics extension) read on both sides of the scrape, and it grew by the 5 images classified."""
    def monitored() -> int:
        return inference_counts(triton.http_address, QUALITY_MONITOR_MODEL)[0]

    before = monitored()
    with shopvision.Client(triton.http_url) as client:
        results = client.classify([product_jpeg(7000 + i, size=(160, 120)) for i in range(5)], top_k=1)
    assert counts_reaching(triton.http_address, QUALITY_MONITOR_MODEL, before + 5)[0] >= before + 5
    assert_counter_between(triton.metrics_url, f"{CONFIDENCE_METRIC}_count", before + 5, monitored,
                           model=RESNET_MODEL)
    total = metric(scrape(triton.metrics_url), f"{CONFIDENCE_METRIC}_sum", model=RESNET_MODEL)
    assert total >= sum(result[0].score for result in results) * 0.999


@pytest.mark.integration
def test_dashboard_and_alerts_query_only_metrics_the_servers_export(triton: RunningServer,
                                                                    search_service: ServiceThread) -> None:
    with shopvision.Client(triton.grpc_url) as client:
        client.classify([product_jpeg(1)])
    with search_service.client() as http:
        assert http.post("/v1/search", files={"image": ("q.jpg", product_jpeg(2))}).status_code == 200
    wait_for_metric(triton.metrics_url, f"{CONFIDENCE_METRIC}_count", 1)
    exported = {key.split("{")[0] for key in samples(scrape(triton.metrics_url))}
    exported |= {key.split("{")[0] for key in samples(scrape(f"{search_service.url}/metrics"))}
    used = dashboard_and_alert_metrics()
    assert used - exported <= GPU_ONLY_METRICS, sorted(used - exported - GPU_ONLY_METRICS)
    assert {"nv_inference_request_success", "nv_inference_queue_duration_us", "nv_inference_exec_count",
            "nv_inference_request_summary_us", f"{CONFIDENCE_METRIC}_bucket",
            "shopvision_api_request_duration_seconds_bucket", "shopvision_api_vector_search_duration_seconds_bucket",
            "shopvision_api_triton_duration_seconds_bucket", "shopvision_api_requests_total"} <= used


@pytest.mark.integration
@pytest.mark.system
def test_real_prometheus_scrapes_triton_and_evaluates_the_alert_rules(triton: RunningServer, tmp_path) -> None:
    if shutil.which("prometheus") is None:
        pytest.fail("prometheus not found: run `make system-deps` (Debian package prometheus)")
    (port,) = free_ports(1)
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"}, "rule_files": [str(ALERTS)],
              "scrape_configs": [{"job_name": "triton", "static_configs": [
                  {"targets": [triton.metrics_url.removeprefix("http://").removesuffix("/metrics")]}]}]}
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    prometheus = subprocess.Popen(
        ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    api = f"http://127.0.0.1:{port}/api/v1"

    def query(expression: str) -> list:
        url = f"{api}/query?{urllib.parse.urlencode({'query': expression})}"
        return json.loads(urllib.request.urlopen(url, timeout=5).read())["data"]["result"]

    try:
        with shopvision.Client(triton.grpc_url) as client:
            deadline = time.monotonic() + 60
            firing_share = []
            while time.monotonic() < deadline and not firing_share:
                # a stream with one bad upload in three: the error-rate alert's condition holds
                client.analyze([product_jpeg(1, size=(160, 120)), b"not an image", product_jpeg(2, size=(160, 120))],
                               on_error="report")
                time.sleep(1)
                try:
                    firing_share = query(yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"][0]["expr"])
                except OSError:
                    continue
        assert firing_share and float(firing_share[0]["value"][1]) > 0.05
        assert query('nv_inference_request_success{model="shopvision"}')
        deadline = time.monotonic() + 20
        while True:  # the rule evaluates every second, after the query above already held
            rules = json.loads(urllib.request.urlopen(f"{api}/rules", timeout=5).read())["data"]["groups"][0]["rules"]
            states = {rule["name"]: rule["state"] for rule in rules}
            if states["ShopvisionHighErrorRate"] != "inactive" or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert {rule["name"] for rule in rules} == {
            "ShopvisionHighErrorRate", "ShopvisionHighLatencyP99", "ShopvisionQueueGrowing",
            "ShopvisionModelNotReady", "ShopvisionConfidenceDrift"}
        assert all(rule["health"] == "ok" for rule in rules), rules
        assert states["ShopvisionHighErrorRate"] in {"pending", "firing"}  # `for: 5m` keeps it pending here
        assert states["ShopvisionModelNotReady"] == "inactive"
    finally:
        prometheus.terminate()
        prometheus.wait(timeout=30)


def test_an_open_admin_api_renders_behind_an_ingress_only_with_tls() -> None:
    tls = [{"secretName": "shopvision-tls", "hosts": ["shopvision.example.com"]}]
    rendered = render({"adminApi": {"existingSecret": "admin"}, "ingress": {"enabled": True, "tls": tls}})
    assert rendered["Ingress"]["spec"]["tls"] == tls


def test_only_the_ingress_controller_and_the_api_reach_triton_and_only_prometheus_its_metrics() -> None:
    import kubernetes_validate

    triton = render({"api": {"enabled": True}})
    policy = triton["NetworkPolicy"]
    kubernetes_validate.validate(policy, KUBERNETES_VERSION, strict=True)
    pod_labels = triton["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    gateway, api, scraping = policy["spec"]["ingress"]
    # The Ingress controller reaches the gateway's ports, which the Service's http and grpc lead to.
    assert {port["port"] for port in gateway["ports"]} == {"http", "grpc"}
    assert gateway["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]
    pod = triton["Deployment"]["spec"]["template"]["spec"]
    containers = {container["name"]: container for container in pod["containers"]}
    assert {port["name"] for port in containers["gateway"]["ports"]} == {"http", "grpc"}
    # The search API alone reaches Triton's own gRPC port.
    api_pods = render({"api": {"enabled": True}}, component="search-api")["Deployment"]["spec"]["template"]
    assert [port["port"] for port in api["ports"]] == ["triton-grpc"]
    assert api["from"][0]["podSelector"]["matchLabels"].items() <= api_pods["metadata"]["labels"].items()
    assert {port["name"] for port in containers["tritonserver"]["ports"]} == {"triton-http", "triton-grpc", "metrics"}
    assert [port["port"] for port in scraping["ports"]] == ["metrics"]
    assert len(render({})["NetworkPolicy"]["spec"]["ingress"]) == 2  # no API: nothing reaches Triton's own gRPC
    assert "NetworkPolicy" not in render({"networkPolicy": {"enabled": False}})
