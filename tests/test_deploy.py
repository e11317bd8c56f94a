"""The deployments under deploy/: docker compose (with haproxy) and the Helm chart.

Docker's compose plugin and a cluster are not available to the tests, so:

* compose.yaml is parsed by ``compose-spec`` (PyPI: bindings of the Rust ``compose_spec`` parser,
  which refuses unknown keys, bad durations and bad ports), and its cross-references are checked
  here (services, volumes, mounted files, variables, ports and health checks against the gateway's
  config and haproxy.cfg); haproxy.cfg is checked by the real ``haproxy -c``;
* the chart is rendered by Helm's own Go engine (``helm-python-sdk``: Helm v4's SDK in a shared
  library, no ``helm`` binary) and every manifest is validated against the Kubernetes API schemas
  shipped by ``kubernetes-validate`` (offline, strict: unknown fields refused);
* the gateway configuration of both is loaded by toolmesh's own config loader and validators.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from toolmesh.gateway.config import GatewaySettings
from toolmesh.hub.configfile import load_config, parse_config
from toolmesh.store.shared import StateSettings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "toolmesh"
#: The Kubernetes version the rendered manifests are validated for.
K8S_VERSION = "1.33.0"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?([-?])([^}]*))?\}")


# -- compose ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    from compose_spec import PyCompose

    text = (DEPLOY / "compose.yaml").read_text()
    parsed: dict[str, Any] = PyCompose.from_yaml(text).to_dict()  # raises ValueError on a spec violation
    return parsed


def _env_example() -> dict[str, str]:
    out = {}
    for line in (DEPLOY / ".env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            out[name.strip()] = value.strip()
    return out


def _interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR:?error} (what compose.yaml uses), from ``env``."""

    def sub(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if env.get(name):
            return env[name]
        if op == "-":
            return arg or ""
        raise AssertionError(f"${{{name}}} is required ({arg}) and not in deploy/.env.example")

    return _VAR.sub(sub, value)


def test_compose_spec_parser_refuses_a_bad_file() -> None:
    # The parser is a real check: an unknown key is refused (so a typo in compose.yaml would be).
    from compose_spec import PyCompose

    with pytest.raises(ValueError, match="healthcheks"):
        PyCompose.from_yaml("services:\n  gw:\n    image: x\n    healthcheks: {}\n")


def test_compose_references_resolve(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"gateway", "migrate", "haproxy", "redis", "postgres", "tools"} <= set(services)
    named_volumes = set(compose.get("volumes") or {})
    for name, svc in services.items():
        for dep in svc.get("depends_on") or {}:
            assert dep in services, f"{name} depends on unknown service {dep}"
        for mount in svc.get("volumes") or []:
            source = mount.split(":", 1)[0] if isinstance(mount, str) else mount["source"]
            if source.startswith("."):
                assert (DEPLOY / source).is_file(), f"{name} mounts {source}, which does not exist"
            else:
                assert source in named_volumes, f"{name} uses undeclared volume {source}"
        build = svc.get("build")
        if build:
            context = (DEPLOY / build["context"]).resolve()
            assert (context / build["dockerfile"]).is_file()
            assert (context / "pyproject.toml").is_file()  # `pip install .` needs the project root
    # One image for every toolmesh process kind.
    assert {services[s]["image"] for s in ("gateway", "migrate", "tools")} == {"toolmesh:local"}


def test_compose_variables_are_documented() -> None:
    # Every variable without a default must be in .env.example (compose refuses to start without it).
    text = (DEPLOY / "compose.yaml").read_text()
    env = _env_example()
    for m in _VAR.finditer(text):
        if m.group(2) != "-":
            assert m.group(1) in env, f"${{{m.group(1)}}} has no default and is missing from deploy/.env.example"


def test_compose_gateway_matches_its_config_and_haproxy(compose: dict[str, Any]) -> None:
    services = compose["services"]
    gw = services["gateway"]
    env = {k: _interpolate(str(v), _env_example()) for k, v in gw["environment"].items()}
    config = load_config(DEPLOY / "toolmesh.yaml", env=env)
    settings = GatewaySettings.from_section(config.section("gateway"), config.source)
    state = StateSettings.from_section(config.section("state"), config.source)
    port = settings.port
    # One uvicorn process per container; the fallback share counts the containers.
    assert settings.workers == 1 and gw["command"][-2:] == ["--workers", "1"]
    assert state.url == env["TOOLMESH_STATE_URL"] and state.url.startswith("redis://")
    assert state.replicas == gw["deploy"]["replicas"]
    assert config.section("store")["url"] == env["TOOLMESH_STORE_URL"]
    assert config.section("store")["url"].startswith("postgresql://")
    # Every upstream is a service of the file (the demo tools).
    for server in config.servers.values():
        host = server.url.split("//", 1)[1].split(":", 1)[0]
        assert host in services
    # Liveness on the container, readiness in haproxy, both on the gateway's port.
    probe = " ".join(gw["healthcheck"]["test"])
    assert f"http://127.0.0.1:{port}/healthz" in probe
    assert str(port) in [str(p) for p in gw["expose"]]
    grace = gw["stop_grace_period"]
    assert grace.endswith("s") and int(grace[:-1]) > settings.drain_timeout
    cfg = (DEPLOY / "haproxy.cfg").read_text()
    assert "option httpchk GET /readyz" in cfg
    template = re.search(r"server-template \S+ (\d+) (\S+):(\d+)", cfg)
    assert template is not None
    assert template.group(2) == "gateway" and int(template.group(3)) == port
    assert int(template.group(1)) >= gw["deploy"]["replicas"]
    bind = re.search(r"frontend toolmesh\n\s+bind :(\d+)", cfg)
    assert bind is not None
    assert any(str(p).split(":")[-1] == bind.group(1) for p in services["haproxy"]["ports"])
    assert "/metrics" in cfg  # denied at the load balancer: Prometheus scrapes replicas directly
    # Migrations first, then the gateways; the store and Redis answer before either starts.
    assert gw["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["command"][0] == "migrate"
    # The migration loads the same file: its environment must fill every variable the file needs.
    migrate_env = {k: _interpolate(str(v), _env_example()) for k, v in services["migrate"]["environment"].items()}
    assert load_config(DEPLOY / "toolmesh.yaml", env=migrate_env).section("store") == config.section("store")
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("redis", "postgres", "haproxy"):
        assert services[name]["healthcheck"]["test"]


def test_haproxy_config_is_valid(tmp_path: Path) -> None:
    binary = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
    if binary is None:
        pytest.skip("haproxy is not installed (Debian package 'haproxy'; `make test` installs it)")
    out = subprocess.run([binary, "-c", "-f", str(DEPLOY / "haproxy.cfg")], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr


def test_dockerfile_builds_the_runtime_image() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.M)
    assert re.search(r"^RUN pip install \. ", text, re.M)
    assert 'ENTRYPOINT ["toolmesh"]' in text and '"--workers", "1"' in text
    assert re.search(r"^USER \d+", text, re.M)  # not root
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert ignore[0:1] == ["*"] or "*" in ignore
    assert {"!pyproject.toml", "!README.md", "!src/"} <= set(ignore)


# -- Helm ------------------------------------------------------------------------------------------
def _render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    helm = pytest.importorskip("helm_python", reason="helm-python-sdk (the dev extra) renders the chart")
    with helm.Chart.load(str(CHART)) as chart:
        files = chart.render(values or {}, name="prod", namespace="shop")
    docs = []
    for text in files.values():
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def _validate(docs: list[dict[str, Any]]) -> None:
    kv = pytest.importorskip("kubernetes_validate")
    for doc in docs:
        kv.validate(doc, K8S_VERSION, strict=True)  # raises ValidationError with the path


def _one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered"
    return found[0]


def _env(container: dict[str, Any]) -> dict[str, str]:
    """The container's environment, secrets replaced by placeholders of the right shape."""
    fake = {"state-url": "redis://:pw@redis:6379/0", "store-url": "postgresql://toolmesh:pw@pg:5432/toolmesh"}
    out = {}
    for item in container["env"]:
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        out[item["name"]] = fake.get(ref["key"], "secret") if ref else item["value"]
    return out


def test_kubernetes_validate_is_a_real_check() -> None:
    kv = pytest.importorskip("kubernetes_validate")
    bad = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
           "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "a", "imagee": "x"}]}}}}
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, K8S_VERSION, strict=True)


def test_chart_renders_valid_manifests() -> None:
    docs = _render()
    _validate(docs)
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in docs)
    assert kinds == sorted([
        ("ConfigMap", "prod-toolmesh"), ("Deployment", "prod-toolmesh"), ("Service", "prod-toolmesh"),
        ("PodDisruptionBudget", "prod-toolmesh"), ("HorizontalPodAutoscaler", "prod-toolmesh"),
        ("ConfigMap", "prod-toolmesh-migrate"), ("Job", "prod-toolmesh-migrate"),
        ("Deployment", "prod-toolmesh-tools"), ("Service", "prod-toolmesh-tools"),
    ])


def test_chart_passes_helm_lint() -> None:
    helm = pytest.importorskip("helm_python", reason="helm-python-sdk (the dev extra) lints the chart")
    report = helm.lint(str(CHART))
    assert report["total_charts_linted"] == 1 and report["errors"] == []
    # Only informational findings (Helm's severity 1: "icon is recommended").
    assert all(m["severity"] <= 1 for m in report["messages"]), report["messages"]


def test_chart_gateway_pods_probes_and_drain() -> None:
    docs = _render()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    deploy = _one(docs, "Deployment", "prod-toolmesh")
    pod = deploy["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    config = parse_config(yaml.safe_load(_one(docs, "ConfigMap", "prod-toolmesh")["data"]["toolmesh.yaml"]),
                          "configmap", env=_env(container))
    settings = GatewaySettings.from_section(config.section("gateway"))
    state = StateSettings.from_section(config.section("state"))
    # One uvicorn process per container, on the port the probes and the Service use.
    assert container["args"] == ["serve", "--config", "/etc/toolmesh/toolmesh.yaml", "--workers", "1"]
    assert settings.workers == 1 and settings.host == "0.0.0.0"
    (port,) = container["ports"]
    assert port == {"name": "http", "containerPort": settings.port, "protocol": "TCP"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    # preStop keeps serving while endpoints update; then SIGTERM and the gateway's own drain.
    sleep = container["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] == (
        int(sleep[1]) + settings.drain_timeout + values["terminationMarginSeconds"])
    # Secrets come from the Secret, never from values; the fallback share counts the most pods.
    assert state.url == "redis://:pw@redis:6379/0"
    assert config.section("store")["url"].startswith("postgresql://")
    assert state.replicas == values["autoscaling"]["maxReplicas"]
    assert "replicas" not in deploy["spec"]  # the HPA owns it
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts["/etc/toolmesh"] == "config"
    # The Service and the PDB select the gateway pods only (not the demo tools, not the migration).
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    service = _one(docs, "Service", "prod-toolmesh")
    assert service["spec"]["selector"] == deploy["spec"]["selector"]["matchLabels"] == labels
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert _one(docs, "PodDisruptionBudget", "prod-toolmesh")["spec"]["selector"]["matchLabels"] == labels
    tools = _one(docs, "Deployment", "prod-toolmesh-tools")["spec"]["template"]["metadata"]["labels"]
    assert not all(tools.get(k) == v for k, v in labels.items())
    for server in config.servers.values():
        assert server.url.startswith("http://prod-toolmesh-tools:")


def test_chart_autoscales_on_the_exported_in_flight_gauge() -> None:
    docs = _render()
    hpa = _one(docs, "HorizontalPodAutoscaler", "prod-toolmesh")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "prod-toolmesh"}
    pods = next(m["pods"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods")
    # The gauge a real gateway exports under that name: tests/test_deploy_gateway.py scrapes it.
    assert pods["metric"]["name"] == "toolmesh_gateway_in_flight"
    assert pods["target"] == {"type": "AverageValue", "averageValue": "64"}


def test_chart_autoscales_on_cpu_alone_without_the_adapter() -> None:
    docs = _render({"autoscaling": {"inFlightMetric": ""}})
    _validate(docs)
    hpa = _one(docs, "HorizontalPodAutoscaler", "prod-toolmesh")
    assert [m["type"] for m in hpa["spec"]["metrics"]] == ["Resource"]


def test_chart_migrations_run_as_a_hook_job() -> None:
    docs = _render()
    job = _one(docs, "Job", "prod-toolmesh-migrate")
    cm = _one(docs, "ConfigMap", "prod-toolmesh-migrate")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    # The job's config exists before the job: hooks run before the release's own ConfigMap.
    assert int(cm["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        job["metadata"]["annotations"]["helm.sh/hook-weight"])
    assert cm["data"] == _one(docs, "ConfigMap", "prod-toolmesh")["data"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"][:3] == ["migrate", "--config", "/etc/toolmesh/toolmesh.yaml"]
    gw = _one(docs, "Deployment", "prod-toolmesh")["spec"]["template"]["spec"]["containers"][0]
    assert container["env"] == gw["env"] and container["image"] == gw["image"]


def test_chart_without_autoscaling_pdb_or_migrations() -> None:
    docs = _render({"autoscaling": {"enabled": False}, "replicaCount": 4, "podDisruptionBudget": {"enabled": False},
                    "migrations": {"enabled": False}, "demoTools": {"enabled": False},
                    "image": {"repository": "registry.example.com/toolmesh", "tag": "1.2.3"}})
    _validate(docs)
    assert {d["kind"] for d in docs} == {"ConfigMap", "Deployment", "Service"}
    deploy = _one(docs, "Deployment", "prod-toolmesh")
    assert deploy["spec"]["replicas"] == 4
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.example.com/toolmesh:1.2.3"
    assert _env(container)["TOOLMESH_REPLICAS"] == "4"


def test_chart_config_change_rolls_the_pods() -> None:
    a = _one(_render(), "Deployment", "prod-toolmesh")
    b = _one(_render({"config": {"gateway": {"drain_timeout": 60}}}), "Deployment", "prod-toolmesh")
    key = "checksum/config"
    assert a["spec"]["template"]["metadata"]["annotations"][key] != b["spec"]["template"]["metadata"]["annotations"][key]
    # A longer drain lengthens the grace period with it.
    assert (b["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            - a["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]) == 30


# -- the command lines of both deployments, parsed by the real CLI (nothing runs) --------------------
def _parse_cli(args: list[str]) -> dict[str, Any]:
    import typer

    from toolmesh.cli.main import app

    root = typer.main.get_command(app)
    ctx = root.make_context("toolmesh", list(args))
    sub = root.get_command(ctx, args[0])  # type: ignore[attr-defined]
    assert sub is not None, f"no toolmesh command {args[0]!r}"
    params: dict[str, Any] = sub.make_context(args[0], list(args[1:]), parent=ctx).params
    return params


def test_deployment_command_lines_are_valid_cli(compose: dict[str, Any]) -> None:
    lines = [compose["services"]["gateway"]["command"], compose["services"]["migrate"]["command"]]
    docs = _render()
    lines.append(_one(docs, "Deployment", "prod-toolmesh")["spec"]["template"]["spec"]["containers"][0]["args"])
    lines.append(_one(docs, "Job", "prod-toolmesh-migrate")["spec"]["template"]["spec"]["containers"][0]["args"])
    dockerfile_cmd = re.search(r"^CMD (\[.*\])$", (DEPLOY / "Dockerfile").read_text(), re.M)
    assert dockerfile_cmd is not None
    lines.append(yaml.safe_load(dockerfile_cmd.group(1)))
    for args in lines:
        params = _parse_cli([str(a) for a in args])
        assert str(params["config"]) == "/etc/toolmesh/toolmesh.yaml"
        if args[0] == "serve":
            assert params["workers"] == 1
    with pytest.raises(Exception, match="No such option: --wrokers"):  # the parse is a real check
        _parse_cli(["serve", "--config", "x", "--wrokers", "1"])
