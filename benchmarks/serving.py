"""Serving benchmark: rtml's transformer + predictor against the KServe Feast-transformer sample pattern.

    .venv/bin/python -m benchmarks.serving [--duration 20] [--connections 8] [--rates 100,500]

One run, on 127.0.0.1, same TorchScript model (MLP 15 -> 256 -> 256 -> 1, normalisation inside)
and same Feast SQLite online store (features written for ``--customers`` customers and
``--terminals`` terminals in a temporary RTML_HOME), one transaction per request:

(a) rtml: ``python -m inference --role all`` (transformer + predictor in one process), V2 REST;
(b) the KServe Feast sample pattern (benchmarks/serving_baseline.py): a transformer whose
    synchronous preprocess POSTs to ``feast serve`` with ``requests`` per request, then V1 JSON
    over HTTP to a separate, unbatched predictor server;
(b') the same with an in-process Feast SDK read instead of the feature server;
(c) the floor: Feast SDK read + torch forward in a tight loop in one process, no server.

Per server path: maximum throughput with ``wrk`` (closed loop, ``--connections`` connections,
``--duration`` s) with its p50/p99 and the servers' CPU ms per request, then p50/p99 at fixed
open-loop rates from an asyncio generator in another process (latency counted from when a request
is due, its wait for a free connection included, so a server that falls behind is charged for the
queue it builds), and the peak RSS of every server process. Every path must give the same
probability for the same transaction (checked). Prints a table and writes
``benchmarks/results/serving.json`` (with the load average at start and end: the host is shared).
Needs ``wrk`` on PATH (Debian: ``apt-get install wrk``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import multiprocessing as mp
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.serving_baseline import MODEL_NAME, floor_child, make_model, transactions, v1_body, v2_body, write_features

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "serving.json"


# -- processes --------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A server process in its own process group, logging to a file; peak RSS over its tree."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], logdir: Path):
        self.name = name
        self.log = logdir / f"{name}.log"
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.peak_rss = 0

    def wait_http(self, url: str, timeout_s: float = 120.0) -> "Proc":
        import httpx

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(url, timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"{self.name} not ready in {timeout_s}s:\n{self.log.read_text()[-3000:]}")

    def _tree(self) -> list:
        import psutil

        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def sample_rss(self) -> int:
        """Sum of peak RSS (VmHWM) over the process and its children; the running maximum is kept."""
        total = 0
        for p in self._tree():
            try:
                status = Path(f"/proc/{p.pid}/status").read_text()
            except (FileNotFoundError, ProcessLookupError):
                continue
            total += sum(int(ln.split()[1]) * 1024 for ln in status.splitlines() if ln.startswith("VmHWM:"))
        self.peak_rss = max(self.peak_rss, total)
        return self.peak_rss

    def cpu_seconds(self) -> float:
        """User + system CPU seconds used so far by the process and its live children."""
        import psutil

        total = 0.0
        for p in self._tree():
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def server_env(home: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RTML_")}
    return dict(base, RTML_HOME=str(home), PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")


# -- load generation --------------------------------------------------------------------------
_LUA_DONE = r"""
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests": %d, "duration_us": %d, "connect_errors": %d, "read_errors": %d, '
    .. '"write_errors": %d, "status_errors": %d, "timeouts": %d, "p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


def wrk(url: str, bodies: list[bytes], connections: int, duration_s: float, workdir: Path) -> dict:
    """Closed-loop maximum throughput: ``wrk`` posting ``bodies`` in turn on ``connections`` connections."""
    script = workdir / "bodies.lua"
    items = ",\n".join("[=[" + b.decode() + "]=]" for b in bodies)
    script.write_text(
        "local bodies = {\n" + items + "\n}\nlocal n = #bodies\nlocal i = 0\n"
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        "function request()\n  i = i % n + 1\n  return wrk.format(nil, nil, nil, bodies[i])\nend\n" + _LUA_DONE
    )
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{int(duration_s)}s", "--timeout", "10s", "-s", str(script), url],
                         capture_output=True, text=True, timeout=duration_s + 60)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result:\n{out.stdout}\n{out.stderr}")
    raw = json.loads(line[len("WRKJSON "):])
    errors = sum(raw[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts"))
    return {"requests": raw["requests"], "req_per_s": round(raw["requests"] / (raw["duration_us"] / 1e6), 1),
            "p50_ms": round(raw["p50_us"] / 1000, 2), "p99_ms": round(raw["p99_us"] / 1000, 2),
            "max_ms": round(raw["max_us"] / 1000, 2), "errors": errors, "connections": connections}


class _Conn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection of the open-loop generator: one request in flight at a time."""

    def __init__(self, gen: "_OpenLoop"):
        self.gen, self.transport, self.buf, self.need, self.status, self.start = gen, None, bytearray(), -1, 0, 0.0

    def connection_made(self, transport) -> None:
        self.transport = transport

    def send(self, request: bytes, start: float) -> None:
        self.buf.clear()
        self.need, self.start = -1, start
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.need < 0:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).lower()
            self.status = int(head[9:12])
            at = head.find(b"content-length:")
            length = int(head[at + 15:].split(b"\r\n", 1)[0]) if at >= 0 else 0
            self.need = end + 4 + length
        if len(self.buf) >= self.need:
            self.gen.completed(self, time.perf_counter())

    def connection_lost(self, exc) -> None:
        self.gen.lost(self)


class _OpenLoop:
    """Requests fired at fixed times (i / rate) onto a pool of keep-alive connections.

    A request's latency runs from its firing to its last response byte, including any wait for a
    free connection, so a server that falls behind is charged for the queue it builds (no
    coordinated omission). How late the generator itself fired is reported separately.
    """

    def __init__(self, port: int, path: str, bodies: list[bytes], max_conns: int):
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        self.requests = [(head + f"Content-Length: {len(b)}\r\n\r\n").encode() + b for b in bodies]
        self.port, self.max_conns = port, max_conns
        self.idle: list[_Conn] = []
        self.queue: collections.deque = collections.deque()
        self.open = 0
        self.latencies: list[float] = []
        self.lateness: list[float] = []
        self.errors = 0
        self.busy: dict[_Conn, int] = {}

    def fire(self, i: int, sched: float) -> None:
        now = time.perf_counter()
        self.lateness.append(now - sched)
        if self.idle:
            self._send(self.idle.pop(), i, now)
        else:
            self.queue.append((i, now))
            if self.open < self.max_conns:
                self._connect()

    def _send(self, conn: _Conn, i: int, start: float) -> None:
        self.busy[conn] = i
        conn.send(self.requests[i % len(self.requests)], start)

    def _connect(self) -> None:
        self.open += 1
        loop = asyncio.get_running_loop()
        task = loop.create_task(loop.create_connection(lambda: _Conn(self), "127.0.0.1", self.port))
        task.add_done_callback(self._connected)

    def _connected(self, task) -> None:
        if task.cancelled() or task.exception() is not None:
            self.open -= 1
            self.errors += 1
            return
        self._next(task.result()[1])

    def _next(self, conn: _Conn) -> None:
        if self.queue:
            self._send(conn, *self.queue.popleft())
        else:
            self.idle.append(conn)

    def completed(self, conn: _Conn, end: float) -> None:
        self.busy.pop(conn, None)
        if conn.status == 200:
            self.latencies.append(end - conn.start)
        else:
            self.errors += 1
        self._next(conn)

    def lost(self, conn: _Conn) -> None:
        self.open -= 1
        if conn in self.idle:
            self.idle.remove(conn)
        if self.busy.pop(conn, None) is not None:
            self.errors += 1
            if self.queue:
                self._connect()

    async def run(self, rate: float, duration_s: float, drain_s: float) -> dict:
        loop = asyncio.get_running_loop()
        n = int(rate * duration_s)
        t0, pc0 = loop.time() + 0.2, time.perf_counter() + 0.2
        for i in range(n):
            loop.call_at(t0 + i / rate, self.fire, i, pc0 + i / rate)
        await asyncio.sleep(t0 + duration_s - loop.time())
        deadline = loop.time() + drain_s
        while (self.queue or self.busy) and loop.time() < deadline:
            await asyncio.sleep(0.01)
        end = time.perf_counter()
        # What never finished counts at its age at the cutoff: those percentiles are lower bounds.
        unfinished = [end - start for _, start in self.queue] + [end - c.start for c in self.busy]
        for conn in list(self.idle) + list(self.busy):
            conn.transport.close()
        lat = np.asarray(self.latencies + unfinished) * 1000.0
        late = np.asarray(self.lateness) * 1000.0
        pct = (lambda q: round(float(np.percentile(lat, q)), 2)) if lat.size else (lambda q: None)
        return {"rate": rate, "sent": n, "ok": len(self.latencies), "errors": self.errors, "unfinished": len(unfinished),
                "p50_ms": pct(50), "p99_ms": pct(99), "max_ms": pct(100), "lower_bound": bool(unfinished or self.errors),
                "connections": self.open, "generator_late_p99_ms": round(float(np.percentile(late, 99)), 2) if late.size else None}


def _open_loop_child(args: tuple, q) -> None:
    port, path, bodies, rate, duration_s = args
    start = resource.getrusage(resource.RUSAGE_SELF)
    result = asyncio.run(_OpenLoop(port, path, bodies, max_conns=256).run(rate, duration_s, drain_s=5.0))
    end = resource.getrusage(resource.RUSAGE_SELF)
    result["generator_cpu_s"] = round(end.ru_utime + end.ru_stime - start.ru_utime - start.ru_stime, 2)
    q.put(result)


def in_child(target, args: tuple, timeout_s: float):
    """``target(*args, queue)`` in a fresh process (load and floor must not share this one's GIL); its result."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    try:
        return q.get(timeout=timeout_s)
    finally:
        p.join(10)
        if p.is_alive():
            p.kill()


def open_loop(port: int, path: str, bodies: list[bytes], rate: float, duration_s: float) -> dict:
    """p50/p99 at a fixed request rate, from a generator in another process."""
    return in_child(_open_loop_child, ((port, path, bodies, rate, duration_s),), duration_s + 90)


# -- the floor --------------------------------------------------------------------------------
def floor(home: Path, model_dir: Path, txs: list, seconds: float) -> dict:
    """(c): the Feast read + forward loop in a fresh process."""
    return in_child(floor_child, (str(home), str(model_dir), txs, seconds), seconds + 120)


# -- the run ----------------------------------------------------------------------------------
PATHS = {
    "a": "rtml: transformer + predictor in one process, V2 REST",
    "b": "sample: blocking HTTP to feast serve, V1 hop to a separate predictor",
    "b2": "sample, in-process Feast SDK read instead of feast serve",
    "c": "floor: Feast SDK read + torch forward in a loop, no server",
}


def first_probability(url: str, body: bytes) -> float:
    """One request's fraud probability (rtml V2 or baseline V1 answer)."""
    import httpx

    r = httpx.post(url, content=body, headers={"Content-Type": "application/json"}, timeout=30.0)
    r.raise_for_status()
    doc = r.json()
    if "predictions" in doc:
        return float(doc["predictions"][0])
    return float(next(o for o in doc["outputs"] if o["name"] == "fraud_probability")["data"][0])


def measure_server(procs: list[Proc], url: str, bodies: list[bytes], args, workdir: Path) -> dict:
    """Warm up, closed loop with wrk, then each open-loop rate; peak RSS of every process."""
    port = int(url.split(":")[2].split("/")[0])
    path = "/" + url.split("/", 3)[3]
    result: dict = {"probability_of_first_request": first_probability(url, bodies[0])}
    wrk(url, bodies, args.connections, 3, workdir)  # warm-up, discarded
    cpu = sum(p.cpu_seconds() for p in procs)
    closed = result["closed_loop"] = wrk(url, bodies, args.connections, args.duration, workdir)
    # Server CPU per request: steadier than req/s on a shared host (what others run costs us wall time, not CPU).
    closed["server_cpu_ms_per_request"] = round(1000 * (sum(p.cpu_seconds() for p in procs) - cpu) / max(closed["requests"], 1), 3)
    for p in procs:
        p.sample_rss()
    result["open_loop"] = {}
    for rate in args.rates:
        result["open_loop"][str(rate)] = open_loop(port, path, bodies, rate, args.rate_duration)
        for p in procs:
            p.sample_rss()
    result["peak_rss_mib"] = {p.name: round(p.peak_rss / 2**20, 1) for p in procs}
    result["peak_rss_mib_total"] = round(sum(p.peak_rss for p in procs) / 2**20, 1)
    return result


def run_servers(key: str, ctx: dict, args) -> dict:
    """Start the servers of path ``key``, measure, and stop them whatever happens."""
    py, env, logs = sys.executable, ctx["env"], ctx["logs"]
    procs: list[Proc] = []
    try:
        if key == "a":
            env = dict(env, **{"RTML_" + kv.split("=", 1)[0].upper(): kv.split("=", 1)[1] for kv in args.rtml_setting})
            http = free_port()
            procs.append(Proc("rtml", [py, "-m", "inference", "--role", "all", "--model-name", MODEL_NAME, "--storage-uri",
                                       str(ctx["model_dir"]), "--http-port", str(http), "--grpc-port", str(free_port())], env, logs))
            procs[0].wait_http(f"http://127.0.0.1:{http}/v2/health/ready")
            url, bodies = f"http://127.0.0.1:{http}/v2/models/{MODEL_NAME}/infer", ctx["v2"]
        else:
            pred, tr = free_port(), free_port()
            base = [py, "-m", "benchmarks.serving_baseline"]
            source = ["--home", str(ctx["home"])]
            if key == "b":
                feast = free_port()
                procs.append(Proc("feast-serve", [str(Path(py).parent / "feast"), "-c", str(ctx["feast_repo"]), "serve",
                                                  "-h", "127.0.0.1", "-p", str(feast)], env, logs))
                source = ["--feast-url", f"http://127.0.0.1:{feast}"]
            procs.append(Proc("predictor", base + ["predictor", "--model-dir", str(ctx["model_dir"]), "--http-port", str(pred)], env, logs))
            procs.append(Proc("transformer", base + ["transformer", "--http-port", str(tr), "--predictor-host",
                                                     f"127.0.0.1:{pred}", *source], env, logs))
            if key == "b":
                procs[0].wait_http(f"http://127.0.0.1:{feast}/health")
            for p, port in zip(procs[-2:], (pred, tr)):
                p.wait_http(f"http://127.0.0.1:{port}/v2/health/ready")
            url, bodies = f"http://127.0.0.1:{tr}/v1/models/{MODEL_NAME}:predict", ctx["v1"]
        return measure_server(procs, url, bodies, args, ctx["workdir"])
    finally:
        for p in procs:
            p.stop()


def setup(workdir: Path, args) -> dict:
    home = workdir / "home"
    write_features(home, args.customers, args.terminals)
    model_dir = make_model(workdir / "model" / "1")
    repo = workdir / "feast_repo"
    repo.mkdir()
    (repo / "feature_store.yaml").write_text(
        f"project: rtml_fraud\nprovider: local\nregistry:\n  path: {home / 'registry.db'}\n  cache_ttl_seconds: 60\n"
        f"online_store:\n  type: sqlite\n  path: {home / 'online.db'}\noffline_store:\n  type: file\n"
        "entity_key_serialization_version: 3\n"
    )
    logs = workdir / "logs"
    logs.mkdir()
    txs = transactions(args.customers, args.terminals)
    return {"home": home, "model_dir": model_dir, "feast_repo": repo, "logs": logs, "workdir": workdir, "env": server_env(home),
            "txs": txs, "v2": [v2_body(t) for t in txs], "v1": [v1_body(t) for t in txs]}


def _fmt(v, lower_bound: bool = False) -> str:
    if v is None:
        return "-"
    text = f"{v:,.0f}" if v >= 100 else f"{v:.2f}"
    return (">" if lower_bound else "") + text


def table(paths: dict, rates: list) -> str:
    head = ["path", "req/s", "p50 ms", "p99 ms", "server CPU ms/req"]
    for r in rates:
        head += [f"p50 @{r}/s", f"p99 @{r}/s"]
    head.append("peak RSS MiB")
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for key, res in paths.items():
        cl = res.get("closed_loop", res)
        row = [f"({key.replace('2', chr(39))}) {PATHS[key]}", _fmt(cl["req_per_s"]), _fmt(cl["p50_ms"]), _fmt(cl["p99_ms"]),
               _fmt(cl.get("server_cpu_ms_per_request"))]
        for r in rates:
            ol = res.get("open_loop", {}).get(str(r))
            row += [_fmt(ol["p50_ms"], ol["lower_bound"]), _fmt(ol["p99_ms"], ol["lower_bound"])] if ol else ["-", "-"]
        row.append(_fmt(res.get("peak_rss_mib_total", res.get("peak_rss_mib"))))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def targets(paths: dict) -> dict:
    """The issue's targets: >= 2x the faster baseline's throughput at a p99 no worse; p99 < 15 ms at 500/s."""
    out: dict = {}
    a = paths.get("a")
    baselines = [k for k in ("b", "b2") if k in paths]
    if a and baselines:
        best = max(baselines, key=lambda k: paths[k]["closed_loop"]["req_per_s"])
        ra, rb = a["closed_loop"], paths[best]["closed_loop"]
        out["throughput"] = {"faster_baseline": best, "speedup": round(ra["req_per_s"] / rb["req_per_s"], 2),
                             "p99_ms_rtml": ra["p99_ms"], "p99_ms_baseline": rb["p99_ms"],
                             "met": ra["req_per_s"] >= 2 * rb["req_per_s"] and ra["p99_ms"] <= rb["p99_ms"]}
    if a and "500" in a.get("open_loop", {}):
        ol = a["open_loop"]["500"]
        out["p99_at_500"] = {"p99_ms": ol["p99_ms"], "lower_bound": ol["lower_bound"],
                             "met": not ol["lower_bound"] and ol["p99_ms"] is not None and ol["p99_ms"] < 15.0}
    return out


def versions() -> dict:
    from importlib.metadata import version

    return {pkg: version(pkg) for pkg in ("kserve", "feast", "torch")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.serving", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=20.0, help="closed-loop seconds per path")
    p.add_argument("--connections", type=int, default=8, help="closed-loop connections")
    p.add_argument("--rates", default="100,500", help="open-loop rates, requests/s, comma-separated")
    p.add_argument("--rate-duration", type=float, default=10.0, help="seconds per open-loop rate")
    p.add_argument("--floor-seconds", type=float, default=5.0)
    p.add_argument("--customers", type=int, default=5000)
    p.add_argument("--terminals", type=int, default=10000)
    p.add_argument("--paths", default="a,b,b2,c", help="which of a,b,b2,c to run")
    p.add_argument("--rtml-setting", action="append", default=[], metavar="NAME=VALUE",
                   help="an RTML_<NAME> setting for rtml's server (e.g. feature_fetch_threads=0); repeatable")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    args.rates = [int(r) for r in args.rates.split(",") if r]
    if shutil.which("wrk") is None:
        print("wrk is not on PATH (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    report: dict = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "load_avg_start": os.getloadavg()[0],
                    **versions()},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "paths": {},
    }
    with tempfile.TemporaryDirectory(prefix="rtml-serving-bench-") as tmp:
        t0 = time.monotonic()
        ctx = setup(Path(tmp), args)
        print(f"setup: {time.monotonic() - t0:.1f}s ({args.customers} customers, {args.terminals} terminals)", flush=True)
        for key in [k for k in args.paths.split(",") if k]:
            t = time.monotonic()
            if key == "c":
                res = floor(ctx["home"], ctx["model_dir"], ctx["txs"], args.floor_seconds)
            else:
                res = run_servers(key, ctx, args)
            res["load_avg_after"] = os.getloadavg()[0]
            report["paths"][key] = res
            print(f"({key}) done in {time.monotonic() - t:.0f}s: {json.dumps(res.get('closed_loop', res))}", flush=True)
    probs = {k: v["probability_of_first_request"] for k, v in report["paths"].items() if "probability_of_first_request" in v}
    report["same_answer"] = {"probabilities": probs, "agree": bool(probs) and max(probs.values()) - min(probs.values()) < 1e-4}
    report["targets"] = targets(report["paths"])
    report["machine"]["load_avg_end"] = os.getloadavg()[0]
    report["table"] = table(report["paths"], args.rates)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(report["table"])
    print(f"load average: {report['machine']['load_avg_start']:.2f} at start, {report['machine']['load_avg_end']:.2f} at end")
    print("targets:", json.dumps(report["targets"]))
    print("same answer on every path:", report["same_answer"]["agree"], probs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
