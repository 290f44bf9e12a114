"""Mutual TLS on every server and channel (MINIRAY_USE_TLS), with a CA and
certificates made by the test."""
from __future__ import annotations

import datetime
import ipaddress
import os
import subprocess
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _write_pem(path, data: bytes) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return str(path)


def _make_pki(directory) -> dict[str, str]:
    """A CA, and a certificate it signed for 127.0.0.1 (every node here)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "miniray test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "node")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                 x509.DNSName("localhost")]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    return {
        "MINIRAY_TLS_CA_CERT": _write_pem(directory / "ca.pem", ca.public_bytes(pem)),
        "MINIRAY_TLS_SERVER_CERT": _write_pem(directory / "node.pem", cert.public_bytes(pem)),
        "MINIRAY_TLS_SERVER_KEY": _write_pem(directory / "node.key", key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())),
    }


DRIVER = r"""
import grpc, miniray as ray
from miniray.protocol import gcs_pb2, gcs_pb2_grpc
from miniray.rpc.channels import authenticated, sync_channel

context = ray.init(num_cpus=1)

@ray.remote
def square(x):
    return x * x

@ray.remote
class Counter:
    def __init__(self):
        self.n = 0
    def incr(self):
        self.n += 1
        return self.n

counter = Counter.remote()
assert ray.get([square.remote(i) for i in range(4)]) == [0, 1, 4, 9]
assert ray.get([counter.incr.remote() for _ in range(3)]) == [1, 2, 3]
address = context.address_info["gcs_address"]
with sync_channel(address) as channel:            # TLS and the token: served
    stub = authenticated(gcs_pb2_grpc.GcsServiceStub(channel))
    assert stub.GetAllNodes(gcs_pb2.GetAllNodesRequest(), timeout=10).nodes
with grpc.insecure_channel(address) as channel:   # plaintext: no connection at all
    stub = authenticated(gcs_pb2_grpc.GcsServiceStub(channel))
    try:
        stub.GetAllNodes(gcs_pb2.GetAllNodesRequest(), timeout=3)
        raise SystemExit("a plaintext call was answered")
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc.code()
ray.shutdown()
print("tls ok")
"""


def test_cluster_runs_over_mutual_tls(tmp_path):
    env = dict(os.environ, MINIRAY_USE_TLS="1", **_make_pki(tmp_path))
    done = subprocess.run([sys.executable, "-c", DRIVER], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "tls ok" in done.stdout, done.stderr[-3000:]


def test_tls_without_its_files_is_a_clear_error(tmp_path):
    env = dict(os.environ, MINIRAY_USE_TLS="1")
    for name in ("MINIRAY_TLS_CA_CERT", "MINIRAY_TLS_SERVER_CERT", "MINIRAY_TLS_SERVER_KEY"):
        env.pop(name, None)
    done = subprocess.run([sys.executable, "-c", "import miniray as ray; ray.init(num_cpus=1)"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "MINIRAY_TLS_SERVER_CERT" in done.stderr


TRANSFER_DRIVER = r"""
import asyncio, socket, numpy as np, miniray as ray
from miniray.object_store import data_plane
from miniray.protocol import object_manager_pb2 as om_pb2, object_manager_pb2_grpc as om_grpc
from miniray.rpc.channels import authenticated, sync_channel
from miniray.testing import Cluster

cluster = Cluster()
cluster.add_node(num_cpus=1)
cluster.add_node(num_cpus=1, resources={"far": 1})
cluster.wait_for_nodes()
cluster.connect()
try:
    @ray.remote(resources={"far": 1})
    def checksum(array):
        return int(array[::1024].sum())

    array = np.arange(24 * 1024 * 1024, dtype=np.uint8)
    ref = ray.put(array)
    assert ray.get(checksum.remote(ref)) == int(array[::1024].sum())   # over TLS
    head = next(n for n in ray.nodes() if n["NodeID"] == cluster.head_node.node_id.hex())
    address = f"{head['NodeManagerAddress']}:{head['NodeManagerPort']}"
    with sync_channel(address) as channel:
        stub = authenticated(om_grpc.ObjectManagerServiceStub(channel))
        reply = stub.OpenObjectStream(om_pb2.OpenObjectStreamRequest(object_id=ref.binary()))
    assert reply.found
    # A plaintext client holding a valid ticket still gets no bytes.
    with socket.create_connection(("127.0.0.1", reply.port), timeout=10) as sock:
        sock.sendall(reply.ticket + (0).to_bytes(8, "big") + (4096).to_bytes(8, "big"))
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except (ConnectionResetError, socket.timeout):
            pass
    assert len(received) < 4096, len(received)      # a TLS alert at most
    print("tls transfer ok")
finally:
    ray.shutdown()
    cluster.shutdown()
"""


def test_object_transfer_between_nodes_is_tls_too(tmp_path):
    env = dict(os.environ, MINIRAY_USE_TLS="1", **_make_pki(tmp_path))
    done = subprocess.run([sys.executable, "-c", TRANSFER_DRIVER], env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0 and "tls transfer ok" in done.stdout, done.stderr[-3000:]
