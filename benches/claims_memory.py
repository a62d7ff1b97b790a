#!/usr/bin/env python3
"""Operator memory while a tenant floods a watched namespace with look-alike seed Secrets.

The operator keeps its claims (which MfaEnrollment holds which pending device) by listing
every Secret labelled `app.kubernetes.io/managed-by=mfa-operator` in the watched
namespaces, as metadata only, 500 per page, once per inventory refresh; it also watches
those Secrets (metadata only) as a reconcile trigger. Anyone who may create Secrets in a
watched namespace can create thousands with that label. This program measures whether the
operator's resident memory stays bounded when that happens.

Does NOT reset moto and touches no other namespace (the test bed may be shared with tests
running at the same time): it makes two fresh namespaces (one watched, one for the
operator's integrity key), IAM users and devices under a path of its own, and removes all
of them at the end, also on failure.

1. The release `mfa-operator run --namespace NS` (IAM through a counting proxy in front of
   moto), U IAM users (default 50) without MFA under /claims-bench-<id>/, an Enroll
   MfaEnrollment `team` over them (resyncInterval --resync, default 10s) and a Report
   MfaEnrollment `decoy` that selects nobody; waits until `team` is Ready with U pending
   devices and U seed Secrets.
2. Baseline: operator RSS (/proc/PID/status VmRSS, every 0.5 s) for --baseline seconds.
3. As the tenant (the test bed's unprivileged `testbed-user`, given a Role that lets it
   create Secrets in NS and nothing else), N look-alike Secrets (--secrets, default 5000)
   created in parallel: the operator's labels, an ownerReference to `decoy`, the
   operator's annotations claiming the real pending devices' serial numbers with a forged
   integrity tag, a junk annotation of --annotation-bytes and junk data of --data-bytes.
   The enrollment label names no enrollment (--label absent, the default), `decoy`
   (--label decoy: its reconciles then read every look-alike in full) or `team`
   (--label target: `team` reads them in full and deletes them as tampered).
4. After: RSS again for --after seconds. Per window: inventory refreshes (the operator's
   `inventory refreshed` debug lines), reconciles, IAM calls at the proxy, CPU, RSS median
   and max, and VmHWM (peak RSS over the process life).
5. Checks: `team` stays Ready with U pending users throughout (polled every 2 s), no user
   is ever "held by" another enrollment (the look-alikes never count as claims), the U
   seed Secrets are still there, no reconcile error.

Usage (needs the test bed):
  eval "$(tests/testbed/testbed env)"
  cargo build --release --bin mfa-operator
  python3 benches/claims_memory.py [--secrets 5000] [--users 50] [--baseline 40] [--after 60]
"""

import argparse
import base64
import concurrent.futures
import http.client
import json
import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import RELEASE_BINARY, Proxy, binary_version, fmt_calls, machine, require_testbed, run_with  # noqa: E402
from steady_state import GROUP, PLURAL, VERSION, Kube, Operator, complete, log  # noqa: E402

MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_ENROLLMENT = "iam.mfa-operator.dev/enrollment"
SEED_TYPE = "iam.mfa-operator.dev/mfa-seed"
ANNOTATION = "iam.mfa-operator.dev/"
META_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
# info for everything, debug only for the reconcile module: its `inventory refreshed` line.
LOG_FILTER = "info,mfa_operator::controller::reconcile=debug"
TENANT = "testbed-user"


def mib(kib):
    return kib / 1024


# ---------------------------------------------------------------- Kubernetes helpers

class Client(Kube):
    """steady_state's Kube with a choice of token (admin or the tenant), a few more calls, and
    retries while the apiserver cannot be reached (tests sharing the bed may restart it)."""

    unreachable = 0  # calls retried because the apiserver could not be reached

    def __init__(self, token=None):
        super().__init__()
        if token:
            self.headers = dict(self.headers, Authorization=f"Bearer {token}")

    def call(self, *a, **kw):
        deadline = time.monotonic() + 120
        while True:
            try:
                return super().call(*a, **kw)
            except (ConnectionError, TimeoutError, http.client.RemoteDisconnected):
                if time.monotonic() > deadline:
                    raise
                Client.unreachable += 1
                time.sleep(1)

    def meta_list(self, ns, selector):
        """Every matching Secret of `ns`, as metadata only, page by page (no seed read)."""
        items, cont = [], ""
        while True:
            q = urllib.parse.urlencode({"labelSelector": selector, "limit": 500, "continue": cont})
            c = self.conn()
            c.request("GET", f"/api/v1/namespaces/{ns}/secrets?{q}", headers=dict(self.headers, Accept=META_LIST))
            r = c.getresponse()
            raw = r.read()
            c.close()
            if r.status != 200:
                raise RuntimeError(f"list Secrets in {ns}: HTTP {r.status}: {raw[:300]!r}")
            page = json.loads(raw)
            items += page["items"]
            cont = page["metadata"].get("continue") or ""
            if not cont:
                return items

    def list_bytes(self, ns, selector, limit=None, meta=False):
        """Sizes (bytes) of the response pages of a Secret LIST, read and dropped (never kept
        or printed): what the operator's own LIST with these parameters receives."""
        sizes, cont = [], ""
        while True:
            q = {"labelSelector": selector}
            if limit:
                q.update(limit=limit, **({"continue": cont} if cont else {}))
            c = self.conn(timeout=300)
            c.request("GET", f"/api/v1/namespaces/{ns}/secrets?{urllib.parse.urlencode(q)}",
                      headers=dict(self.headers, Accept=META_LIST if meta else "application/json"))
            r = c.getresponse()
            raw = r.read()
            c.close()
            if r.status != 200:
                raise RuntimeError(f"list Secrets in {ns}: HTTP {r.status}")
            sizes.append(len(raw))
            cont = json.loads(raw)["metadata"].get("continue") if limit else None
            del raw
            if not cont:
                return sizes

    def enrollment(self, ns, name):
        return self.call("GET", f"{self.enrollments(ns)}/{name}", ok=(200, 404))

    def crd_established(self):
        crd = self.call("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{PLURAL}.{GROUP}",
                        ok=(200, 404))
        return crd is not None and any(c["type"] == "Established" and c["status"] == "True"
                                       for c in crd.get("status", {}).get("conditions", []))


def ready(obj):
    st = (obj or {}).get("status") or {}
    return any(c["type"] == "Ready" and c["status"] == "True" for c in st.get("conditions", []))


def held_by(obj):
    """Users whose status says another enrollment holds their pending device."""
    return [u["name"] for u in ((obj or {}).get("status") or {}).get("users", [])
            if "held by" in (u.get("message") or "")]


def wait_until(what, timeout, predicate, every=0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            sys.exit(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


# ---------------------------------------------------------------- sampling

class Sampler:
    """A thread sampling the operator's RSS every `every` s, and every 2 s `team`'s status."""

    def __init__(self, op, kube, ns, users, every=0.5):
        self.op, self.kube, self.ns, self.users, self.every = op, kube, ns, users, every
        self.lock = threading.Lock()
        self.rss = []          # (monotonic time, VmRSS KiB)
        self.checks = []       # (monotonic time, ready and complete, users held by others)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        last_check = 0.0
        while not self.stopped.is_set():
            now = time.monotonic()
            try:
                rss, _ = self.op.memory_kib()
            except (OSError, KeyError):
                return
            with self.lock:
                self.rss.append((now, rss))
            if now - last_check >= 2.0:
                last_check = now
                try:
                    # no retries here: an unreachable apiserver is counted as "not read"
                    obj = Kube.call(self.kube, "GET", f"{self.kube.enrollments(self.ns)}/team", ok=(200, 404))
                    ok, held = complete(obj, self.users, self.users, 0), held_by(obj)
                except Exception:  # noqa: BLE001 -- an apiserver hiccup is counted, not fatal
                    ok, held = None, []
                with self.lock:
                    self.checks.append((now, ok, held))
            self.stopped.wait(self.every)

    def between(self, t0, t1):
        with self.lock:
            return ([kib for t, kib in self.rss if t0 <= t < t1],
                    [(ok, held) for t, ok, held in self.checks if t0 <= t < t1])

    def every_10s(self, t0):
        """The last RSS sample of every 10 s from t0."""
        out = {}
        with self.lock:
            for t, kib in self.rss:
                if t >= t0:
                    out[int((t - t0) // 10)] = kib
        return [out[k] for k in sorted(out)]

    def stop(self):
        self.stopped.set()
        self.thread.join(5)


class Window:
    """One observation window: start/end marks of time, CPU, refresh log lines, metrics, calls."""

    def __init__(self, name, op, proxy):
        self.name, self.op, self.proxy = name, op, proxy
        proxy.take()
        self.t0 = time.monotonic()
        self.cpu0 = op.cpu_seconds()
        self.refresh0 = len(refreshes(op))
        self.reconciles0 = op.metric("mfa_operator_reconcile_duration_seconds_count")

    def close(self, sampler):
        self.t1 = time.monotonic()
        self.cpu = self.op.cpu_seconds() - self.cpu0
        self.refreshes = refreshes(self.op)[self.refresh0:]
        self.reconciles = self.op.metric("mfa_operator_reconcile_duration_seconds_count") - self.reconciles0
        self.calls = self.proxy.take()
        self.hwm = self.op.memory_kib()[1]
        self.rss, self.checks = sampler.between(self.t0, self.t1)
        return self

    def row(self):
        secs = self.t1 - self.t0
        users = sorted({f.get("users") for f in self.refreshes if f.get("users") is not None})
        acct = f" ({users[0]:,}" + (f"-{users[-1]:,}" if len(users) > 1 else "") + " users)" if users else ""
        rss = (f"{mib(statistics.median(self.rss)):.1f} MiB | {mib(max(self.rss)):.1f} MiB"
               if self.rss else "- | -")
        return (f"| {self.name} | {secs:.1f} s | {len(self.refreshes)}{acct} | {self.reconciles:.0f} | "
                f"{sum(self.calls.values()):,} | {self.cpu:.2f} s | {rss} | {mib(self.hwm):.1f} MiB |")


def refreshes(op):
    """Fields of every `inventory refreshed` line the operator logged so far."""
    out = []
    with open(op.logpath) as f:
        for line in f:
            if "inventory refreshed" not in line:
                continue
            try:
                fields = json.loads(line)
            except ValueError:
                continue
            fields = fields.get("fields", fields)
            if fields.get("message") == "inventory refreshed":
                out.append(fields)
    return out


# ---------------------------------------------------------------- look-alikes

def lookalike(i, label, owner_uid, victims, annotation_bytes, data_bytes, now):
    """One forged seed Secret: the operator's labels and annotations, a forged tag, junk."""
    user, serial = victims[i % len(victims)]
    junk = base64.b64encode(os.urandom(annotation_bytes * 3 // 4 + 3)).decode()[:annotation_bytes]
    return {
        "apiVersion": "v1", "kind": "Secret", "type": SEED_TYPE,
        "metadata": {
            "name": f"mfa-seed-lookalike-{i:06d}",
            "labels": {MANAGED_BY: "mfa-operator", LABEL_ENROLLMENT: label},
            "annotations": {
                ANNOTATION + "user-name": user,
                ANNOTATION + "serial-number": serial,
                ANNOTATION + "created-at": now,
                ANNOTATION + "content-digest": secrets.token_hex(32),
                ANNOTATION + "integrity": secrets.token_hex(32),  # forged: random, never verifies
                "tenant.example.com/junk": junk,
            },
            "ownerReferences": [{"apiVersion": f"{GROUP}/{VERSION}", "kind": "MfaEnrollment", "name": "decoy",
                                 "uid": owner_uid, "controller": True}],
        },
        "data": {
            "seed": base64.b64encode(base64.b32encode(os.urandom(20))).decode(),  # random, not a real seed
            "qr.png": base64.b64encode(os.urandom(data_bytes)).decode(),
        },
    }


def create_lookalikes(tenant, ns, bodies, workers):
    """POSTs every body as the tenant, `workers` at a time (one kept-alive connection per
    thread). Returns (seconds, failures by HTTP status)."""
    local = threading.local()
    path = f"/api/v1/namespaces/{ns}/secrets"
    headers = dict(tenant.headers, **{"Content-Type": "application/json"})

    def one(body):
        data = json.dumps(body).encode()
        for attempt in range(3):
            c = getattr(local, "conn", None) or tenant.conn()
            local.conn = c
            try:
                c.request("POST", path, body=data, headers=headers)
                r = c.getresponse()
                raw = r.read()
            except (http.client.HTTPException, OSError):
                c.close()
                local.conn = None
                if attempt == 2:
                    return "connection"
                continue
            if r.status == 201:
                return None
            if r.status == 429 or r.status >= 500:
                time.sleep(0.2 * (attempt + 1))
                continue
            return f"HTTP {r.status}: {raw[:200].decode(errors='replace')}"
        return f"HTTP {r.status} (after retries)"

    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(workers) as ex:
        results = list(ex.map(one, bodies))
    return time.monotonic() - t0, Counter(r for r in results if r)


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--secrets", type=int, default=5000, help="look-alike Secrets the tenant creates (default 5000)")
    ap.add_argument("--users", type=int, default=50, help="IAM users enrolled, all pending (default 50)")
    ap.add_argument("--resync", type=int, default=10, help="resyncInterval of `team`, seconds (default 10, the minimum)")
    ap.add_argument("--baseline", type=int, default=40, help="seconds observed before the look-alikes (default 40)")
    ap.add_argument("--after", type=int, default=60, help="seconds observed after they exist (default 60)")
    ap.add_argument("--label", choices=("absent", "decoy", "target"), default="absent",
                    help="the enrollment the look-alikes' label names (default absent: none)")
    ap.add_argument("--annotation-bytes", type=int, default=4096, help="junk annotation per Secret (default 4096)")
    ap.add_argument("--data-bytes", type=int, default=4096, help="junk data per Secret (default 4096)")
    ap.add_argument("--workers", type=int, default=16, help="parallel creates (default 16)")
    ap.add_argument("--timeout", type=int, default=300, help="bound for every wait, seconds (default 300)")
    ap.add_argument("--binary", default=RELEASE_BINARY)
    args = ap.parse_args()
    if args.resync < 10:
        sys.exit("--resync must be at least 10 (the CRD's minimum)")
    moto = require_testbed(args.binary)
    run_with(os.environ["MFA_TESTBED_PYTHON"])  # the test bed's moto venv has boto3
    import boto3

    tag = secrets.token_hex(3)
    ns, key_ns = f"claims-bench-{tag}", f"claims-bench-key-{tag}"
    path = f"/claims-bench-{tag}/"
    user_names = [f"claims-bench-{tag}-{i:03d}" for i in range(args.users)]
    label = {"absent": "payroll", "decoy": "decoy", "target": "team"}[args.label]

    proxy = Proxy(moto)
    env = dict(os.environ, AWS_ENDPOINT_URL=proxy.url, MFA_OPERATOR_INTEGRITY_KEY_NAMESPACE=key_ns)
    for k in ("RUST_LOG", "MFA_OPERATOR_LOG", "MFA_OPERATOR_LOG_FORMAT", "MFA_OPERATOR_NAMESPACE"):
        env.pop(k, None)
    logdir = tempfile.mkdtemp(prefix="mfa-claims-memory-")
    kube = Client()
    tenant = Client(os.environ["MFA_TESTBED_USER_TOKEN"])
    iam = boto3.client("iam", endpoint_url=moto)  # directly, not through the counting proxy

    print(f"machine: {machine()}")
    print(f"operator: {binary_version(args.binary)} ({args.binary}), `run --namespace {ns} --metrics-address "
          f"127.0.0.1:0 --log-format json --log {LOG_FILTER}`"
          f"{', release build' if '/release/' in args.binary else ''}")
    print(f"test bed: apiserver {os.environ['MFA_TESTBED_APISERVER']}, moto {moto} behind counting proxy "
          f"{proxy.url} (shared: moto not reset, other tests may run); operator log in {logdir}")
    arenas = f"MALLOC_ARENA_MAX={os.environ['MALLOC_ARENA_MAX']} " if os.environ.get("MALLOC_ARENA_MAX") else ""
    print(f"command: {arenas}python3 benches/claims_memory.py {' '.join(sys.argv[1:])}\n")

    if not kube.crd_established():
        sys.exit("the MfaEnrollment CRD is not installed on the test bed (kubectl apply --server-side -f crds/)")

    op = sampler = None
    made_users = []
    try:
        # ------------------------------------------------ set-up
        for n in (ns, key_ns):
            kube.create_namespace(n)
        kube.call("POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "tenant"},
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]}]})
        kube.call("POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "tenant"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "tenant"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": TENANT}]})
        for name in user_names:
            iam.create_user(UserName=name, Path=path)
            made_users.append(name)

        op = Operator(args.binary, env, ns, logdir, log=LOG_FILTER)
        t = time.monotonic()
        kube.create_enrollment(ns, "team", {"mode": "Enroll", "users": {"pathPrefix": path},
                                            "device": {"path": path}, "resyncInterval": f"{args.resync}s"})
        kube.create_enrollment(ns, "decoy", {"mode": "Report", "users": {"pathPrefix": f"/claims-bench-{tag}-nobody/"}})
        team = wait_until("`team` to be Ready with every user pending", args.timeout,
                          lambda: (o := kube.enrollment(ns, "team")) and complete(o, args.users, args.users, 0) and o)
        decoy = wait_until("`decoy` to be Ready", args.timeout,
                           lambda: (o := kube.enrollment(ns, "decoy")) and ready(o) and o)
        converged = time.monotonic() - t
        genuine = kube.meta_list(ns, f"{MANAGED_BY}=mfa-operator")
        if len(genuine) != args.users:
            sys.exit(f"{len(genuine)} seed Secrets for {args.users} pending users")
        victims = [(u["name"], u["serialNumber"]) for u in team["status"]["users"] if u.get("serialNumber")]
        if len(victims) != args.users:
            sys.exit(f"{len(victims)} serial numbers in status for {args.users} pending users")
        log(f"set-up: `team` Ready with {args.users} pending in {converged:.1f} s; baseline {args.baseline} s")

        # ------------------------------------------------ baseline
        sampler = Sampler(op, kube, ns, args.users)
        w_base = Window("baseline", op, proxy)
        time.sleep(args.baseline)
        w_base.close(sampler)

        # ------------------------------------------------ the tenant's look-alikes
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        bodies = [lookalike(i, label, decoy["metadata"]["uid"], victims, args.annotation_bytes, args.data_bytes, now)
                  for i in range(args.secrets)]
        body_bytes = statistics.median(len(json.dumps(b)) for b in bodies[:100]) if bodies else 0
        log(f"creating {args.secrets} look-alike Secrets as {TENANT}")
        w_create = Window("creating the look-alikes", op, proxy)
        create_secs, failures = create_lookalikes(tenant, ns, bodies, args.workers)
        w_create.close(sampler)
        del bodies
        if failures:
            sys.exit(f"the tenant's creates failed: {dict(failures)} (an admission policy that refuses look-alikes, "
                     "as the chart installs, makes this benchmark moot: run it on a bed without one)")
        log(f"created in {create_secs:.1f} s; observing {args.after} s")

        # ------------------------------------------------ after
        w_after = Window("after", op, proxy)
        time.sleep(args.after)
        w_after.close(sampler)
        sampler.stop()

        team = kube.enrollment(ns, "team")
        left = kube.meta_list(ns, f"{MANAGED_BY}=mfa-operator")
        forged_left = sum(1 for s in left if s["metadata"]["name"].startswith("mfa-seed-lookalike-"))
        genuine_left = len(left) - forged_left
        errors = op.metric("mfa_operator_reconcile_errors_total")
        checks = w_create.checks + w_after.checks
        unread = sum(1 for ok, _ in checks if ok is None)
        not_ready = sum(1 for ok, _ in checks if ok is False)
        held = sorted({u for _, h in checks for u in h})
        rss_now, hwm = op.memory_kib()
        # What the operator's LISTs of these Secrets receive (measured after the windows):
        # the claims (metadata, 500 a page, every refresh) and the reconcile of the
        # enrollment the label names (full Secrets, one response).
        claims_pages = kube.list_bytes(ns, f"{MANAGED_BY}=mfa-operator", limit=500, meta=True)
        full_list = (kube.list_bytes(ns, f"{MANAGED_BY}=mfa-operator,{LABEL_ENROLLMENT}={label}")[0]
                     if args.label != "absent" else None)

        # ------------------------------------------------ report
        base_med, after_med = statistics.median(w_base.rss), statistics.median(w_after.rss)
        print(f"### Operator memory under {args.secrets:,} look-alike Secrets (label names {args.label}: "
              f"`{LABEL_ENROLLMENT}: {label}`)\n")
        print(f"Set-up: namespace {ns}; {args.users} IAM users under {path}, all without MFA; `team` (Enroll, "
              f"resyncInterval {args.resync}s) Ready with {args.users} pending devices and seed Secrets "
              f"{converged:.1f} s after it was created; `decoy` (Report, selects nobody). The operator's inventory "
              f"covers the whole moto account, shared with other tests.\n")
        print(f"Look-alikes: {args.secrets:,} Secrets created as `{TENANT}` (a Role that may only create Secrets in "
              f"{ns}), {args.workers} at a time, in **{create_secs:.1f} s** ({args.secrets / max(create_secs, 1e-9):,.0f}/s); "
              f"each {body_bytes / 1024:.1f} KiB as JSON: the operator's labels, an ownerReference to `decoy`, the "
              f"operator's annotations claiming a real pending device with a forged tag, a {args.annotation_bytes:,}-byte "
              f"junk annotation, {args.data_bytes:,} bytes of junk data.\n")
        print("| window | length | inventory refreshes (account size) | reconciles | IAM calls | operator CPU | "
              "RSS median | RSS max (every 0.5 s) | peak RSS (VmHWM) at its end |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for w in (w_base, w_create, w_after):
            print(w.row())
        print()
        print(f"- **RSS after − baseline: {mib(after_med - base_med):+.1f} MiB (medians), "
              f"{mib(max(w_after.rss) - max(w_base.rss)):+.1f} MiB (maxima)**; VmHWM {mib(w_base.hwm):.1f} → "
              f"{mib(hwm):.1f} MiB; RSS at the end {mib(rss_now):.1f} MiB.")
        print(f"- RSS at the end of every 10 s from the start of the baseline: "
              f"{', '.join(f'{mib(k):.1f}' for k in sampler.every_10s(w_base.t0))} MiB "
              f"(look-alikes created from {w_create.t0 - w_base.t0:.0f} s to {w_create.t1 - w_base.t0:.0f} s).")
        print(f"- IAM calls after: {fmt_calls(w_after.calls)}.")
        print(f"- What the operator reads per inventory refresh for its claims (metadata LIST, 500 a page): "
              f"{len(claims_pages)} pages, {sum(claims_pages) / 2**20:.1f} MiB in all, the largest "
              f"{max(claims_pages) / 2**20:.1f} MiB." + (
                  f" What each reconcile of `{label}` reads (full LIST of its seed Secrets, one response): "
                  f"{full_list / 2**20:.1f} MiB at the end." if full_list is not None else ""))
        print(f"- `team` Ready with {args.users} pending in {len(checks) - not_ready - unread} of {len(checks)} status "
              f"checks (every 2 s from the first create to the end; {unread} not read); users shown held by another enrollment: "
              f"{', '.join(held) if held else 'none'}; reconcile errors since start: {errors:.0f}.")
        print(f"- Seed Secrets at the end: {genuine_left} of the operator's ({args.users} expected), "
              f"{forged_left:,} look-alikes still in place (of {args.secrets:,}).")
        if Client.unreachable:
            print(f"- The apiserver could not be reached for {Client.unreachable} of this program's calls "
                  "(retried every second; a test sharing the bed restarted it?).")
        failed = []
        if not_ready:
            failed.append(f"`team` not Ready/complete in {not_ready} checks")
        if held:
            failed.append("look-alikes counted as claims")
        if genuine_left != args.users:
            failed.append(f"{genuine_left} genuine seed Secrets left")
        if not complete(team, args.users, args.users, 0):
            failed.append("`team` incomplete at the end")
        if failed:
            sys.exit("FAILED: " + "; ".join(failed))
    finally:
        if sampler:
            sampler.stop()
        cleanup(kube, iam, op, ns, key_ns, path, made_users)


def cleanup(kube, iam, op, ns, key_ns, path, users):
    """Removes everything this run made; best effort, each step on its own."""
    log("cleaning up")

    def step(what, fn):
        try:
            fn()
        except (Exception, SystemExit) as e:  # noqa: BLE001 -- clean up the rest regardless
            log(f"cleanup: {what}: {e}")

    for name in ("team", "decoy"):
        step(f"delete enrollment {name}", lambda name=name: kube.call(
            "DELETE", f"{kube.enrollments(ns)}/{name}", ok=(200, 202, 404)))
    alive = op is not None and op.proc.poll() is None
    deadline = time.monotonic() + (120 if alive else 0)
    def gone(name):
        try:
            return kube.enrollment(ns, name) is None
        except Exception:  # noqa: BLE001
            return False

    for name in ("team", "decoy"):
        while not gone(name) and time.monotonic() < deadline:
            time.sleep(0.5)
        if not gone(name):  # the operator could not finish: drop the finalizer, delete again
            step(f"drop finalizer of {name}", lambda name=name: kube.call(
                "PATCH", f"{kube.enrollments(ns)}/{name}", {"metadata": {"finalizers": None}},
                content_type="application/merge-patch+json"))
            step(f"delete enrollment {name}", lambda name=name: kube.call(
                "DELETE", f"{kube.enrollments(ns)}/{name}", ok=(200, 202, 404)))
    if op is not None and op.proc.poll() is None:
        step("stop the operator", op.stop)
    for n in (ns, key_ns):
        step(f"delete Secrets in {n}", lambda n=n: kube.call("DELETE", f"/api/v1/namespaces/{n}/secrets",
                                                               ok=(200, 202, 404)))
        step(f"delete Events in {n}", lambda n=n: kube.call("DELETE", f"/apis/events.k8s.io/v1/namespaces/{n}/events",
                                                              ok=(200, 202, 404)))
    for kind in ("rolebindings", "roles"):
        step(f"delete {kind}", lambda kind=kind: kube.call(
            "DELETE", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/{kind}/tenant", ok=(200, 202, 404)))
    for n in (ns, key_ns):
        step(f"delete namespace {n}", lambda n=n: kube.delete_namespace(n))

    def iam_cleanup():
        # pending devices the operator could not remove (only under this run's path)
        for page in iam.get_paginator("list_virtual_mfa_devices").paginate(AssignmentStatus="Any"):
            for d in page["VirtualMFADevices"]:
                if f":mfa{path}" in d["SerialNumber"]:
                    if d.get("User"):
                        step("deactivate device", lambda d=d: iam.deactivate_mfa_device(
                            UserName=d["User"]["UserName"], SerialNumber=d["SerialNumber"]))
                    step("delete device", lambda d=d: iam.delete_virtual_mfa_device(SerialNumber=d["SerialNumber"]))
        for name in users:
            step(f"delete user {name}", lambda name=name: iam.delete_user(UserName=name))
    step("IAM", iam_cleanup)


if __name__ == "__main__":
    main()
