"""deploy/toolmesh.yaml boots a real gateway: probes, public /metrics with the autoscaling gauge,
shared state in a real Redis (one `toolmesh serve` process, as in a container)."""

from __future__ import annotations

from pathlib import Path

import httpx
import yaml

from gateway_support import Gateway
from services import redis_server

ROOT = Path(__file__).resolve().parent.parent


def test_deploy_config_serves_probes_and_the_in_flight_gauge(tmp_path: Path) -> None:
    config = yaml.safe_load((ROOT / "deploy" / "toolmesh.yaml").read_text())
    config["gateway"]["host"] = "127.0.0.1"  # the only change: tests bind to loopback (containers: 0.0.0.0)
    with redis_server() as redis:
        env = {"TOOLMESH_SESSION_SECRET": "s" * 32, "TOOLMESH_LLM_API_KEY": "sk-test",
               "TOOLMESH_STATE_URL": redis.url, "TOOLMESH_STORE_URL": f"sqlite:///{tmp_path / 'store.db'}",
               # Nothing listens there: readiness only needs every upstream tried once.
               "TOOLMESH_TOOLS_HOST": "127.0.0.1"}
        gw = Gateway(tmp_path, config, env=env).start(ready=True)
        try:
            assert httpx.get(gw.url + "/healthz", timeout=5).status_code == 200
            ready = httpx.get(gw.url + "/readyz", timeout=5).json()
            assert ready["status"] == "ready" and len(ready["upstreams_tried"]) == 5
            metrics = httpx.get(gw.url + "/metrics", timeout=10)  # metrics_public: no key
            assert metrics.status_code == 200
            lines = metrics.text.splitlines()
            # The gauge the Helm chart's HorizontalPodAutoscaler reads (values.autoscaling.inFlightMetric).
            chart = yaml.safe_load((ROOT / "deploy" / "helm" / "toolmesh" / "values.yaml").read_text())
            gauge = chart["autoscaling"]["inFlightMetric"]
            assert f"# TYPE {gauge} gauge" in lines
            assert any(line.startswith(f"{gauge} ") for line in lines)
            # state.url from the environment: the limits are shared through Redis.
            assert any(line.startswith("toolmesh_shared_state_up ") for line in lines)
        finally:
            gw.stop()
