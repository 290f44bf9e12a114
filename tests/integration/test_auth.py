"""Token authentication: every method of every service, on every port of a
running cluster, refuses a caller without the cluster's token (or with a
wrong one); the token is never in a process's arguments or the logs; a
normal driver just works."""
from __future__ import annotations

import os
import subprocess
import sys

import grpc
import pytest

import miniray as ray
from miniray.protocol import core_worker_pb2, gcs_pb2, object_manager_pb2, raylet_pb2
from miniray.rpc import auth

SERVICES = [svc for module in (gcs_pb2, raylet_pb2, core_worker_pb2, object_manager_pb2)
            for svc in module.DESCRIPTOR.services_by_name.values()]


@pytest.fixture
def cluster():
    context = ray.init(num_cpus=1)
    yield context
    ray.shutdown()


@ray.remote
class Probe:
    def port(self):
        return ray.api._worker().address.port


def _ports(context, actor) -> dict[str, str]:
    """Every kind of server the cluster runs, by a name for messages."""
    worker = ray.api._worker()
    node = [n for n in ray.nodes() if n["Alive"]][0]
    return {
        "gcs": context.address_info["gcs_address"],
        "raylet": f"{node['NodeManagerAddress']}:{node['NodeManagerPort']}",
        "driver": f"{worker.address.ip}:{worker.address.port}",
        "worker": f"{worker.address.ip}:{ray.get(actor.port.remote())}",
    }


def _call(channel, service, method, metadata):
    """One raw call (an empty request: the check comes before parsing)."""
    path = f"/{service.full_name}/{method.name}"
    if method.client_streaming:
        call = channel.stream_stream(path)(iter([b""]), metadata=metadata, timeout=10)
        return list(call)
    return channel.unary_unary(path)(b"", metadata=metadata, timeout=10)


@pytest.mark.parametrize("token", [None, "wrong-token-0123456789abcdef"],
                         ids=["no-token", "wrong-token"])
def test_every_method_on_every_port_needs_the_token(cluster, token):
    metadata = None if token is None else ((auth.METADATA_KEY, f"Bearer {token}"),)
    served: dict[str, set] = {}
    actor = Probe.remote()            # a worker process's server, kept alive
    for port_name, address in _ports(cluster, actor).items():
        with grpc.insecure_channel(address) as channel:
            for service in SERVICES:
                for method in service.methods:
                    with pytest.raises(grpc.RpcError) as info:
                        _call(channel, service, method, metadata)
                    code = info.value.code()
                    assert code in (grpc.StatusCode.UNAUTHENTICATED,
                                    grpc.StatusCode.UNIMPLEMENTED), \
                        (port_name, service.name, method.name, code)
                    if code == grpc.StatusCode.UNAUTHENTICATED:
                        served.setdefault(service.full_name, set()).add(method.name)
    # Every method of every service is served (and refused) somewhere.
    for service in SERVICES:
        assert served.get(service.full_name) == {m.name for m in service.methods}, \
            service.full_name
    # The cluster carries on.
    assert ray.get(Probe.remote().port.remote()) > 0


def test_token_is_private_and_never_in_arguments_or_logs(cluster):
    token = auth.current_token()
    assert token and len(token) >= 32
    path = auth.token_file(cluster.address_info["gcs_address"])
    assert os.stat(path).st_mode & 0o777 == 0o600
    with open(path) as f:
        assert f.read().strip() == token
    ray.get(Probe.remote().port.remote())          # a worker is running too
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        assert token.encode() not in cmdline, cmdline
    session = cluster.address_info["session_dir"]
    for root, _, files in os.walk(session):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                assert token.encode() not in f.read(), name


def test_driver_of_the_same_user_finds_the_token(cluster, tmp_path):
    """A second driver given only the address connects; one told a wrong
    token gets a clear error naming the way to fix it."""
    script = tmp_path / "driver.py"
    script.write_text(
        "import miniray as ray, sys\n"
        "ray.init(address=sys.argv[1])\n"
        "print(ray.get(ray.remote(lambda: 42).remote()))\n"
        "ray.shutdown()\n")
    address = cluster.address_info["gcs_address"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINIRAY_AUTH")}
    ok = subprocess.run([sys.executable, str(script), address], env=env,
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and ok.stdout.strip() == "42", ok.stderr
    bad = subprocess.run([sys.executable, str(script), address],
                         env=dict(env, MINIRAY_AUTH_TOKEN="x" * 40),
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0
    assert "refused the auth token this driver presented" in bad.stderr
    assert "x" * 40 not in bad.stderr


def test_auth_can_be_disabled_for_a_trusted_network(tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(
        "import miniray as ray\n"
        "from miniray.rpc import auth\n"
        "ray.init(num_cpus=1)\n"
        "assert auth.current_token() is None\n"
        "print(ray.get(ray.remote(lambda: 7).remote()))\n"
        "ray.shutdown()\n")
    done = subprocess.run([sys.executable, str(script)],
                          env=dict(os.environ, MINIRAY_AUTH_MODE="disabled"),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "7", done.stderr
