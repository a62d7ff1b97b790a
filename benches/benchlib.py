"""Shared parts of the Python benchmarks (`side_by_side.py`, `steady_state.py`, `burst.py`):
the benchmark virtualenv, the counting reverse proxy, seeding moto, the test bed's IAM
latency, and the report header. Not a benchmark itself."""

import atexit
import base64
import concurrent.futures
import hashlib
import hmac
import http.client
import http.server
import json
import math
import os
import platform
import signal
import statistics
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import Counter

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.expanduser("~/.cache/mfa-operator-testbed/bench-venv")
VENV_PY = os.path.join(VENV, "bin", "python")
PINS = ["c7n==0.9.53", "awscli==1.46.3"]
# Where cargo puts the release build: CARGO_TARGET_DIR when set (CI may keep it outside the tree).
RELEASE_BINARY = os.path.join(os.path.join(REPO, os.environ.get("CARGO_TARGET_DIR", "target")), "release", "mfa-operator")


def ensure_venv():
    """Re-executes the calling script with the benchmark venv's python (c7n and awscli;
    made on first use)."""
    if not os.path.exists(VENV_PY):
        print(f"creating {VENV} with {' '.join(PINS)}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
        subprocess.run([VENV_PY, "-m", "pip", "install", "-q", *PINS], check=True)
        subprocess.run([VENV_PY, "-m", "pip", "check"], check=True)
    run_with(VENV_PY)


def run_with(python):
    """Re-executes the calling script with `python` (a venv's interpreter) unless it already
    runs under that venv."""
    venv = os.path.dirname(os.path.dirname(python))
    if os.path.realpath(sys.prefix) != os.path.realpath(venv):
        os.execv(python, [python, os.path.abspath(sys.argv[0]), *sys.argv[1:]])


# ---------------------------------------------------------------- counting proxy

class Proxy:
    """Reverse proxy on 127.0.0.1:0 forwarding everything to the upstream and counting
    requests by the `Action=` of the form body (IAM and STS speak the query protocol)."""

    def __init__(self, upstream):
        u = urllib.parse.urlsplit(upstream)
        self.host, self.port = u.hostname, u.port or 80
        self.lock = threading.Lock()
        self.counts = Counter()
        proxy = self
        local = threading.local()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Without this, headers and body go out in two writes and Nagle + delayed ACK
            # add ~40 ms to every response for clients that do not coalesce (the Rust SDK).
            disable_nagle_algorithm = True

            def log_message(self, *a):
                pass

            def _conn(self):
                c = getattr(local, "conn", None)
                if c is None:
                    c = local.conn = http.client.HTTPConnection(proxy.host, proxy.port, timeout=120)
                return c

            def _any(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                action = None
                if body:
                    try:
                        q = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
                        action = q.get("Action", [None])[0]
                    except Exception:
                        pass
                if action is None:
                    q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                    action = q.get("Action", [None])[0]
                with proxy.lock:
                    proxy.counts[action or f"(no Action: {self.command} {self.path.split('?')[0]})"] += 1
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("connection", "keep-alive", "proxy-connection",
                                                "transfer-encoding", "content-length")}
                headers["Content-Length"] = str(len(body))
                for attempt in (0, 1):
                    c = self._conn()
                    try:
                        c.request(self.command, self.path, body=body, headers=headers)
                        r = c.getresponse()
                        data = r.read()
                        break
                    except (http.client.HTTPException, OSError):
                        c.close()
                        local.conn = None
                        if attempt:
                            raise
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() not in ("connection", "keep-alive", "transfer-encoding",
                                         "content-length", "server", "date"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                # one write for status line, headers, blank line and body
                self._headers_buffer.extend([b"\r\n", data])
                self.flush_headers()

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _any

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def take(self):
        with self.lock:
            c, self.counts = self.counts, Counter()
        return c


# ---------------------------------------------------------------- seeding

def totp(secret_b32, t):
    key = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
    h = hmac.new(key, struct.pack(">Q", int(t) // 30), hashlib.sha1).digest()
    o = h[-1] & 0x0F
    return "%06d" % ((struct.unpack(">I", h[o:o + 4])[0] & 0x7FFFFFFF) % 1_000_000)


def reset_moto(moto):
    u = urllib.parse.urlsplit(moto)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    c.request("POST", "/moto-api/reset", body=b"")
    r = c.getresponse()
    r.read()
    if r.status != 200:
        sys.exit(f"moto reset failed: HTTP {r.status}")


def group_name(g):
    return f"bench-team-{g:02d}"


class Seeded:
    """What `seed` made: every user name, the names without MFA, and each user's group
    index (None without groups)."""

    def __init__(self, names, without, group_of):
        self.names, self.without, self.group_of = names, without, group_of

    def in_group(self, g):
        """(users, users without MFA) of group `g`."""
        members = [n for n in self.names if self.group_of[n] == g]
        return len(members), sum(1 for n in members if n in self.without)


def seed(moto, n, workers=16, groups=0):
    """N users `bench-user-NNNNN` at path `/`, every tenth (10%) without MFA, the others with
    an enabled virtual MFA device; with `groups`, users are dealt into groups
    `bench-team-GG` ten at a time, so the users without MFA spread evenly over them."""
    import boto3
    from botocore.config import Config
    cfg = Config(max_pool_connections=workers, retries={"max_attempts": 10, "mode": "standard"})
    iam = boto3.client("iam", endpoint_url=moto, config=cfg)
    names = [f"bench-user-{i:05d}" for i in range(n)]
    without = {names[i] for i in range(n) if i % 10 == 9}  # 10% without MFA
    group_of = {names[i]: (i // 10) % groups if groups else None for i in range(n)}
    for g in range(groups):
        iam.create_group(GroupName=group_name(g))

    def one(name):
        iam.create_user(UserName=name, Path="/")
        if groups:
            iam.add_user_to_group(GroupName=group_name(group_of[name]), UserName=name)
        if name in without:
            return
        dev = iam.create_virtual_mfa_device(VirtualMFADeviceName=name)["VirtualMFADevice"]
        seed_b32 = dev["Base32StringSeed"]
        if isinstance(seed_b32, bytes):
            seed_b32 = seed_b32.decode()
        now = time.time()
        iam.enable_mfa_device(UserName=name, SerialNumber=dev["SerialNumber"],
                              AuthenticationCode1=totp(seed_b32, now - 30),
                              AuthenticationCode2=totp(seed_b32, now))

    with concurrent.futures.ThreadPoolExecutor(workers) as ex:
        list(ex.map(one, names))
    return Seeded(names, without, group_of)


def seed_without_mfa(moto, names, path, workers=16):
    """IAM users `names` under `path`, none with an MFA device."""
    import boto3
    from botocore.config import Config
    cfg = Config(max_pool_connections=workers, retries={"max_attempts": 10, "mode": "standard"})
    iam = boto3.client("iam", endpoint_url=moto, config=cfg)
    with concurrent.futures.ThreadPoolExecutor(workers) as ex:
        list(ex.map(lambda name: iam.create_user(UserName=name, Path=path), names))


def virtual_devices(endpoint):
    """IAM's own answer, every page of ListVirtualMFADevices: ({user name: serial} of the
    assigned virtual devices, [serials of the unassigned ones])."""
    import boto3
    iam = boto3.client("iam", endpoint_url=endpoint)
    assigned, unassigned = {}, []
    for status in ("Assigned", "Unassigned"):
        for page in iam.get_paginator("list_virtual_mfa_devices").paginate(AssignmentStatus=status):
            for d in page["VirtualMFADevices"]:
                if status == "Assigned":
                    assigned[d["User"]["UserName"]] = d["SerialNumber"]
                else:
                    unassigned.append(d["SerialNumber"])
    return assigned, unassigned


# ---------------------------------------------------------------- IAM latency

def _latency_call(moto, method, query=""):
    u = urllib.parse.urlsplit(moto)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    c.request(method, "/strict-iam/latency" + query, body=b"" if method == "POST" else None)
    r = c.getresponse()
    raw = r.read()
    c.close()
    return r.status, raw


def set_latency(moto, delay_ms, jitter_ms=0):
    """Makes the test bed's IAM (the strict IAM layer in front of moto) answer every IAM
    request after `delay_ms` plus up to `jitter_ms` of uniform jitter, and puts it back to
    0 at exit (also on failure, SIGTERM or Ctrl-C). Returns a line for the report header.
    Without the strict layer (MFA_TESTBED_STRICT_IAM=0) a delay of 0 is the default and
    anything else exits."""
    status, raw = _latency_call(moto, "POST", f"?delay_ms={delay_ms}&jitter_ms={jitter_ms}")
    # Plain moto answers an unknown path with 404 or 500; no delay is its default.
    if status in (404, 500) and not (delay_ms or jitter_ms):
        return "IAM latency: none (plain moto, no strict IAM layer to set it on)"
    if status != 200:
        sys.exit(f"cannot set the IAM latency (POST {moto}/strict-iam/latency: HTTP {status} {raw[:200]!r}); "
                 "it needs the strict IAM layer (MFA_TESTBED_STRICT_IAM=1, the default)")
    answer = json.loads(raw)
    if (answer.get("delay_ms"), answer.get("jitter_ms")) != (delay_ms, jitter_ms):
        sys.exit(f"the strict IAM layer answered {answer} to delay_ms={delay_ms}&jitter_ms={jitter_ms}")
    if not getattr(set_latency, "registered", False):
        set_latency.registered = True
        atexit.register(_reset_latency, moto)
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated (SIGTERM)"))
    return (f"IAM latency: {delay_ms} ms per IAM request" + (f" + up to {jitter_ms} ms of uniform jitter" if jitter_ms else "")
            + f" (strict IAM layer, POST {moto}/strict-iam/latency; back to 0 at exit)")


def _reset_latency(moto):
    try:
        status, raw = _latency_call(moto, "POST", "?delay_ms=0&jitter_ms=0")
        if status != 200:
            print(f"WARNING: could not reset the IAM latency: HTTP {status} {raw[:200]!r}", file=sys.stderr)
    except OSError as e:
        print(f"WARNING: could not reset the IAM latency: {e}", file=sys.stderr)


# ---------------------------------------------------------------- report helpers

def require_testbed(binary):
    """The moto endpoint, or exit with instructions when the test bed or binary is missing."""
    moto = os.environ.get("AWS_ENDPOINT_URL")
    if not moto or not os.environ.get("MFA_TESTBED"):
        sys.exit('run inside the test bed: eval "$(tests/testbed/testbed env)"')
    if not os.access(binary, os.X_OK):
        sys.exit(f"{binary} missing: cargo build --release --bin mfa-operator")
    return moto


def machine():
    """One line describing this machine."""
    cpu = mem = "?"
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
        kib = int(next(l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal")))
        mem = "%.1f GiB" % (kib / 2**20)
    except (OSError, StopIteration, ValueError):
        pass
    return (f"{cpu}, {os.cpu_count()} cores, {mem}; {platform.system()} {platform.release()}; "
            f"python {platform.python_version()}")


def binary_version(binary):
    return subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip() or "mfa-operator"


def fmt_calls(c):
    """`total (Action n, ...)`, largest first."""
    total = sum(c.values())
    detail = ", ".join(f"{k} {v:,}" for k, v in sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))
    return f"{total:,} ({detail})" if detail else "0"


def percentile(values, p):
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def min_med_max(values, fmt="{:.3f}"):
    """`min | median | max` cells of a markdown table."""
    return " | ".join(fmt.format(v) for v in (min(values), statistics.median(values), max(values)))
