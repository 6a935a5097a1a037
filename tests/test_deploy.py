"""The Kubernetes manifests of deploy/: valid YAML, consistent with each other and the server.

They are not applied to a cluster here; these checks catch what a cluster would reject
first or what would silently misroute: probe ports, selectors, names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from imeireg.server.serving.process import SERVICE_NAME

yaml = pytest.importorskip("yaml", reason="PyYAML is not installed")

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def manifests() -> dict[str, list[dict[str, Any]]]:
    """The documents of each deploy/*.yaml, by file name."""
    return {
        path.name: [document for document in yaml.safe_load_all(path.read_text()) if document]
        for path in sorted(DEPLOY.glob("*.yaml"))
    }


def resources() -> dict[tuple[str, str], dict[str, Any]]:
    """Every Kubernetes object of the manifests, by (kind, name)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for name, documents in manifests().items():
        if name == "kustomization.yaml":
            continue
        for document in documents:
            found[document["kind"], document["metadata"]["name"]] = document
    return found


def test_the_manifests_hold_the_objects_of_the_deployment_section() -> None:
    assert sorted(resources()) == [
        ("ConfigMap", "imeireg-snapshot-fetch"),
        ("Deployment", "imeireg"),
        ("PodDisruptionBudget", "imeireg"),
        ("Service", "imeireg"),
        ("Service", "imeireg-headless"),
    ]
    assert all("apiVersion" in document for document in resources().values())


def test_kustomization_lists_every_manifest() -> None:
    (kustomization,) = manifests()["kustomization.yaml"]
    assert kustomization["kind"] == "Kustomization"
    assert sorted(kustomization["resources"]) == sorted(set(manifests()) - {"kustomization.yaml"})


def test_every_grpc_probe_asks_the_health_service_on_the_container_port() -> None:
    pod = resources()["Deployment", "imeireg"]["spec"]["template"]["spec"]
    (server,) = [c for c in pod["containers"] if c["name"] == "imeireg"]
    (port,) = [p["containerPort"] for p in server["ports"]]
    probes = {
        kind: server[kind]["grpc"] for kind in ("startupProbe", "readinessProbe", "livenessProbe")
    }
    assert {probe["port"] for probe in probes.values()} == {port}
    assert probes["readinessProbe"]["service"] == SERVICE_NAME
    assert f"--port={port}" in server["args"]
    assert "--db=/snapshots/current" in server["args"]


def test_services_select_the_pods_and_reach_their_port() -> None:
    objects = resources()
    deployment = objects["Deployment", "imeireg"]["spec"]
    labels = deployment["template"]["metadata"]["labels"]
    assert deployment["selector"]["matchLabels"].items() <= labels.items()
    container_ports = {
        p["containerPort"]
        for c in deployment["template"]["spec"]["containers"]
        for p in c.get("ports", [])
    }
    for name in ("imeireg", "imeireg-headless"):
        service = objects["Service", name]["spec"]
        assert service["selector"].items() <= labels.items()
        assert {p["targetPort"] for p in service["ports"]} <= container_ports
    assert objects["Service", "imeireg-headless"]["spec"]["clusterIP"] == "None"


def test_pods_mount_the_snapshot_script_that_exists() -> None:
    objects = resources()
    pod = objects["Deployment", "imeireg"]["spec"]["template"]["spec"]
    (script_volume,) = [v for v in pod["volumes"] if "configMap" in v]
    script = objects["ConfigMap", script_volume["configMap"]["name"]]
    assert "imeireg snapshot install" in script["data"]["fetch-snapshot.sh"]
    (fetch,) = pod["initContainers"]
    assert fetch["command"][-1].endswith("/fetch-snapshot.sh")
