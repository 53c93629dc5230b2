"""The kind suite's own machinery (e2e/kind/k8s.py), tested here without a cluster: a stand-in
``kubectl`` on PATH forwards ports to a real local kvnode (and exits now and then, as a port-forward
does when its pod goes away) and answers ``get`` with canned objects."""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from pathlib import Path

import pytest

from e2e.kind import k8s
from kvnode.testing.processes import ProcessCluster, free_port, is_serving

FAKE_KUBECTL = r'''#!PYTHON
"""A stand-in for kubectl: port-forward (a TCP relay that lives $FAKE_PF_LIFETIME seconds) and get."""
import asyncio, json, os, sys

args = sys.argv[1:]
if "port-forward" in args:
    local = int(args[args.index("port-forward") + 2].split(":")[0])
    target = int(os.environ["FAKE_TARGET_PORT"])

    async def pipe(reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def handle(reader, writer):
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", local, reuse_address=True)
        async with server:
            await asyncio.sleep(float(os.environ.get("FAKE_PF_LIFETIME", "3600")))

    asyncio.run(main())
elif "get" in args:
    with open(os.environ["FAKE_GET_" + args[args.index("get") + 1].upper()]) as f:
        sys.stdout.write(f.read())
else:
    sys.exit(f"fake kubectl: unsupported {args}")
'''


@pytest.fixture
def fake_kubectl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "kubectl"
    script.write_text(FAKE_KUBECTL.replace("PYTHON", sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


def test_missing_tools_are_named_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert k8s.missing_tools() == [f"{tool} (not on PATH)" for tool in k8s.TOOLS]


def test_a_port_forward_comes_back_after_it_ends(
    fake_kubectl: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with ProcessCluster(tmp_path / "node", 1) as cluster:
        cluster.start()
        monkeypatch.setenv("FAKE_TARGET_PORT", str(cluster[0].port))
        monkeypatch.setenv("FAKE_PF_LIFETIME", "1.5")  # "the pod went away" every 1.5 s
        forward = k8s.PortForward(k8s.Kubectl("kind-test", "ns"), "chaos-0", free_port()).start()
        try:
            k8s.wait_until(lambda: is_serving(forward.endpoint), 30, "the forward to serve", 0.1)
            k8s.wait_until(lambda: forward.restarts >= 2, 30, "the forward to be started again", 0.1)
            k8s.wait_until(lambda: is_serving(forward.endpoint), 30, "the forward to serve again", 0.1)
        finally:
            forward.stop()
        assert forward._process is not None and forward._process.poll() is not None


def _store_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: k8s.Body) -> None:
    path = tmp_path / "kvstore.json"
    path.write_text(json.dumps(body))
    monkeypatch.setenv("FAKE_GET_KVSTORE", str(path))


def _body(**status_changes: object) -> k8s.Body:
    members = [{"name": f"chaos-{i}", "state": "Active", "ready": True} for i in range(3)]
    status: k8s.Body = {
        "observedGeneration": 2,
        "readyReplicas": 3,
        "members": members,
        "conditions": [
            {"type": "Available", "status": "True"},
            {"type": "Progressing", "status": "False"},
            {"type": "Degraded", "status": "False"},
        ],
    }
    status.update(status_changes)
    return {"metadata": {"name": "chaos", "generation": 2}, "status": status}


@pytest.mark.parametrize(
    ("changes", "healthy"),
    [
        ({}, True),
        ({"readyReplicas": 2}, False),
        ({"observedGeneration": 1}, False),
        (
            {
                "conditions": [
                    {"type": "Available", "status": "False"},
                    {"type": "Degraded", "status": "False"},
                ]
            },
            False,
        ),
        (
            {"conditions": [{"type": "Available", "status": "True"}, {"type": "Degraded", "status": "True"}]},
            False,
        ),
        (
            {
                "members": [{"name": "chaos-0", "state": "Active", "ready": True}] * 2
                + [{"name": "chaos-2", "state": "Joining", "ready": True}]
            },
            False,
        ),
        ({"members": [{"name": "chaos-0", "state": "Active", "ready": False}] * 3}, False),
    ],
)
def test_status_is_true_only_when_everything_is(
    fake_kubectl: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, changes: k8s.Body, healthy: bool
) -> None:
    _store_json(tmp_path, monkeypatch, _body(**changes))
    assert k8s.Store(k8s.Kubectl("kind-test", "ns"), "chaos").healthy(3) is healthy


def test_the_chaos_store_tolerates_notready_nodes_briefly() -> None:
    spec = k8s.chaos_store("chaos", "ns", 3)["spec"]
    keys = {t["key"]: t["tolerationSeconds"] for t in spec["tolerations"]}
    assert keys == {"node.kubernetes.io/not-ready": 5, "node.kubernetes.io/unreachable": 5}


def test_the_backup_volume_is_one_host_folder_shared_by_every_node() -> None:
    """kind-config.yaml mounts one host folder into every node at the path of the hostPath
    PersistentVolume, which its claim binds to with ReadWriteMany; up.sh makes the folder."""
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((k8s.KIND_DIR / "kind-config.yaml").read_text())
    host = "/tmp/kvstore-e2e-backups"
    for node in config["nodes"]:
        assert node["extraMounts"] == [{"hostPath": host, "containerPath": k8s.BACKUP_MOUNT}], node
    volume, claim = yaml.safe_load_all((k8s.KIND_DIR / "backup-volume.yaml").read_text())
    assert volume["kind"] == "PersistentVolume" and claim["kind"] == "PersistentVolumeClaim"
    assert volume["spec"]["hostPath"]["path"] == k8s.BACKUP_MOUNT
    assert volume["spec"]["accessModes"] == claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert volume["spec"]["storageClassName"] == claim["spec"]["storageClassName"] == ""
    assert claim["spec"]["volumeName"] == volume["metadata"]["name"]
    assert f"mkdir -p -m 0777 {host}" in (k8s.KIND_DIR / "up.sh").read_text()


def test_images_are_loaded_through_an_archive() -> None:
    """`kind load docker-image` fails with Docker's containerd image store (kind issue 3795):
    up.sh, the README and docs/kubernetes.md load a `docker save` archive instead."""
    up = (k8s.KIND_DIR / "up.sh").read_text()
    assert "docker save" in up and "kind load image-archive" in up
    for path in (k8s.KIND_DIR / "up.sh", k8s.REPO / "README.md", k8s.REPO / "docs" / "kubernetes.md"):
        commands = [
            line.strip() for line in path.read_text().splitlines() if line.strip().startswith("kind load")
        ]
        assert commands, path
        assert all(line.startswith("kind load image-archive") for line in commands), (path, commands)


def test_every_hint_puts_the_demo_store_in_one_namespace() -> None:
    """up.sh's last hint, the manifests' own comments and the quick starts agree: namespace demo."""
    texts = {
        "up.sh": (k8s.KIND_DIR / "up.sh").read_text(),
        "kvstore.yaml": (k8s.KIND_DIR / "kvstore.yaml").read_text(),
        "backup-volume.yaml": (k8s.KIND_DIR / "backup-volume.yaml").read_text(),
        "README.md": (k8s.REPO / "README.md").read_text(),
        "docs/kubernetes.md": (k8s.REPO / "docs" / "kubernetes.md").read_text(),
    }
    for name, text in texts.items():
        applies = [line for line in text.splitlines() if re.search(r"kubectl .*apply -f e2e/kind/", line)]
        assert applies, name
        for line in applies:
            assert "-n demo" in line, f"{name}: {line.strip()}"
