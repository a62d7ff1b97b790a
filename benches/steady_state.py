#!/usr/bin/env python3
"""Steady state and time to a complete status: the release `mfa-operator run` binary on the
local test bed, with every IAM call counted at a reverse proxy in front of moto.

Seeds one account (THIS RESETS THE TEST BED'S MOTO): N users (default 5,000, the AWS
per-account maximum), 10% without MFA, user i in group bench-team-(i % G).

Part 1, a new MfaEnrollment over the whole account (`pathPrefix: /`), R runs per mode: a
fresh operator process (no inventory yet), then the time from creating the enrollment until
its status is complete for this generation -- every user counted, Ready=True; in Enroll mode
every user without MFA Pending (a device and its seed Secret, whose number is checked). The
enrollment is deleted (the operator removes its pending devices) before the next run.

Part 2, steady state: one fresh operator, G enrollments (default 10, one group each, mode
Enroll, resyncInterval --resync); once all are complete, nothing changes for --window
seconds (rounded down to whole resync intervals). Per resync interval: IAM calls at the proxy, operator CPU seconds (utime + stime
from /proc) and resident memory; peak RSS (VmHWM) over the whole process life. Then a new
enrollment over the whole account is timed once more, this time with the account's
inventory already warm.

The operator's status is checked against IAM itself (every page of ListVirtualMFADevices,
asked past the counting proxy): users with MFA assigned, one pending device under the
operator's path per user without. The run fails on any disagreement, on any reconcile
error, and on more inventory refreshes in the window than resync intervals.

With --delay-ms N the test bed's IAM answers every request N ms late (the strict IAM layer's
latency, set after the seeding and put back to 0 at exit), as AWS does from a cluster.

Usage (needs the test bed; run it alone, not while tests/run runs):
  tests/testbed/testbed up && eval "$(tests/testbed/testbed env)"
  cargo build --release --bin mfa-operator
  python3 benches/steady_state.py [--users 5000] [--groups 10] [--runs 3] [--resync 60] [--window 600] [--delay-ms 0]
      [--skip-new | --skip-steady]
"""

import argparse
import hashlib
import atexit
import http.client
import json
import os
import secrets
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (REPO, RELEASE_BINARY, Proxy, binary_version, fmt_calls, group_name,  # noqa: E402
                      machine, min_med_max, require_testbed, reset_moto, run_with, seed, set_latency,
                      virtual_devices)

# Operators still running; killed at exit, so a failed run leaves none behind.
RUNNING = []

GROUP = "iam.mfa-operator.dev"
VERSION = "v1alpha1"
PLURAL = "mfaenrollments"
ACCOUNT = "123456789012"  # moto's account: what the test bed's credentials reach
DEVICE_PATH = "/mfa-operator-bench/"
WRITE_ACTIONS = ("CreateVirtualMFADevice", "DeleteVirtualMFADevice", "EnableMFADevice", "DeactivateMFADevice",
                 "TagMFADevice", "UntagMFADevice")
CLK_TCK = os.sysconf("SC_CLK_TCK")
# The integrity-key Secret carries the managed-by label too; only seed Secrets carry the enrollment label.
SEED_SECRETS = "app.kubernetes.io/managed-by=mfa-operator,iam.mfa-operator.dev/enrollment"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- Kubernetes (direct HTTPS)

class Kube:
    """Just enough of a Kubernetes client: the test bed's admin token over HTTPS."""

    def __init__(self):
        u = urllib.parse.urlsplit(os.environ["MFA_TESTBED_APISERVER"])
        self.host, self.port = u.hostname, u.port
        self.ctx = ssl.create_default_context(cafile=os.environ["MFA_TESTBED_CA"])
        self.headers = {"Authorization": f"Bearer {os.environ['MFA_TESTBED_ADMIN_TOKEN']}",
                        "Accept": "application/json"}

    def conn(self, timeout=60):
        return http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=timeout)

    def call(self, method, path, body=None, content_type="application/json", ok=(200, 201, 202)):
        c = self.conn()
        headers = dict(self.headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        c.request(method, path, body=data, headers=headers)
        r = c.getresponse()
        raw = r.read()
        c.close()
        if r.status == 404 and 404 in ok:
            return None
        if r.status not in ok:
            raise RuntimeError(f"{method} {path}: HTTP {r.status}: {raw[:500]!r}")
        return json.loads(raw) if raw else None

    def request_counts(self):
        """The apiserver's own count of requests served (`apiserver_request_total` of its
        /metrics) by verb and resource, all clients together; leases and the apiserver's own
        requests left out."""
        c = self.conn()
        c.request("GET", "/metrics", headers=self.headers)
        raw = c.getresponse().read().decode()
        c.close()
        counts = Counter()
        for line in raw.splitlines():
            if not line.startswith("apiserver_request_total{"):
                continue
            labels = dict(kv.split("=", 1) for kv in line[line.index("{") + 1:line.rindex("}")].split('",'))
            labels = {k: v.strip('"') for k, v in labels.items()}
            resource = labels.get("resource") or ""
            if not resource or resource == "leases" or labels.get("component") != "apiserver":
                continue
            if labels.get("subresource"):
                resource += "/" + labels["subresource"]
            counts[f"{labels['verb']} {resource}"] += int(float(line.rsplit(" ", 1)[1]))
        return counts

    def apply_crd(self):
        path = os.path.join(REPO, "crds")
        subprocess.run([os.environ.get("MFA_TESTBED_KUBECTL", "kubectl"), "apply", "--server-side",
                        "--field-manager", "mfa-bench", "-f", path], check=True, capture_output=True)
        for plural in (PLURAL, "mfaaccountbindings"):
            deadline = time.monotonic() + 60
            while True:
                crd = self.call("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{plural}.{GROUP}")
                conditions = (crd.get("status") or {}).get("conditions") or []
                if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
                    break
                if time.monotonic() > deadline:
                    sys.exit(f"the {plural} CRD was not Established within 60 s")
                time.sleep(0.2)

    def bind(self, ns, spec):
        """Moves `spec.device` onto an MfaAccountBinding that serves `ns` (moto's account,
        every user, Enroll allowed) and names it, as the platform team would grant a bench."""
        spec = dict(spec)
        device = spec.pop("device", {"path": "/mfa-operator/"})
        name = f"{ns}-{hashlib.sha256(json.dumps(device, sort_keys=True).encode()).hexdigest()[:8]}"
        binding = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "MfaAccountBinding", "metadata": {"name": name},
                   "spec": {"accountId": ACCOUNT, "namespaces": {"names": [ns]}, "users": {"pathPrefixes": ["/"]},
                            "device": device, "allowEnroll": True}}
        self.call("PATCH", f"/apis/{GROUP}/{VERSION}/mfaaccountbindings/{name}?fieldManager=mfa-bench&force=true",
                  binding, content_type="application/apply-patch+yaml")
        spec["accountRef"] = {"name": name}
        return spec

    def create_namespace(self, name):
        self.call("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    def delete_namespace(self, name):
        self.call("DELETE", f"/api/v1/namespaces/{name}", ok=(200, 202, 404))

    def seed_secrets(self, ns):
        """How many seed Secrets the namespace holds."""
        sel = urllib.parse.quote(SEED_SECRETS)
        return len(self.call("GET", f"/api/v1/namespaces/{ns}/secrets?labelSelector={sel}")["items"])

    def enrollments(self, ns):
        return f"/apis/{GROUP}/{VERSION}/namespaces/{ns}/{PLURAL}"

    def create_enrollment(self, ns, name, spec):
        spec = self.bind(ns, spec)
        self.call("POST", self.enrollments(ns),
                  {"apiVersion": f"{GROUP}/{VERSION}", "kind": "MfaEnrollment", "metadata": {"name": name}, "spec": spec})

    def delete_enrollment(self, ns, name, timeout):
        """Deletes and waits (bounded) until the operator's finalizer let it go."""
        self.call("DELETE", f"{self.enrollments(ns)}/{name}", ok=(200, 202, 404))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.call("GET", f"{self.enrollments(ns)}/{name}", ok=(200, 404)) is None:
                return
            time.sleep(0.5)
        sys.exit(f"enrollment {ns}/{name} still exists {timeout} s after its deletion")


class Watch:
    """A watch on the MfaEnrollments of one namespace, keeping the latest object per name and
    noting when each event arrived (the moment the benchmark counts as "seen"). Each of
    `listeners` is called as listener(name, object, arrival time) for every ADDED or
    MODIFIED event, under `cond`, in the order the events arrive."""

    def __init__(self, kube, ns, listeners=()):
        self.latest, self.cond, self.error = {}, threading.Condition(), None
        self.listeners = list(listeners)
        self.modified = 0  # MODIFIED events seen
        self.changes = []  # (name, what changed) of each MODIFIED event
        self.last_event = time.monotonic()
        listing = kube.call("GET", kube.enrollments(ns))
        for item in listing["items"]:
            self.latest[item["metadata"]["name"]] = item
        rv = listing["metadata"]["resourceVersion"]
        self.conn = kube.conn(timeout=3600)
        self.conn.request("GET", f"{kube.enrollments(ns)}?watch=1&resourceVersion={rv}&allowWatchBookmarks=false",
                          headers=kube.headers)
        self.resp = self.conn.getresponse()
        if self.resp.status != 200:
            raise RuntimeError(f"watch failed: HTTP {self.resp.status}")
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        try:
            for line in self.resp:
                arrived = time.monotonic()
                event = json.loads(line)
                obj = event["object"]
                if event["type"] == "ERROR":
                    raise RuntimeError(f"watch error: {obj.get('message')}")
                with self.cond:
                    self.last_event = arrived
                    if event["type"] == "DELETED":
                        self.latest.pop(obj["metadata"]["name"], None)
                    elif event["type"] in ("ADDED", "MODIFIED"):
                        name = obj["metadata"]["name"]
                        if event["type"] == "MODIFIED":
                            self.modified += 1
                            self.changes.append((name, changed_fields(self.latest.get(name), obj)))
                        self.latest[name] = obj
                        for listener in self.listeners:
                            listener(name, obj, arrived)
                    self.cond.notify_all()
            raise EOFError("the apiserver ended the watch")
        except Exception as e:  # also how `close` ends it
            with self.cond:
                self.error = e
                self.cond.notify_all()

    def wait(self, predicate, timeout, what):
        """Blocks until predicate(latest objects by name) holds; returns the monotonic time
        at which the event that made it hold arrived."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate(self.latest):
                left = deadline - time.monotonic()
                if left <= 0 or self.error:
                    why = f"the watch failed ({self.error})" if self.error else f"timed out after {timeout} s"
                    sys.exit(f"{why} waiting for {what}; last statuses:\n"
                             + "\n".join(f"  {n}: {describe(o)}" for n, o in sorted(self.latest.items())))
                self.cond.wait(min(left, 1.0))
            return self.last_event

    def close(self):
        try:
            self.conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.conn.close()


def changed_fields(old, new):
    """Which parts of an MfaEnrollment differ: metadata.generation, status keys, and for
    conditions the type and field (never values: statuses hold no secrets, but keep it short)."""
    if old is None:
        return ["(not seen before)"]
    out = []
    if old["metadata"].get("generation") != new["metadata"].get("generation"):
        out.append("metadata.generation")
    so, sn = old.get("status") or {}, new.get("status") or {}
    for key in sorted(set(so) | set(sn)):
        if so.get(key) == sn.get(key):
            continue
        if key == "conditions":
            before = {c["type"]: c for c in so.get(key, [])}
            for c in sn.get(key, []):
                was = before.get(c["type"], {})
                out += [f"conditions[{c['type']}].{f}" for f in sorted(set(c) | set(was)) if c.get(f) != was.get(f)]
        elif key == "users":
            ou, nu = {u["name"]: u for u in so.get(key, [])}, {u["name"]: u for u in sn.get(key, [])}
            out += [f"users[{n}]" for n in sorted(set(ou) | set(nu)) if ou.get(n) != nu.get(n)][:5]
        else:
            out.append(f"status.{key}")
    return out or ["(metadata only)"]


def describe(obj):
    st = obj.get("status") or {}
    conds = {c["type"]: f"{c['status']}/{c.get('reason')}" for c in st.get("conditions", [])}
    return (f"generation {obj['metadata'].get('generation')} observed {st.get('observedGeneration')} "
            f"summary {st.get('summary')} conditions {conds}")


def complete(obj, selected, pending, compliant):
    """Status of this generation with every selected user counted and Ready=True."""
    st = (obj or {}).get("status") or {}
    s = st.get("summary") or {}
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in st.get("conditions", []))
    return (ready and st.get("observedGeneration") == obj["metadata"]["generation"]
            and s.get("selected") == selected and s.get("compliant") == compliant
            and s.get("pending", 0) == pending and s.get("missing", 0) == (0 if pending else selected - compliant))


# ---------------------------------------------------------------- the operator process

class Operator:
    def __init__(self, binary, env, ns, logdir, log="info"):
        self.logpath = os.path.join(logdir, f"operator-{ns}-{int(time.time() * 1000)}.log")
        self.logfile = open(self.logpath, "w")
        self.proc = subprocess.Popen(
            [binary, "run", "--namespace", ns, "--metrics-address", "127.0.0.1:0",
             "--log-format", "json", "--log", log],
            env=env, stdout=self.logfile, stderr=subprocess.STDOUT)
        RUNNING.append(self.proc)
        self.port = None
        deadline = time.monotonic() + 60
        while self.port is None or self.get("/readyz")[0] != 200:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"the operator did not become ready (exit {self.proc.poll()}); log {self.logpath}")
            self.port = self.port or self.metrics_port()
            time.sleep(0.1)

    def metrics_port(self):
        """The port the operator bound for /metrics, from its `serving` log line."""
        with open(self.logpath) as f:
            for line in f:
                try:
                    fields = json.loads(line)
                except ValueError:
                    continue
                fields = fields.get("fields", fields)  # flattened or not
                if str(fields.get("message", "")).startswith("serving /metrics"):
                    return int(fields["address"].rsplit(":", 1)[1])
        return None

    def get(self, path):
        try:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            c.request("GET", path)
            r = c.getresponse()
            return r.status, r.read().decode()
        except OSError:
            return 0, ""

    def metric(self, name):
        """Sum of every sample of one metric (over all label sets)."""
        total = 0.0
        for line in self.get("/metrics")[1].splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def cpu_seconds(self):
        fields = open(f"/proc/{self.proc.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime

    def memory_kib(self):
        """(VmRSS, VmHWM) in KiB."""
        vals = {}
        for line in open(f"/proc/{self.proc.pid}/status"):
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                vals[key] = int(rest.split()[0])
        return vals["VmRSS"], vals["VmHWM"]

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            sys.exit("the operator did not stop within 30 s of SIGTERM")
        self.logfile.close()
        RUNNING.remove(self.proc)
        if self.proc.returncode != 0:
            sys.exit(f"the operator exited {self.proc.returncode}; log {self.logpath}")


@atexit.register
def kill_operators():
    for proc in RUNNING:
        proc.kill()


def iam_disagrees(moto, seeded, pending):
    """What IAM says against a complete status: users with MFA hold an assigned device;
    with `pending`, each user without MFA has exactly one unassigned device under the
    operator's path (and no other user has one). Returns a list of disagreements."""
    assigned, unassigned = virtual_devices(moto)
    out = []
    with_mfa = set(seeded.names) - set(seeded.without)
    if set(assigned) != with_mfa:
        out.append(f"IAM lists {len(assigned)} users with an assigned virtual device, the seed gave {len(with_mfa)}")
    ours = [serial for serial in unassigned if f":mfa{DEVICE_PATH}" in serial]
    want = len(seeded.without) if pending else 0
    if len(ours) != want:
        out.append(f"IAM lists {len(ours)} pending devices under {DEVICE_PATH}, the complete status counts {want}")
    return out


# ---------------------------------------------------------------- part 1

def whole_account(mode):
    return {"mode": mode, "users": {"pathPrefix": "/"}, "device": {"path": DEVICE_PATH}}


def new_enrollment(kube, proxy, moto, binary, env, logdir, mode, seeded, timeout):
    """One cold run: fresh namespace and operator, create, wait for a complete status.
    Returns (seconds, seconds until the first status with counts, IAM calls, peak RSS in KiB,
    apiserver requests until complete)."""
    users, without = len(seeded.names), seeded.without
    ns = f"bench-new-{secrets.token_hex(3)}"
    kube.create_namespace(ns)
    op = Operator(binary, env, ns, logdir)
    first_status = []

    def note_first_status(name, obj, arrived):
        if not first_status and (obj.get("status") or {}).get("summary"):
            first_status.append(arrived)

    watch = Watch(kube, ns, listeners=[note_first_status])
    pending = len(without) if mode == "Enroll" else 0
    proxy.take()
    requests0 = kube.request_counts()
    t0 = time.monotonic()
    kube.create_enrollment(ns, "whole-account", whole_account(mode))
    seen = watch.wait(lambda objs: complete(objs.get("whole-account"), users, pending, users - len(without)),
                      timeout, f"{mode} enrollment over {users} users")
    calls = proxy.take()
    requests = kube.request_counts()
    requests.subtract(requests0)
    requests = Counter({k: v for k, v in requests.items() if v > 0})
    _, hwm = op.memory_kib()
    watch.close()
    if kube.seed_secrets(ns) != pending:
        sys.exit(f"{kube.seed_secrets(ns)} seed Secrets for {pending} pending users")
    if wrong := iam_disagrees(moto, seeded, pending):
        sys.exit(f"FAILED: the {mode} status disagrees with IAM: {'; '.join(wrong)}")
    kube.delete_enrollment(ns, "whole-account", timeout)
    leftovers = proxy.take()
    op.stop()
    kube.delete_namespace(ns)
    if mode == "Enroll" and leftovers.get("DeleteVirtualMFADevice", 0) != len(without):
        sys.exit(f"cleanup deleted {leftovers.get('DeleteVirtualMFADevice', 0)} pending devices, "
                 f"expected {len(without)}")
    return seen - t0, (first_status or [seen])[0] - t0, calls, hwm, requests


# ---------------------------------------------------------------- part 2

def steady(kube, proxy, moto, binary, env, logdir, args, seeded):
    users, without = len(seeded.names), seeded.without
    ns = f"bench-steady-{secrets.token_hex(3)}"
    kube.create_namespace(ns)
    op = Operator(binary, env, ns, logdir)
    watch = Watch(kube, ns)
    counts = {g: seeded.in_group(g) for g in range(args.groups)}  # (users, without MFA)
    names = [f"team-{g:02d}" for g in range(args.groups)]
    proxy.take()
    t0 = time.monotonic()
    for g, name in enumerate(names):
        kube.create_enrollment(ns, name, {"mode": "Enroll", "users": {"groups": [group_name(g)]},
                                          "device": {"path": DEVICE_PATH}, "resyncInterval": f"{args.resync}s"})

    def all_complete(objs):
        return all(complete(objs.get(n), counts[g][0], counts[g][1], counts[g][0] - counts[g][1])
                   for g, n in enumerate(names))
    converged = watch.wait(all_complete, args.timeout, f"{args.groups} enrollments to complete") - t0
    converge_calls = proxy.take()
    if kube.seed_secrets(ns) != len(without):
        sys.exit(f"{kube.seed_secrets(ns)} seed Secrets for {len(without)} pending users")
    if wrong := iam_disagrees(moto, seeded, pending=True):
        sys.exit(f"FAILED: the status disagrees with IAM: {'; '.join(wrong)}")
    log(f"steady: {args.groups} enrollments complete in {converged:.2f} s; observing {args.window} s")

    # Nothing changes from here on: observe whole resync intervals.
    slices = []
    reconciles0 = op.metric("mfa_operator_reconcile_duration_seconds_count")
    modified0 = watch.modified
    changes0 = len(watch.changes)
    proxy.take()
    cpu0, t_start = op.cpu_seconds(), time.monotonic()
    total_calls = Counter()
    rss_samples = []
    cpu_prev = cpu0
    for k in range(1, args.window // args.resync + 1):
        cut = t_start + k * args.resync
        while (left := cut - time.monotonic()) > 0:
            time.sleep(min(5.0, left))
            rss_samples.append(op.memory_kib()[0])
        calls = proxy.take()
        total_calls.update(calls)
        cpu = op.cpu_seconds()
        slices.append((sum(calls.values()), cpu - cpu_prev, calls, op.memory_kib()[0]))
        cpu_prev = cpu
    observed = time.monotonic() - t_start
    cpu_total = op.cpu_seconds() - cpu0
    reconciles = op.metric("mfa_operator_reconcile_duration_seconds_count") - reconciles0
    errors = op.metric("mfa_operator_reconcile_errors_total")
    rss_now, hwm = op.memory_kib()
    with watch.cond:
        still_complete = all_complete(watch.latest)
        status_writes = watch.modified - modified0
        changes = watch.changes[changes0:]

    # A new enrollment over the whole account while the inventory is warm.
    proxy.take()
    t1 = time.monotonic()
    kube.create_enrollment(ns, "whole-account", whole_account("Report"))
    warm = watch.wait(lambda objs: complete(objs.get("whole-account"), users, 0, users - len(without)),
                      args.timeout, "the warm whole-account enrollment") - t1
    warm_calls = proxy.take()
    watch.close()

    for name in ["whole-account", *names]:
        kube.delete_enrollment(ns, name, args.timeout)
    proxy.take()
    op.stop()
    kube.delete_namespace(ns)
    return dict(converged=converged, converge_calls=converge_calls, slices=slices, observed=observed,
                cpu_total=cpu_total, reconciles=reconciles, errors=errors, rss_samples=rss_samples,
                rss_now=rss_now, hwm=hwm, total_calls=total_calls, still_complete=still_complete,
                status_writes=status_writes, changes=changes,
                warm=warm, warm_calls=warm_calls)


# ---------------------------------------------------------------- main

def mib(kib):
    return kib / 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=5000, help="IAM users in the account (default 5000)")
    ap.add_argument("--groups", type=int, default=10, help="groups = enrollments in part 2 (default 10)")
    ap.add_argument("--runs", type=int, default=3, help="runs per mode in part 1 (default 3)")
    ap.add_argument("--resync", type=int, default=60, help="resyncInterval of part 2, seconds (default 60)")
    ap.add_argument("--window", type=int, default=600, help="seconds of steady state observed (default 600)")
    ap.add_argument("--timeout", type=int, default=600, help="bound for every wait, seconds (default 600)")
    ap.add_argument("--skip-new", action="store_true", help="skip part 1")
    ap.add_argument("--skip-steady", action="store_true", help="skip part 2")
    ap.add_argument("--delay-ms", type=int, default=0,
                    help="delay of every IAM request at the test bed's IAM, ms, from after the seeding (default 0)")
    ap.add_argument("--binary", default=RELEASE_BINARY)
    args = ap.parse_args()
    if args.resync < 10 or args.window < args.resync:
        sys.exit("--resync must be at least 10 (the CRD's minimum) and --window at least --resync")
    if args.delay_ms < 0:
        sys.exit("--delay-ms must not be negative")
    moto = require_testbed(args.binary)
    run_with(os.environ["MFA_TESTBED_PYTHON"])  # the test bed's moto venv has boto3

    proxy = Proxy(moto)
    env = dict(os.environ, AWS_ENDPOINT_URL=proxy.url)
    env.pop("RUST_LOG", None)
    logdir = tempfile.mkdtemp(prefix="mfa-steady-state-")
    plain = set_latency(moto, 0).startswith("IAM latency: none")  # no delay while seeding; 0 again at exit
    kube = Kube()
    kube.apply_crd()

    print(f"machine: {machine()}")
    print(f"operator: {binary_version(args.binary)} ({args.binary}), `run --namespace NS`, release build")
    print(f"moto {moto} behind counting proxy {proxy.url}; operator logs in {logdir}")
    print(f"command: python3 benches/steady_state.py {' '.join(sys.argv[1:])}")
    if plain:
        print("IAM: plain moto (MFA_TESTBED_STRICT_IAM=0): one page per listing, codes not checked, no latency")
    else:
        print(f"IAM latency: {args.delay_ms} ms per IAM request (the test bed's strict IAM layer), from after "
              "the seeding; back to 0 at exit")
    print("NOTE: resets moto (POST /moto-api/reset) -- the test bed's IAM state is wiped.\n")

    reset_moto(moto)
    t = time.monotonic()
    seeded = seed(moto, args.users, groups=args.groups)
    users, without = args.users, seeded.without
    print(f"Seeded {users:,} users ({len(without):,} without MFA) in {args.groups} groups "
          f"in {time.monotonic() - t:.1f} s.\n")
    if args.delay_ms:
        set_latency(moto, args.delay_ms)

    if not args.skip_new:
        print(f"### A new MfaEnrollment over all {users:,} users until its status is complete\n")
        print("Fresh operator process per run (no inventory yet); timed from the create request until the watch "
              "delivers a status of this generation with every user counted and Ready=True (Enroll: every user "
              "without MFA Pending with a device and seed Secret). *First status*: until the watch delivers the "
              "first status with counts (progress).\n")
        print("| mode | runs | min | median | max | first status (median) | IAM calls per run (at the proxy) "
              "| peak RSS |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |")
        per_run = []
        for mode in ("Report", "Enroll"):
            times, firsts, calls, hwms, requests = [], [], [], [], []
            for r in range(args.runs):
                log(f"new enrollment: {mode} run {r + 1}/{args.runs}")
                secs, first, c, hwm, req = new_enrollment(kube, proxy, moto, args.binary, env, logdir, mode, seeded,
                                                          args.timeout)
                requests.append(req)
                times.append(secs)
                firsts.append(first)
                calls.append(c)
                hwms.append(hwm)
            varied = "" if all(c == calls[0] for c in calls) else f" (runs varied: {[sum(c.values()) for c in calls]})"
            print(f"| {mode} | {args.runs} | {min_med_max(times, '{:.2f} s')} | {statistics.median(firsts):.2f} s | "
                  f"{fmt_calls(calls[0])}{varied} | {mib(max(hwms)):.1f} MiB |")
            per_run.append((mode, times, requests))
        print()
        for mode, times, requests in per_run:
            print(f"- {mode}, apiserver requests from the create request until complete, per run (all clients: "
                  f"the operator and this benchmark's create and watch; its `apiserver_request_total`): "
                  + "; ".join(f"{t:.2f} s: {fmt_calls(r)}" for t, r in zip(times, requests)))
        print()

    if args.skip_steady:
        return
    log("steady state")
    s = steady(kube, proxy, moto, args.binary, env, logdir, args, seeded)
    n = len(s["slices"])
    per_hour = 3600 / s["observed"]
    # One GetAccountSummary per refresh (GetAccountAuthorizationDetails is paged: the test
    # bed's strict IAM layer answers 1,000 users per page, as AWS does at most).
    refreshes = s["total_calls"].get("GetAccountSummary", 0)
    writes = {a: s["total_calls"][a] for a in WRITE_ACTIONS if s["total_calls"].get(a)}
    print(f"### Steady state: {users:,} users in {args.groups} MfaEnrollments (Enroll, resyncInterval "
          f"{args.resync}s), nothing changing\n")
    print(f"All {args.groups} enrollments complete {s['converged']:.2f} s after they were created "
          f"(IAM calls until then: {fmt_calls(s['converge_calls'])}). Then {s['observed']:.0f} s observed, "
          f"in {n} slices of one resync interval:\n")
    print("| per resync interval | min | median | max |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| IAM calls (at the proxy) | {min_med_max([x[0] for x in s['slices']], '{:,}')} |")
    print(f"| operator CPU (user + system) | {min_med_max([x[1] for x in s['slices']], '{:.2f} s')} |")
    print(f"| operator RSS (sampled every 5 s) | {min_med_max([mib(k) for k in s['rss_samples']], '{:.1f} MiB')} |")
    print()
    print(f"- IAM calls in the window: {fmt_calls(s['total_calls'])}; **{sum(s['total_calls'].values()) * per_hour:,.0f} "
          f"per hour** at resyncInterval {args.resync}s.")
    print(f"- Inventory refreshes (one GetAccountSummary each): {refreshes} in {s['observed']:.0f} s, "
          f"{refreshes * per_hour:.0f} per hour for {args.groups} enrollments (one per resync interval would be "
          f"{3600 / args.resync:.0f}); {sum(s['total_calls'].values()) / max(refreshes, 1):,.0f} IAM calls per refresh.")
    print(f"- Writes to IAM in the window: {writes or 'none'}; reconciles: {s['reconciles']:.0f} "
          f"({s['reconciles'] * per_hour:,.0f} per hour); MfaEnrollment changes seen by a watch: "
          f"{s['status_writes']}; reconcile errors since start: {s['errors']:.0f}.")
    print(f"- Operator CPU: {s['cpu_total']:.2f} s in {s['observed']:.0f} s "
          f"({100 * s['cpu_total'] / s['observed']:.2f}% of one core).")
    print(f"- Operator memory: RSS {mib(s['rss_now']):.1f} MiB at the end; **peak RSS (VmHWM, whole life incl. "
          f"convergence) {mib(s['hwm']):.1f} MiB**.")
    print(f"- Operator RSS at the end of each slice: {', '.join(f'{mib(x[3]):.1f}' for x in s['slices'])} MiB.")
    for name, what in s["changes"]:
        print(f"- Status change seen during the window: {name}: {', '.join(what)}")
    print(f"- A new Report enrollment over all {users:,} users while the inventory is warm: complete in "
          f"{s['warm']:.2f} s with {fmt_calls(s['warm_calls'])} IAM calls.")
    print(f"- Checked against IAM after convergence (every page of ListVirtualMFADevices, past the proxy): "
          f"{users - len(without):,} users with an assigned device, {len(without):,} pending devices under "
          f"`{DEVICE_PATH}`, as the status says.")
    failures = []
    if not s["still_complete"] or writes or s["status_writes"]:
        failures.append("something changed during the steady-state window")
    if s["errors"]:
        failures.append(f"{s['errors']:.0f} reconcile errors since the operator started "
                        "(mfa_operator_reconcile_errors_total)")
    if refreshes > n:
        failures.append(f"{refreshes} inventory refreshes in {n} resync intervals")
    if failures:
        sys.exit("FAILED: " + "; ".join(failures))


if __name__ == "__main__":
    main()
