"""Helpers shared by the Python benchmarks (scripts/bench-compare, scripts/bench-pg).

Setup HTTP (the measured traffic is wrk's), processes started and stopped, wrk with Lua checks
of every response, the machine and load average for the report, and rewriting a marked
section of docs/benchmarks.md.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def fail(msg):
    print(f"{Path(sys.argv[0]).name}: {msg}", file=sys.stderr)
    sys.exit(1)


# ---- HTTP during setup ----

class Unexpected(Exception):
    """An answer the setup did not expect."""


def http(method, url, body=None, headers=None, ok=(200, 201, 204), timeout=30):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as res:
            status, raw = res.status, res.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    if status not in ok:
        raise Unexpected(f"{method} {url}: {status} {raw[:300]!r}")
    return json.loads(raw) if raw.strip().startswith(b"{") else raw


def wait_until(what, check, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, ValueError, Unexpected):
            pass
        time.sleep(0.1)
    fail(f"timed out waiting for {what}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Procs:
    """Processes started by the benchmark, stopped (SIGTERM, then SIGKILL) at the end."""

    def __init__(self, logdir):
        self.logdir, self.procs = logdir, []

    def start(self, name, args, env=None):
        out = open(self.logdir / f"{name}.out", "wb")
        err = open(self.logdir / f"{name}.log", "wb")
        p = subprocess.Popen(args, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                             env={**os.environ, **(env or {})})
        self.procs.append((name, p))
        return p

    def announced(self, name):
        """The URL a coffer process prints once it serves (`listening on URL`)."""
        path = self.logdir / f"{name}.out"
        for _ in range(1200):
            m = re.search(r"^listening on (\S+)", path.read_text(), re.M)
            if m:
                return m.group(1)
            time.sleep(0.05)
        fail(f"{name} is not listening; see {self.logdir / (name + '.log')}")

    @staticmethod
    def _stop(procs):
        for _, p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for _, p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def stop_one(self, name):
        """Stops the process started as `name` (and forgets it)."""
        mine = [(n, p) for n, p in self.procs if n == name]
        self.procs = [(n, p) for n, p in self.procs if n != name]
        self._stop(mine)

    def stop(self):
        self._stop(self.procs)
        self.procs = []


def coffer_binary():
    """BENCH_BIN, or the release binary built from this tree."""
    if os.environ.get("BENCH_BIN"):
        return Path(os.environ["BENCH_BIN"]).resolve()
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "coffer-cli"], cwd=ROOT, check=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return (ROOT / target / "release" / "coffer").resolve()


# ---- wrk ----

# Checks every response. Reads send one fixed request (wrk's static request); writes go round
# robin over the paths in a file, so they define request() (`wrk -- MODE EXPECT [PATHS METHOD
# BODY]`). `id` is the wrk thread's number (0, 1, ...).
LUA_CHECK = r"""
local threads = {}
local counter = 0
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end
function init(args)
  mode, expect = args[1], args[2]
  responses, non2xx, wrong = 0, 0, 0
  paths, n = {}, 0
  if args[3] then
    for line in io.lines(args[3]) do table.insert(paths, line) end
    method, body = args[4], args[5]
    n = id * 7
  end
end
function response(status, headers, b)
  responses = responses + 1
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  elseif mode == "exact" and b ~= expect then
    wrong = wrong + 1
  elseif mode == "contains" and not string.find(b, expect, 1, true) then
    wrong = wrong + 1
  end
end
function done(summary, latency, requests)
  local r, s, w = 0, 0, 0
  for _, t in ipairs(threads) do
    r = r + t:get("responses"); s = s + t:get("non2xx"); w = w + t:get("wrong")
  end
  local e = summary.errors
  io.write(string.format("CHECK responses=%d non2xx=%d wrong=%d errors=%d\n", r, s, w,
    e.connect + e.read + e.write + e.timeout))
  io.write(string.format("RESULT requests=%d seconds=%f p50=%d p99=%d\n", summary.requests,
    summary.duration / 1e6, latency:percentile(50), latency:percentile(99)))
end
"""

# The same body to every path, round robin.
LUA_REQUEST = r"""
function request()
  n = n + 1
  return wrk.format(method, paths[(n % #paths) + 1], nil, body)
end
"""


def wrk_command(script, secs, conns, url, headers, args, threads=2, timeout=None):
    """The wrk command line: `script` checks every response; `args` go to its init().
    `timeout` (seconds) replaces wrk's 2 s, past which a response counts as a socket error."""
    cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{secs}s", "-s", str(script)]
    if timeout:
        cmd.append(f"--timeout={timeout}s")
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    return cmd + [url, "--", *args]


def wrk_result(out, what):
    """requests/s, p50 and p99 (ms) from a run of a LUA_CHECK script; fails on any bad answer."""
    check = re.search(r"CHECK responses=(\d+) non2xx=(\d+) wrong=(\d+) errors=(\d+)", out)
    res = re.search(r"RESULT requests=(\d+) seconds=([\d.]+) p50=(\d+) p99=(\d+)", out)
    if not check or not res:
        fail(f"unexpected wrk output ({what}):\n{out}")
    responses, non2xx, wrong, errors = map(int, check.groups())
    if responses == 0 or non2xx or wrong or errors:
        fail(f"{what}: {responses} responses, {non2xx} not 2xx, {wrong} with a wrong body, "
             f"{errors} socket errors:\n{out}")
    return {"rps": int(res.group(1)) / float(res.group(2)),
            "p50": int(res.group(3)) / 1000, "p99": int(res.group(4)) / 1000}


def wrk_run(cmd, what):
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return wrk_result(out, what)


def wrk_parallel(cmds, what):
    """Runs several wrk commands at once (one per target); their results, in order."""
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c in cmds]
    outs = []
    for p, c in zip(procs, cmds):
        out, err = p.communicate()
        if p.returncode != 0:
            fail(f"{what}: wrk exited with {p.returncode}: {err}")
        outs.append(out)
    return [wrk_result(o, f"{what} (#{i + 1})") for i, o in enumerate(outs)]


# ---- the report ----

def machine():
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                  if line.startswith("model name")), "unknown CPU")
    mem = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    return f"{os.cpu_count()} cores (`nproc`), {model}, {mem / 1048576:.0f} GiB RAM"


def load():
    return open("/proc/loadavg").read().split()[:3]


def git_describe():
    r = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True,
                       text=True)
    return r.stdout.strip() or "unknown commit"


def wrk_version():
    return (subprocess.run(["wrk", "-v"], capture_output=True, text=True)
            .stdout.strip().splitlines()[0].split(" [")[0])


def write_section(docs, begin, end, section, heading):
    """Puts `section` between the markers in `docs`, or appends it under `heading`."""
    text = docs.read_text()
    block = f"{begin}\n{section}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + f"\n\n{heading}\n\n" + block + "\n"
    docs.write_text(text)
