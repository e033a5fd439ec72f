#!/usr/bin/env python3
"""Run the real binary and list the metric names it exports.

Starts throwaway Redis servers (a master, a replica, one Sentinel; no persistence) on
free ports, then
`blinkchamber serve` and `blinkchamber worker` against it, drives a short workload
through the HTTP API (cache hits and misses, rate-limit checks until one is limited,
locks, sessions, events whose webhook fails so they are retried and dead-lettered), has
Sentinel fail the master over, stops Redis so the client records failed commands, and
scrapes both processes'
/metrics. Writes one metric name per line to OUT.txt (summaries and histograms also under
their _sum, _count (and _bucket) names) and the label names seen on each metric's samples
to OUT.txt.labels.json.

Usage: collect_metrics.py BLINKCHAMBER_BIN OUT.txt
Exits 1, saying why, when the binary or redis-server is missing or a process fails.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

TOKEN = "metrics-check-token"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, timeout=30, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"process exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.read().decode()
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {timeout}s")


def call(base, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as err:
        return err.code
    except (urllib.error.URLError, OSError):
        return 0


def redis_up(port, workdir, *extra):
    return subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", workdir, *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def sentinel_up(port, master_port, workdir):
    conf = f"{workdir}/sentinel.conf"
    with open(conf, "w") as fh:
        fh.write(f"port {port}\nbind 127.0.0.1\ndir {workdir}\n"
                 f"sentinel monitor mymaster 127.0.0.1 {master_port} 1\n"
                 "sentinel down-after-milliseconds mymaster 1000\n"
                 "sentinel failover-timeout mymaster 5000\n")
    return subprocess.Popen(["redis-server", conf, "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def redis_cmd(port, *args):
    """One command over RESP; returns the raw reply."""
    payload = f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(payload.encode())
        return s.recv(4096)


def wait_redis(port, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("redis-server did not start")


def labels(text):
    """metric name -> label names seen on its samples."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? ", line)
        if m and not line.startswith("#"):
            out.setdefault(m.group(1), set()).update(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', m.group(2) or ""))
    return out


def names(text):
    out = set()
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{| )", line)
        if m and not line.startswith("#"):
            out.add(m.group(1))
        t = re.match(r"^# TYPE (\S+) (histogram|summary)", line)
        if t:
            out.add(t.group(1))
    return out


def main(binary, out_file):
    if not (binary and os.path.isfile(binary) and os.access(binary, os.X_OK)):
        raise SystemExit(f"no blinkchamber binary at '{binary}': build it (cargo build) or set BLINKCHAMBER_BIN")
    if not shutil.which("redis-server"):
        raise SystemExit("redis-server not found on PATH (apt-get install redis-server)")
    work = tempfile.mkdtemp(prefix="bc-metrics-")
    procs = []
    try:
        rport, rport2, sport, api, m1, m2 = (free_port() for _ in range(6))
        os.makedirs(f"{work}/r1")
        os.makedirs(f"{work}/r2")
        redis = redis_up(rport, f"{work}/r1")
        replica = redis_up(rport2, f"{work}/r2", "--replicaof", "127.0.0.1", str(rport))
        procs += [redis, replica]
        wait_redis(rport)
        wait_redis(rport2)
        sentinel = sentinel_up(sport, rport, work)
        procs.append(sentinel)
        wait_redis(sport)
        hook = free_port()  # nothing listens there: deliveries fail, events dead-letter
        base_cfg = {
            "backend": "redis",
            "redis": {"mode": "sentinel", "sentinel": {"masterName": "mymaster", "nodes": [f"127.0.0.1:{sport}"]},
                      "maxRetries": 0,
                      "dialTimeout": "500ms", "readTimeout": "500ms", "writeTimeout": "500ms"},
            "rateLimit": {"rules": [{"name": "check", "descriptor": ["ip"], "limit": 2, "period": "1m", "burst": 1}]},
            "events": {"publishing": {"maxRetries": 0, "retryDelay": "50ms", "batchTimeout": "500ms"},
                       "consumer": {"maxRetries": 1, "retryDelay": "100ms", "maxRetryDelay": "200ms", "lease": "2s"},
                       "performance": {"flushInterval": "100ms"},
                       "sinks": {"log": False, "webhooks": [{"match": "*", "url": f"http://127.0.0.1:{hook}/hook", "timeout": "1s"}]}},
        }
        for name, metrics_port in (("serve", m1), ("worker", m2)):
            cfg = dict(base_cfg, server={"listen": f"127.0.0.1:{api if name == 'serve' else free_port()}",
                                         "metricsListen": f"127.0.0.1:{metrics_port}",
                                         "auth": {"tokens": {"value": TOKEN}}})
            with open(f"{work}/{name}.yaml", "w") as fh:
                json.dump(cfg, fh)
        log = open(f"{work}/processes.log", "w")
        # BLINKCHAMBER_* variables are config overrides for the binary: keep ours out.
        env = {k: v for k, v in os.environ.items() if not k.startswith("BLINKCHAMBER_")}
        serve = subprocess.Popen([binary, "serve", "--config", f"{work}/serve.yaml"], stdout=log, stderr=log, env=env)
        procs.append(serve)
        base = f"http://127.0.0.1:{api}"
        wait_http(base + "/readyz", proc=serve)
        worker = subprocess.Popen([binary, "worker", "--config", f"{work}/worker.yaml"], stdout=log, stderr=log, env=env)
        procs.append(worker)
        wait_http(f"http://127.0.0.1:{m2}/metrics", proc=worker)
        # workload
        call(base, "PUT", "/v1/cache/check/a", {"value": {"n": 1}, "ttl": "1m"})
        for key in ("a", "a", "missing"):
            call(base, "GET", f"/v1/cache/check/{key}")
        call(base, "DELETE", "/v1/cache/check/a")
        for _ in range(5):
            call(base, "POST", "/v1/ratelimit/check", {"rule": "check", "key": "10.0.0.1"})
        call(base, "POST", "/v1/locks/check", {"ttl": "5s"})
        call(base, "POST", "/v1/sessions", {"userId": "u1"})
        events = [{"specversion": "1.0", "id": f"e{i}", "source": "metrics-check", "type": t}
                  for i, t in enumerate(["user.created", "auth.login", "org.deleted"])]
        call(base, "POST", "/v1/events", events)
        deadline = time.time() + 20
        while time.time() < deadline:
            text = urllib.request.urlopen(f"http://127.0.0.1:{m2}/metrics", timeout=5).read().decode()
            if "blinkchamber_events_dead_lettered_total" in text:
                break
            time.sleep(0.5)
        # A Sentinel failover: the runtime follows the new master and counts it. Sentinel
        # learns of replicas from the master's INFO, polled every 10 s, and refuses
        # SENTINEL FAILOVER (-NOGOODSLAVE) until it has: ask until it is accepted.
        deadline = time.time() + 60
        failed_over = False
        while time.time() < deadline:
            if not failed_over:
                failed_over = redis_cmd(sport, "SENTINEL", "FAILOVER", "mymaster").startswith(b"+OK")
            if failed_over:
                text = urllib.request.urlopen(f"http://127.0.0.1:{m1}/metrics", timeout=5).read().decode()
                if "blinkchamber_redis_failovers_total" in text:
                    break
            time.sleep(0.5)
        else:
            raise SystemExit("the Sentinel failover was not seen by serve within 60 s"
                             f" (accepted by Sentinel: {failed_over})")
        # Redis away: failed commands and errors get counted.
        for p in (redis, replica):
            p.terminate()
            p.wait(5)
        call(base, "POST", "/v1/events", [dict(events[0], id="lost")])
        for _ in range(3):
            call(base, "PUT", "/v1/cache/check/b", {"value": 1})
            call(base, "POST", "/v1/ratelimit/check", {"rule": "check", "key": "10.0.0.2"})
        deadline = time.time() + 10
        while time.time() < deadline:
            text = urllib.request.urlopen(f"http://127.0.0.1:{m1}/metrics", timeout=5).read().decode()
            if "blinkchamber_events_publish_failures_total" in text:
                break
            time.sleep(0.5)
        found = set()
        label_names = {}
        for port in (m1, m2):
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            found |= names(text)
            for metric, ls in labels(text).items():
                label_names.setdefault(metric, set()).update(ls)
            with open(f"{out_file}.{port}.prom", "w") as fh:
                fh.write(text)
        for n in list(found):
            if n.endswith(("_bucket", "_sum", "_count")):
                found.add(n.rsplit("_", 1)[0])
        with open(out_file, "w") as fh:
            fh.write("\n".join(sorted(found)) + "\n")
        with open(out_file + ".labels.json", "w") as fh:
            json.dump({k: sorted(v) for k, v in sorted(label_names.items())}, fh, indent=1)
        print(f"{len(found)} metric names from serve and worker")
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "", sys.argv[2] if len(sys.argv) > 2 else "/dev/stdout")
