#!/usr/bin/env python3
"""Issue 11's benchmarks of self-service enrollment (`delivery: Link`), browserless: the
release `mfa-operator run` binary with its enrollment page on a loopback port, link mails
over plain SMTP (loopback) to the test bed's mailpit, moto behind the strict IAM layer
(every IAM call counted at a reverse proxy in front of it), the real apiserver.

Per run (THIS RESETS THE TEST BED'S MOTO AND DELETES EVERY MESSAGE IN ITS MAILPIT: use a
test bed of your own): a fresh account with --samples users under /ss-lat/ and --openings
users under /ss-open/, none with MFA, each with an `email` tag of its own (seeded with no
IAM delay); then IAM answers every request --delay-ms late until the end of the run. A
fresh namespace and operator process (`--enrollment-address 127.0.0.1:PORT --public-url
http://127.0.0.1:PORT`, SMTP plain to mailpit). Two MfaEnrollments, `mode: Enroll,
delivery: Link` (channel Email): `latency` over /ss-lat/ and `openings` over /ss-open/.
Timed until every link mail is in mailpit; the links are read from the mails.

Part 1, 1,000 concurrent link openings (--openings): the operator's RSS (VmRSS from
/proc/PID/status) sampled every 0.5 s for --settle seconds with nothing happening (the
steady-state figure: the median of those samples); then one thread per link connects
from a loopback source address of its own (127.2.x.y: the page's per-client rate limit,
60 then 30/min, applies per address, and it has no flag to raise it), all wait at a
barrier, and every thread sends `GET /enroll/{id}/{token}` of a distinct valid link at
once; RSS is sampled every 20 ms meanwhile; then again every 0.5 s for --settle seconds.
Opening a link creates nothing, so these links stay valid (checked in IAM: no device for
any /ss-open/ user).

Part 2, one person after another over the --samples /ss-lat/ links, each from a source
address of its own (127.1.x.y): `GET` of the link (keeps the cookie, takes the form's
`csrf` field), `POST .../start` (creates the device; the page shows the secret key),
the previous and the current 30 s TOTP code computed from that key (RFC 6238, as a phone
shows them), `POST .../codes`. Times to first byte (request written on an open
connection -> status line and headers read) of the GET, the start and the codes POST;
and codes -> Compliant: from just before the codes POST is written until a long-lived
watch on the namespace's MfaEnrollments (no polling) shows the user Compliant in
`latency`'s status.

Checks (the run exits non-zero when one fails): every /ss-lat/ user Compliant in status;
IAM (ListMFADevices per user, asked directly at moto) shows exactly one device for each
of them and ListVirtualMFADevices no other device; no /ss-open/ user has a device; no
Secret of the cluster holds any seed the page showed, checked while a setup is open
(halfway through part 2) and at the end; every opening answered 200.

Usage (needs the test bed; run it alone, on a bed of your own):
  tests/testbed/testbed up && eval "$(tests/testbed/testbed env)"
  cargo build --release --bin mfa-operator
  python3 benches/self_service.py [--delay-ms 0] [--samples 100] [--openings 1000] [--settle 20]
"""

import argparse
import base64
import concurrent.futures
import http.client
import json
import os
import re
import resource
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (RELEASE_BINARY, Proxy, binary_version, fmt_calls, machine, percentile,  # noqa: E402
                      require_testbed, reset_moto, run_with, set_latency, totp)
from steady_state import RUNNING, Kube, Operator, Watch, log  # noqa: E402

LAT, OPEN = "latency", "openings"
LAT_PATH, OPEN_PATH = "/ss-lat/", "/ss-open/"
DEVICE_PATH = "/mfa-operator-bench/"
MAIL_DOMAIN = "bench.example.com"
COOKIE = "mfa-enroll"  # the page's cookie over http (src/enroll_page/csrf.rs)
GOAL_RSS_MIB = 20.0


# ---------------------------------------------------------------- the operator with its page

class PageOperator(Operator):
    """steady_state.Operator with the page's flags and SMTP settings added."""

    def __init__(self, binary, env, ns, logdir, page_port, smtp, log="info"):
        self.logpath = os.path.join(logdir, f"operator-{ns}-{int(time.time() * 1000)}.log")
        self.logfile = open(self.logpath, "w")
        host, port = smtp.rsplit(":", 1)
        env = dict(env, MFA_OPERATOR_SMTP_HOST=host, MFA_OPERATOR_SMTP_PORT=port,
                   MFA_OPERATOR_SMTP_SECURITY="plain",
                   MFA_OPERATOR_SMTP_FROM=f"MFA enrollment <mfa-operator@{MAIL_DOMAIN}>")
        self.public_url = f"http://127.0.0.1:{page_port}"
        self.proc = subprocess.Popen(
            [binary, "run", "--namespace", ns, "--metrics-address", "127.0.0.1:0",
             "--enrollment-address", f"127.0.0.1:{page_port}", "--public-url", self.public_url,
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

    def rss_mib(self):
        return self.memory_kib()[0] / 1024


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---------------------------------------------------------------- IAM and mail

def iam_client(endpoint):
    import boto3
    from botocore.config import Config
    return boto3.client("iam", endpoint_url=endpoint,
                        config=Config(max_pool_connections=16, retries={"max_attempts": 10, "mode": "standard"}))


def address_of(user):
    return f"{user}@{MAIL_DOMAIN}"


def seed_users(moto, names, path):
    iam = iam_client(moto)
    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        list(ex.map(lambda n: iam.create_user(UserName=n, Path=path,
                                              Tags=[{"Key": "email", "Value": address_of(n)}]), names))


class Mailpit:
    def __init__(self, api):
        u = urllib.parse.urlsplit(api)
        self.host, self.port = u.hostname, u.port

    def call(self, method, path, body=None):
        c = http.client.HTTPConnection(self.host, self.port, timeout=30)
        c.request(method, path, body=None if body is None else json.dumps(body).encode(),
                  headers={"Content-Type": "application/json"} if body is not None else {})
        r = c.getresponse()
        raw = r.read()
        c.close()
        if r.status != 200:
            raise RuntimeError(f"mailpit {method} {path}: HTTP {r.status} {raw[:200]!r}")
        return json.loads(raw) if raw.strip().startswith((b"{", b"[")) else raw

    def count(self):
        return self.call("GET", "/api/v1/messages?limit=1")["messages_count"]

    def delete_all(self):
        self.call("DELETE", "/api/v1/messages", {})

    def summaries(self):
        out, start = [], 0
        while True:
            page = self.call("GET", f"/api/v1/messages?limit=500&start={start}")
            out += page["messages"]
            start += len(page["messages"])
            if not page["messages"] or start >= page["messages_count"]:
                return out

    def links(self, public_url):
        """{recipient address: [links to the page in its mails]}."""
        pattern = re.compile(re.escape(public_url) + r"/enroll/[A-Za-z0-9_-]+/[A-Za-z0-9_-]+")
        summaries = self.summaries()

        def one(m):
            text = self.call("GET", f"/api/v1/message/{m['ID']}")["Text"]
            return [t["Address"].lower() for t in m["To"]], pattern.findall(text)

        out = {}
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            for tos, found in ex.map(one, summaries):
                for to in tos:
                    out.setdefault(to, []).extend(found)
        return out


# ---------------------------------------------------------------- one person, browserless

def source(net, i):
    """A loopback source address of its own for client i (127.NET.x.y, y in 1..250)."""
    return f"127.{net}.{i // 250}.{1 + i % 250}"


def exchange(conn, method, path, headers, body=None):
    """(time to first byte, status, headers, body) of one request on an open connection."""
    t = time.monotonic()
    conn.request(method, path, body=body, headers=headers)
    r = conn.getresponse()
    ttfb = time.monotonic() - t
    data = r.read()
    return ttfb, r.status, r, data.decode("utf-8", "replace")


def connect(port, src):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120, source_address=(src, 0))
    c.connect()
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return c


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def field(page, pattern, what):
    m = re.search(pattern, page)
    if not m:
        raise RuntimeError(f"no {what} on the page: {page[:300]!r}")
    return m.group(1)


# ---------------------------------------------------------------- no seed at rest

def secrets_holding(kube, seeds):
    """Names of the Secrets (cluster-wide) whose data or annotations hold one of `seeds`,
    and how many Secrets were looked at."""
    items = kube.call("GET", "/api/v1/secrets")["items"]
    hits = []
    for s in items:
        blobs = [base64.b64decode(v).decode("utf-8", "replace") for v in (s.get("data") or {}).values()]
        blobs += list((s["metadata"].get("annotations") or {}).values())
        blob = "\n".join(blobs)
        if "seed" in (s.get("data") or {}) or any(seed in blob for seed in seeds):
            hits.append(f"{s['metadata']['namespace']}/{s['metadata']['name']}")
    return hits, len(items)


# ---------------------------------------------------------------- the run

class Compliance:
    """Watch listener: when each submitted user is first seen Compliant in `latency`."""

    def __init__(self):
        self.written, self.seen = {}, {}
        self.current = None  # the user whose codes go next

    def __call__(self, name, obj, arrived):
        if name != LAT:
            return
        for u in (obj.get("status") or {}).get("users", []):
            if u["name"] in self.written and u["name"] not in self.seen and u["state"] == "Compliant":
                self.seen[u["name"]] = arrived


def links_sent(obj, n):
    st = (obj or {}).get("status") or {}
    users = st.get("users", [])
    return len(users) == n and all(u.get("linkSentAt") for u in users)


def sample_rss(op, stop, every, out):
    while not stop.is_set():
        try:
            out.append((time.monotonic(), op.rss_mib()))
        except OSError:
            return
        stop.wait(every)


def openings(op, links, port, args):
    """Part 1: RSS before, during and after len(links) concurrent GETs of distinct links."""
    log(f"part 1: RSS for {args.settle} s before the openings")
    before = []
    t_end = time.monotonic() + args.settle
    while time.monotonic() < t_end:
        before.append((time.monotonic(), op.rss_mib()))
        time.sleep(0.5)
    hwm_before = op.memory_kib()[1] / 1024

    n = len(links)
    barrier = threading.Barrier(n + 1)
    results = [None] * n

    def one(i, path):
        try:
            c = connect(port, source(2, i))
        except OSError as e:
            results[i] = ("connect", str(e), None)
            barrier.wait()
            return
        try:
            barrier.wait()
            t0 = time.monotonic()
            ttfb, status, _, body = exchange(c, "GET", path, {})
            results[i] = (status, ttfb, time.monotonic() - t0, t0)
        except Exception as e:  # noqa: BLE001 (a failed opening is a result)
            results[i] = ("error", str(e), None)
        finally:
            c.close()

    threading.stack_size(256 * 1024)
    threads = [threading.Thread(target=one, args=(i, urllib.parse.urlsplit(link).path), daemon=True)
               for i, link in enumerate(links)]
    for th in threads:
        th.start()
    during = []
    stop = threading.Event()
    sampler = threading.Thread(target=sample_rss, args=(op, stop, 0.02, during), daemon=True)
    log(f"part 1: {n} connections open; all GETs at once")
    barrier.wait()
    t0 = time.monotonic()
    sampler.start()
    for th in threads:
        th.join(300)
    elapsed = time.monotonic() - t0
    # keep sampling 2 s past the last answer: freed memory may show late
    time.sleep(2)
    stop.set()
    sampler.join()
    threading.stack_size(0)
    log(f"part 1: {n} openings answered in {elapsed:.2f} s; RSS for {args.settle} s after")
    after = []
    t_end = time.monotonic() + args.settle
    while time.monotonic() < t_end:
        after.append((time.monotonic(), op.rss_mib()))
        time.sleep(0.5)
    hwm_after = op.memory_kib()[1] / 1024
    return dict(before=[r for _, r in before], during=[r for _, r in during], after=[r for _, r in after],
                hwm_before=hwm_before, hwm_after=hwm_after, results=results, elapsed=elapsed)


def person(port, link, i, comp, cond, kube, check_seeds_now):
    """Part 2 for one person. Returns a dict of times, and the seed shown."""
    path = urllib.parse.urlsplit(link).path
    c = connect(port, source(1, i))
    try:
        t_get, status, resp, page = exchange(c, "GET", path, {})
        if status != 200:
            raise RuntimeError(f"GET of the link answered {status}: {page[:300]!r}")
        cookie = next(v.split(";", 1)[0] for k, v in resp.getheaders() if k.lower() == "set-cookie"
                      and v.startswith(COOKIE + "="))
        csrf = field(page, r'name="csrf" value="([^"]+)"', "csrf field")
        action = field(page, r'<form method="post" action="([^"]+/start)"', "start form")
        headers = dict(FORM, Cookie=cookie)
        t_start, status, _, page = exchange(c, "POST", action, headers, f"csrf={urllib.parse.quote(csrf)}")
        if status != 200:
            raise RuntimeError(f"start answered {status}: {page[:300]!r}")
        seed = field(page, r'id="secret-key">([^<]+)</code>', "secret key").replace(" ", "")
        csrf = field(page, r'name="csrf" value="([^"]+)"', "csrf field")
        codes_action = field(page, r'<form method="post" action="([^"]+/codes)"', "codes form")
        seed_check = check_seeds_now(seed) if check_seeds_now else None
        now = time.time()
        body = urllib.parse.urlencode({"csrf": csrf, "code1": totp(seed, now - 30), "code2": totp(seed, now)})
        with cond:  # the caller set comp.current: the user whose mail held this link
            comp.written[comp.current] = time.monotonic()
        t_codes, status, _, page = exchange(c, "POST", codes_action, headers, body)
        if status != 200 or "MFA is set up" not in page:
            raise RuntimeError(f"codes answered {status}: {re.sub(r'<[^>]+>', ' ', page)[:400]!r}")
        return dict(get=t_get, start=t_start, codes=t_codes, seed=seed, seed_check=seed_check)
    finally:
        c.close()


def run(args):
    moto = require_testbed(args.binary)
    for var in ("MFA_TESTBED_SMTP", "MFA_TESTBED_MAILPIT_API"):
        if not os.environ.get(var):
            sys.exit(f"{var} unset: a test bed without mailpit (tests/testbed/testbed up adds it)")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if nofile < args.openings + 200:
        sys.exit(f"open files limit {nofile} too low for {args.openings} connections")

    proxy = Proxy(moto)
    env = dict(os.environ, AWS_ENDPOINT_URL=proxy.url)
    env.pop("RUST_LOG", None)
    logdir = tempfile.mkdtemp(prefix="mfa-self-service-")
    latency = set_latency(moto, args.delay_ms)
    set_latency(moto, 0)
    kube = Kube()
    kube.apply_crd()
    mail = Mailpit(os.environ["MFA_TESTBED_MAILPIT_API"])

    print(f"machine: {machine()}; load average at start {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          "(2 cores shared with other sessions' builds and tests)")
    print(f"operator: {binary_version(args.binary)} ({args.binary}), release build, `run --namespace NS "
          f"--enrollment-address 127.0.0.1:PORT --public-url http://127.0.0.1:PORT`, SMTP plain to mailpit "
          f"{os.environ['MFA_TESTBED_SMTP']}; open files limit {nofile}")
    print(f"moto {moto} behind counting proxy {proxy.url}; operator logs in {logdir}")
    print(f"command: python3 benches/self_service.py {' '.join(sys.argv[1:])}")
    print(f"{latency}; no delay while seeding and checking")
    print("NOTE: resets moto and deletes every mailpit message.\n")

    lat_users = [f"ss-lat-{i:04d}" for i in range(args.samples)]
    open_users = [f"ss-open-{i:04d}" for i in range(args.openings)]
    reset_moto(moto)
    mail.delete_all()
    t = time.monotonic()
    seed_users(moto, lat_users, LAT_PATH)
    seed_users(moto, open_users, OPEN_PATH)
    log(f"seeded {len(lat_users) + len(open_users)} users in {time.monotonic() - t:.1f} s")
    set_latency(moto, args.delay_ms)

    ns = f"bench-ss-{secrets.token_hex(3)}"
    kube.create_namespace(ns)
    port = free_port()
    op = PageOperator(args.binary, env, ns, logdir, port, os.environ["MFA_TESTBED_SMTP"], log=args.log)
    comp = Compliance()
    watch = Watch(kube, ns, listeners=[comp])

    # Links: both enrollments, until every mail is in mailpit.
    proxy.take()
    t0 = time.monotonic()
    spec = {"mode": "Enroll", "delivery": "Link", "link": {"channel": "Email"}, "device": {"path": DEVICE_PATH}}
    kube.create_enrollment(ns, LAT, dict(spec, users={"pathPrefix": LAT_PATH}))
    if open_users:
        kube.create_enrollment(ns, OPEN, dict(spec, users={"pathPrefix": OPEN_PATH}))
    want = len(lat_users) + len(open_users)
    deadline = t0 + args.timeout
    while (got := mail.count()) < want:
        if time.monotonic() > deadline:
            sys.exit(f"{got} of {want} link mails in mailpit after {args.timeout} s")
        time.sleep(0.2)
    mailed = time.monotonic() - t0
    watch.wait(lambda objs: links_sent(objs.get(LAT), len(lat_users)), args.timeout,
               f"linkSentAt for every user of {LAT}")
    status_links = time.monotonic() - t0
    mint_calls = proxy.take()
    links = mail.links(op.public_url)
    missing = [u for u in lat_users + open_users if len(links.get(address_of(u), [])) != 1]
    if missing:
        sys.exit(f"{len(missing)} users without exactly one link mail, e.g. {missing[:3]}: "
                 f"{[links.get(address_of(u)) for u in missing[:3]]}")
    log(f"{want} link mails in mailpit {mailed:.2f} s after the enrollments were created")

    # Part 1.
    opened = None
    if open_users:
        opened = openings(op, [links[address_of(u)][0] for u in open_users], port, args)

    # Part 2.
    proxy.take()
    samples, failures, seeds = [], [], []
    mid_check = None
    for i, user in enumerate(lat_users):
        with watch.cond:
            comp.current = user

        def check_now(seed, i=i):
            if i != len(lat_users) // 2:
                return None
            return secrets_holding(kube, seeds + [seed])

        try:
            s = person(port, links[address_of(user)][0], i, comp, watch.cond, kube, check_now)
        except Exception as e:  # noqa: BLE001 (reported, and fails the run)
            failures.append(f"{user}: {e}")
            log(f"part 2: {user}: {e}")
            continue
        seeds.append(s["seed"])
        if s["seed_check"] is not None:
            mid_check = s["seed_check"]
        with watch.cond:
            deadline = time.monotonic() + args.compliant_timeout
            while user not in comp.seen and time.monotonic() < deadline and not watch.error:
                watch.cond.wait(min(0.5, max(0.0, deadline - time.monotonic())))
            seen = comp.seen.get(user)
        if seen is None:
            failures.append(f"{user}: not Compliant within {args.compliant_timeout} s of the codes")
            continue
        s["compliant"] = seen - comp.written[user]
        samples.append(s)
        if (i + 1) % 20 == 0:
            log(f"part 2: {i + 1} of {len(lat_users)}")
    person_calls = proxy.take()

    # Checks, at no delay.
    set_latency(moto, 0)
    iam = iam_client(moto)
    bad_devices = []
    for user in lat_users:
        devices = iam.list_mfa_devices(UserName=user)["MFADevices"]
        if len(devices) != 1:
            bad_devices.append(f"{user}: {len(devices)} devices")
    assigned, unassigned = {}, []
    for status in ("Assigned", "Unassigned"):
        for pg in iam.get_paginator("list_virtual_mfa_devices").paginate(AssignmentStatus=status):
            for d in pg["VirtualMFADevices"]:
                (assigned.setdefault(d["User"]["UserName"], []).append(d["SerialNumber"])
                 if status == "Assigned" else unassigned.append(d["SerialNumber"]))
    strangers = sorted(set(assigned) - set(lat_users))
    multi = sorted(u for u, s in assigned.items() if len(s) != 1)
    with watch.cond:
        st = {u["name"]: u for u in ((watch.latest.get(LAT) or {}).get("status") or {}).get("users", [])}
    not_compliant = [u for u in lat_users if (st.get(u) or {}).get("state") != "Compliant"]
    end_check = secrets_holding(kube, seeds)
    ops_metrics = {line.split(" ")[0]: line.rsplit(" ", 1)[1] for line in op.get("/metrics")[1].splitlines()
                   if line.startswith(("mfa_operator_enroll", "mfa_operator_link", "mfa_operator_page"))
                   and "_bucket" not in line and not line.startswith("#")}
    rss_end = op.memory_kib()
    watch.close()
    for name in (OPEN, LAT) if open_users else (LAT,):
        kube.delete_enrollment(ns, name, args.timeout)
    op.stop()
    kube.delete_namespace(ns)

    # ------------------------------------------------------------ report
    print(f"### Self-service enrollment (delivery: Link), IAM at {args.delay_ms} ms per call\n")
    print(f"- Links: {len(lat_users)} users in `{LAT}` and {len(open_users)} in `{OPEN}` (one e-mail tag each); "
          f"every link mail in mailpit {mailed:.2f} s after the enrollments were created, every user of `{LAT}` "
          f"with `linkSentAt` in status at {status_links:.2f} s. IAM calls until then: {fmt_calls(mint_calls)}.")
    if opened:
        res = opened["results"]
        ok = [r for r in res if r and r[0] == 200]
        kinds = Counter(str(r[0]) if r else "none" for r in res)
        before_med = statistics.median(opened["before"])
        peak = max(opened["during"] + opened["after"])
        after_med = statistics.median(opened["after"])
        tt = sorted(r[1] for r in ok)
        whole = sorted(r[2] for r in ok)
        spread = (max(r[3] for r in ok) - min(r[3] for r in ok)) if ok else 0
        print(f"\n#### Part 1: {len(res)} concurrent link openings (one loopback source address each)\n")
        print("| RSS before (median, min-max over {0} s) | peak during (every 20 ms) | after (median over {0} s) "
              "| peak - before | VmHWM before -> after | answers | wall time of all | TTFB p50 | p99 | max |"
              .format(args.settle))
        print("| ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |")
        print(f"| {before_med:.1f} MiB ({min(opened['before']):.1f}-{max(opened['before']):.1f}) | {peak:.1f} MiB "
              f"| {after_med:.1f} MiB | **{peak - before_med:+.1f} MiB** | {opened['hwm_before']:.1f} -> "
              f"{opened['hwm_after']:.1f} MiB | {', '.join(f'{k}: {v}' for k, v in kinds.most_common())} "
              f"| {opened['elapsed']:.2f} s | "
              + (" | ".join(f"{1000 * x:.0f} ms" for x in (percentile(tt, 50), percentile(tt, 99), tt[-1]))
                 if tt else "- | - | -") + " |")
        print(f"\nRequests written within {1000 * spread:.0f} ms of one another. "
              f"Goal: peak no more than {GOAL_RSS_MIB:g} MiB above the steady state: "
              f"**{'met' if peak - before_med <= GOAL_RSS_MIB else 'not met'}**.")
        errs = [r for r in res if not r or r[0] != 200]
        if errs:
            print(f"Not 200: {Counter(str(r[:2]) for r in errs).most_common(3)}")

    print(f"\n#### Part 2: {len(lat_users)} people one after another\n")
    print("| step | samples | min | p50 | p90 | p99 | max | mean |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for key, label in (("get", "GET of the link, TTFB"), ("start", "POST start (creates the device), TTFB"),
                       ("codes", "POST codes (enables the device), TTFB"),
                       ("compliant", "**codes -> Compliant in status**")):
        v = sorted(s[key] for s in samples)
        if v:
            print(f"| {label} | {len(v)} | " + " | ".join(f"{1000 * x:.1f} ms" for x in (
                v[0], percentile(v, 50), percentile(v, 90), percentile(v, 99), v[-1], statistics.mean(v))) + " |")
    print(f"\n- IAM calls during part 2 (at the proxy, {len(samples)} people): {fmt_calls(person_calls)}.")
    print(f"- Operator at the end: VmRSS {rss_end[0] / 1024:.1f} MiB, VmHWM {rss_end[1] / 1024:.1f} MiB. "
          f"Page and link metrics: " + ", ".join(f"{k} {v}" for k, v in sorted(ops_metrics.items())))

    print("\nChecks:")
    failed = bool(failures)
    for f in failures[:10]:
        print(f"- FAILED: {f}")
    checks = [
        (not not_compliant, f"every user of `{LAT}` Compliant in status ({len(lat_users) - len(not_compliant)} "
                            f"of {len(lat_users)}{'; not: ' + ', '.join(not_compliant[:5]) if not_compliant else ''})"),
        (not bad_devices, "IAM ListMFADevices: exactly one device for each of them"
                          + (f" (not: {bad_devices[:5]})" if bad_devices else "")),
        (not strangers and not multi and not unassigned,
         f"IAM ListVirtualMFADevices: {sum(map(len, assigned.values()))} assigned, {len(unassigned)} unassigned; "
         f"users with another count than one: {multi[:5]}; devices of other users (no /ss-open/ user may have one, "
         f"opening creates nothing): {strangers[:5]}"),
        (mid_check is not None and not mid_check[0],
         f"no Secret holds a seed while a setup is open (person {len(lat_users) // 2 + 1}, {len(seeds) // 2 + 1} "
         f"seeds; {mid_check[1] if mid_check else '?'} Secrets cluster-wide)"
         + (f": {mid_check[0]}" if mid_check and mid_check[0] else "")),
        (not end_check[0], f"no Secret holds any of the {len(seeds)} seeds at the end ({end_check[1]} Secrets "
                           f"cluster-wide)" + (f": {end_check[0]}" if end_check[0] else "")),
    ]
    if opened:
        n200 = sum(1 for r in opened["results"] if r and r[0] == 200)
        checks.append((n200 == len(opened["results"]), f"every opening answered 200 ({n200} of {len(opened['results'])})"))
    for ok, text in checks:
        failed |= not ok
        print(f"- {'ok' if ok else 'FAILED'}: {text}")
    if failed:
        sys.exit("FAILED (see above)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--delay-ms", type=int, default=0, help="delay of every IAM request, ms (default 0)")
    ap.add_argument("--samples", type=int, default=100, help="people who enroll one after another (default 100)")
    ap.add_argument("--openings", type=int, default=1000, help="concurrent link openings (default 1000; 0: none)")
    ap.add_argument("--settle", type=int, default=20, help="seconds of RSS before and after the openings (default 20)")
    ap.add_argument("--timeout", type=int, default=600, help="bound for the set-up waits, seconds (default 600)")
    ap.add_argument("--compliant-timeout", type=int, default=60, help="bound per person, seconds (default 60)")
    ap.add_argument("--binary", default=RELEASE_BINARY)
    ap.add_argument("--log", default="info", help="the operator's --log filter (default info)")
    args = ap.parse_args()
    if args.samples < 1 or args.samples > 200 or args.openings < 0 or args.openings > 60000:
        sys.exit("--samples 1-200 (a status lists at most 200 users), --openings 0-60000")
    require_testbed(args.binary)
    run_with(os.environ["MFA_TESTBED_PYTHON"])  # the test bed's moto venv has boto3
    run(args)


if __name__ == "__main__":
    main()
