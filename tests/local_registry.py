"""A Docker registry on loopback for the cluster tests of ``--registry``: Debian's
``docker-registry`` (provisioned by scripts/provision-registry), started with a config of its
own (filesystem storage under a temp root, ``http.addr`` on 127.0.0.1), never the packaged
service.

The private engine (tests/private_engine.py) lives in its own network namespace, where
127.0.0.1 is not the host's loopback (and ``lo`` is down). :meth:`LocalRegistry.reach_from`
makes the registry's very address answer there too, so that the driver pushes to and the
nodes pull from one ``--registry HOST:PORT``:

    private netns: 127.0.0.1:PORT --forwarder--> ROOT/bridge.sock  (unix sockets cross
    host netns:    ROOT/bridge.sock --forwarder--> 127.0.0.1:PORT   network namespaces)

The host-side forwarder connects from 127.0.0.2, so the registry's access log tells what came
through the bridge (the private engine's pulls) from what came from the host engine (the push).

Every process here is started by this module, in a session of its own, and stopped by its pid;
every command line names the temp root, so :func:`processes_naming` finds leftovers. Run as a
script, this file is the forwarder: ``python local_registry.py LISTEN TARGET [SOURCE_IP]``,
LISTEN and TARGET each ``tcp:HOST:PORT`` or ``unix:PATH``; it prints ``ready`` once listening.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REGISTRY_BINARY = Path("/usr/bin/docker-registry")
BRIDGE_SOURCE = "127.0.0.2"  # where the bridge's connections reach the registry from
START_TIMEOUT = 30.0  # an upper bound for a hung start, not a timing assertion
STOP_TIMEOUT = 10.0
POLL = 0.05
BUFFER = 1 << 16
# `lo` as a fresh namespace has it: down and without addresses. Down alone keeps 127.0.0.1
# and its local routes, where a connect waits for a timeout instead of failing at once.
LO_BACK = (["ip", "link", "set", "lo", "down"], ["ip", "addr", "flush", "dev", "lo"])
# One line of the registry's access log (Apache combined format).
ACCESS_LINE = re.compile(r'^(?P<addr>\S+) \S+ \S+ \[[^\]]*\] "(?P<method>\S+) (?P<uri>\S+) [^"]*"')


@dataclass(frozen=True)
class Request:
    """One request the registry answered: who asked (the peer's IP), what, which path."""

    addr: str
    method: str
    uri: str


@dataclass
class LocalRegistry:
    """A started registry (see :func:`start_registry`); :meth:`close` stops everything."""

    root: Path
    port: int
    proc: subprocess.Popen[bytes]
    helpers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    lo_brought_up: list[int] = field(default_factory=list)  # netns pids whose lo we brought up

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.root / "registry.log"

    def get_json(self, path: str) -> Any:
        """GET http://ADDRESS/path over loopback (never through a proxy); the JSON reply."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://{self.address}{path}", timeout=30) as reply:
            return json.loads(reply.read())

    def requests(self) -> list[Request]:
        """Every request in the registry's access log so far."""
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        found = (ACCESS_LINE.match(line) for line in text.splitlines())
        return [Request(m["addr"], m["method"], m["uri"]) for m in found if m]

    def reach_from(self, netns_pid: int) -> None:
        """Makes 127.0.0.1:PORT inside the network namespace of `netns_pid` reach the
        registry: brings that namespace's `lo` up (back at :meth:`close`) and starts the
        two forwarders of the bridge."""
        bridge = self.root / "bridge.sock"
        if not bridge.exists():
            target = f"tcp:{self.address}"
            self._forwarder([], f"unix:{bridge}", target, BRIDGE_SOURCE)
        enter = ["nsenter", f"--net=/proc/{netns_pid}/ns/net", "--"]
        if not _lo_up(enter):
            _run([*enter, "ip", "link", "set", "lo", "up"])
            self.lo_brought_up.append(netns_pid)
        self._forwarder(enter, f"tcp:{self.address}", f"unix:{bridge}")

    def _forwarder(self, prefix: list[str], listen: str, target: str, *source: str) -> None:
        argv = [*prefix, sys.executable, str(Path(__file__).resolve()), listen, target, *source]
        log = self.root / "forwarders.log"
        with log.open("ab") as errors:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=errors,
                start_new_session=True,
            )
        self.helpers.append(proc)
        _wait_ready(proc, f"forwarder {listen} -> {target}", log)

    def processes(self) -> list[int]:
        """Live processes whose command line names the root: the registry and forwarders."""
        return processes_naming(self.root)

    def close(self) -> None:
        """Stops the forwarders and the registry, puts `lo` back as it was, deletes the root."""
        errors: list[str] = []
        for proc in [*reversed(self.helpers), self.proc]:
            errors += _stop(proc)
        for pid in self.lo_brought_up:
            with contextlib.suppress(OSError, subprocess.CalledProcessError):
                # The namespace may be gone with its engine: nothing to put back then.
                if os.path.exists(f"/proc/{pid}/ns/net"):
                    enter = ["nsenter", f"--net=/proc/{pid}/ns/net", "--"]
                    for step in LO_BACK:
                        _run([*enter, *step])
        left = self.processes()
        shutil.rmtree(self.root, ignore_errors=True)
        if left or self.root.exists():
            errors.append(f"left processes {left} or the root {self.root}")
        if errors:
            raise AssertionError("local registry cleanup: " + "; ".join(errors))


def start_registry() -> LocalRegistry:
    """Debian's registry on 127.0.0.1:<free port>, storage and log in a fresh temp root,
    answering `GET /v2/` once this returns. Call :meth:`LocalRegistry.close` in a finally."""
    if not REGISTRY_BINARY.is_file():
        raise AssertionError(f"{REGISTRY_BINARY} is missing: run scripts/provision-registry")
    root = Path("/tmp") / f"sab-reg-{secrets.token_hex(3)}"
    root.mkdir(mode=0o700)
    port = free_port()
    config = root / "config.yml"
    config.write_text(json.dumps(_config(root, port), indent=2) + "\n", encoding="utf-8")
    # REGISTRY_* variables would override the config file.
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    with (root / "registry.log").open("ab") as log:
        proc = subprocess.Popen(
            [str(REGISTRY_BINARY), "serve", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    registry = LocalRegistry(root, port, proc)
    try:
        _wait_answers(registry)
    except BaseException:
        registry.close()
        raise
    return registry


def _config(root: Path, port: int) -> dict[str, Any]:
    """The registry's config (JSON is YAML): loopback only, no debug listener, no auth."""
    return {
        "version": 0.1,
        "log": {"level": "info", "accesslog": {"disabled": False}},
        "storage": {"filesystem": {"rootdirectory": str(root / "data")}},
        "http": {"addr": f"127.0.0.1:{port}", "secret": secrets.token_hex(16)},
    }


def _wait_answers(registry: LocalRegistry) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        with contextlib.suppress(OSError, ValueError):
            if registry.get_json("/v2/") == {}:
                return
        if registry.proc.poll() is not None or time.monotonic() >= deadline:
            log = registry.log_path.read_text(errors="replace")[-3000:]
            raise AssertionError(f"the registry did not answer on {registry.address}:\n{log}")
        time.sleep(POLL)


def _wait_ready(proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT)
    line = proc.stdout.readline() if ready else b""
    proc.stdout.close()
    if line != b"ready\n":
        raise AssertionError(f"{what} did not start:\n{log.read_text(errors='replace')[-3000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> list[str]:
    """SIGTERM to the process's group (its own session), SIGKILL if it stays; reaped."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(STOP_TIMEOUT)
            return []
    return [f"pid {proc.pid} outlived SIGKILL"]


def _lo_up(enter: list[str]) -> bool:
    shown = subprocess.run(
        [*enter, "ip", "-o", "link", "show", "lo"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    flags = shown.stdout.partition("<")[2].partition(">")[0].split(",")
    return "UP" in flags


def _run(argv: list[str]) -> None:
    subprocess.run(argv, capture_output=True, check=True, timeout=30)


# free_port and processes_naming repeat ray_cluster's: this file also runs as the forwarder
# script inside a network namespace, which must import nothing of the test suite.
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def processes_naming(path: Path) -> list[int]:
    """Live (not zombie) processes, other than this one, whose command line names `path`."""
    mark = str(path).encode()
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{entry.name}/stat").read_text()
                zombie = stat[stat.rindex(")") + 2 :].startswith(("Z", "X"))
                if not zombie and mark in Path(f"/proc/{entry.name}/cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


# -- the forwarder (this file run as a script) ----------------------------------------------


def _endpoint(spec: str) -> tuple[socket.AddressFamily, str | tuple[str, int]]:
    kind, _, rest = spec.partition(":")
    if kind == "unix":
        return socket.AF_UNIX, rest
    if kind == "tcp":
        host, _, port = rest.rpartition(":")
        return socket.AF_INET, (host, int(port))
    raise SystemExit(f"not tcp:HOST:PORT or unix:PATH: {spec}")


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copies until EOF, then passes the EOF on (half-close) so the other way can finish."""
    with contextlib.suppress(OSError):
        while data := source.recv(BUFFER):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


def _serve_one(client: socket.socket, target: str, source_ip: str | None) -> None:
    family, address = _endpoint(target)
    with client, socket.socket(family, socket.SOCK_STREAM) as upstream:
        try:
            if source_ip is not None:
                upstream.bind((source_ip, 0))
            upstream.connect(address)
        except OSError as exc:
            print(f"forwarder: {target}: {exc}", file=sys.stderr, flush=True)
            return
        back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
        back.start()
        _pump(client, upstream)
        back.join()


def forward(listen: str, target: str, source_ip: str | None) -> None:
    family, address = _endpoint(listen)
    server = socket.socket(family, socket.SOCK_STREAM)
    if family == socket.AF_INET:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(address)
    server.listen(64)
    print("ready", flush=True)
    while True:
        client, _ = server.accept()
        args = (client, target, source_ip)
        threading.Thread(target=_serve_one, args=args, daemon=True).start()


if __name__ == "__main__":
    forward(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
