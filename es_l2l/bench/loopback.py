"""A real multi-node Ray cluster on one machine, every node and address on 127.0.0.1 (the multi-node
tests and the scaling benchmark's coordination part use it).

A head (`ray start --head`, no CPUs of its own: the driver attaches there and no actor lands
on it) and worker nodes (`ray start --address=...`, one CPU each), each in its own process
group, so that killing a group removes exactly that node: its raylet, object store and the
actors on it. Nothing here runs `ray stop` (it would stop every Ray on the machine).

Two things keep it on loopback, both measured on Ray 2.60:
- `ray start` for a worker node refuses 127.0.0.1 unless `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER` is
  on, and with it on it rewrites a 127.0.0.1 head address into the machine's interface address
  (then waits forever for a GCS that does not listen there; `ray.cluster_utils.Cluster` does the
  same). The worker node is started by `ray start`'s own entry point with those two decisions
  taken as on a single machine (:data:`_NODE`); every other process keeps the switch off, which
  also makes drivers and actors keep 127.0.0.1.
- token authentication, as on a real cluster: a random `RAY_AUTH_TOKEN` for every node and driver.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

BIN = Path(sys.executable).parent

# `ray start` for a worker node, its loopback address kept (see the module docstring)
_NODE = """
import sys
import ray._private.ray_constants as constants
import ray._private.services as services
constants.ENABLE_RAY_CLUSTER = True  # let `ray start` join a head on this machine
services.resolve_ip_for_localhost = lambda host: host  # and keep the head's 127.0.0.1
from ray.scripts.scripts import main
sys.argv = ["ray", "start", *sys.argv[1:]]
main()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ports(head: bool) -> list[str]:
    names = ["--node-manager-port", "--object-manager-port", "--metrics-export-port", "--runtime-env-agent-port",
             "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port"]
    if head:
        names += ["--ray-client-server-port", "--dashboard-port"]  # 8265 may be taken by another Ray
    return [f"{n}={free_port()}" for n in names]


@dataclass
class Node:
    name: str
    pgid: int  # the `ray start` process's group: every process of this node

    def processes(self) -> list[psutil.Process]:
        out = []
        for p in psutil.process_iter():
            try:
                if os.getpgid(p.pid) == self.pgid:
                    out.append(p)
            except (ProcessLookupError, psutil.Error):
                pass
        return out

    def actors(self) -> list[psutil.Process]:
        """The es-l2l evaluation actors living on this node (its raylet's children, named after the actor class)."""
        out = {}
        for p in self.processes():
            try:
                for c in [p, *p.children(recursive=True)]:
                    if "_Worker" in c.name() + " ".join(c.cmdline()):
                        out[c.pid] = c
            except psutil.Error:
                pass
        return list(out.values())

    def kill(self) -> None:
        """SIGKILL the node's whole process group: raylet, object store, its actors, at once."""
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def gone(self, timeout: float = 20) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                os.killpg(self.pgid, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.1)
        return False


@dataclass
class LoopbackCluster:
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="/tmp/rm")))  # short: socket paths
    token: str = field(default_factory=lambda: secrets.token_hex(32))
    port: int = field(default_factory=free_port)
    nodes: dict[str, Node] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """For the nodes and for drivers attaching with --address."""
        return dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", RAY_USAGE_STATS_ENABLED="0",
                    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",  # 127.0.0.1 stays 127.0.0.1 (module docstring)
                    RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token, RAY_TMPDIR=str(self.tmp))

    def _spawn(self, name: str, cmd: list[str], extra: dict[str, str] | None = None) -> subprocess.Popen:
        proc = subprocess.Popen(cmd, env={**self.env, **(extra or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
        self.nodes[name] = Node(name, proc.pid)
        return proc

    def _wait(self, name: str, proc: subprocess.Popen) -> Node:
        node = self.nodes[name]
        try:
            out, _ = proc.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            node.kill()
            raise
        if proc.returncode != 0:
            node.kill()
            raise RuntimeError(f"ray start for node {name} failed:\n{out[-3000:]}")
        return node

    def _start(self, name: str, cmd, env: dict[str, str] | None = None, tries: int = 3) -> Node:
        """Start a node, again if it failed: `ray start` gives a raylet 30 s to register with the
        head (a constant in Ray's node.py), which a loaded machine can miss."""
        for attempt in range(tries):
            proc = self._spawn(name, cmd(), env)
            try:
                return self._wait(name, proc)
            except RuntimeError:
                self.nodes.pop(name).gone()
                if attempt == tries - 1:
                    raise
        raise AssertionError("unreachable")

    def start_head(self) -> Node:
        return self._start("head", lambda: [
            str(BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={self.port}",
            "--include-dashboard=false", "--dashboard-host=127.0.0.1", "--num-cpus=0", "--num-gpus=0",
            f"--temp-dir={self.tmp}", "--disable-usage-stats", *_ports(head=True)])

    def add_nodes(self, *names: str, env: dict[str, str] | None = None, cpus: int = 1) -> list[Node]:
        """Worker nodes of ``cpus`` (logical) CPUs each, one at a time; ``env`` is added to their environment
        (their actors inherit it)."""
        return [self._start(name, lambda name=name: [
            sys.executable, "-c", _NODE, f"--address={self.address}", "--node-ip-address=127.0.0.1",
            f"--num-cpus={cpus}", "--num-gpus=0", f"--resources={{\"{name}\": 1}}", "--disable-usage-stats",
            *_ports(head=False)], env) for name in names]

    def remove_node(self, name: str) -> None:
        node = self.nodes.pop(name)
        node.kill()
        node.gone()

    def non_loopback_listeners(self) -> list[str]:
        """Listening sockets of this cluster's processes on anything but loopback."""
        bad = []
        for node in self.nodes.values():
            for p in node.processes():
                try:
                    conns = p.net_connections(kind="inet")
                    name = p.name()
                except psutil.Error:
                    continue
                for c in conns:
                    if c.status == psutil.CONN_LISTEN and not _loopback(c.laddr.ip):
                        bad.append(f"{name} {c.laddr.ip}:{c.laddr.port}")
        return bad

    def stop(self) -> None:
        for name in [n for n in self.nodes if n != "head"] + [n for n in self.nodes if n == "head"]:
            self.remove_node(name)
        shutil.rmtree(self.tmp, ignore_errors=True)


def _loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback
