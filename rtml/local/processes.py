"""Small process helpers for the local runtime: free ports, pid files, waiting, stopping."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def wait_for_port(host: str, port: int, timeout_s: float, proc: subprocess.Popen | None = None) -> bool:
    """True once ``port`` accepts connections; False on timeout or when ``proc`` exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if port_open(host, port):
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.2)
    return False


def read_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log written)"


def write_pidfile(path: Path, pid: int) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(str(pid))


def stop_pid(pid_file: Path, proc: subprocess.Popen | None = None, timeout_s: float = 15) -> bool:
    """Stop the process group recorded in ``pid_file`` (SIGTERM, then SIGKILL); True if one was running."""
    pid = proc.pid if proc is not None else None
    if pid is None:
        try:
            pid = int(Path(pid_file).read_text().strip())
        except (FileNotFoundError, ValueError):
            return False
    stopped = False
    try:
        os.killpg(pid, signal.SIGTERM)
        stopped = True
    except ProcessLookupError:
        pass
    except PermissionError:
        return False
    deadline = time.monotonic() + timeout_s
    while stopped and time.monotonic() < deadline:
        if proc is not None:
            if proc.poll() is not None:
                break
        else:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
        time.sleep(0.1)
    else:
        if stopped:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    if proc is not None:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    Path(pid_file).unlink(missing_ok=True)
    return stopped
