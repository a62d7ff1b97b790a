#!/usr/bin/env python3
"""Account scan, side by side: `mfa-operator audit` vs Cloud Custodian vs an AWS-CLI loop.

One run, the same moto server, the same seeded account. For every size:
  * reset moto (POST /moto-api/reset -- THIS WIPES THE TEST BED'S IAM STATE),
  * seed N users, 90% with an enabled virtual MFA device (TOTP codes computed here),
  * time each tool (min/median/max over --runs), count the IAM calls it makes at a
    counting reverse proxy this script runs (by the `Action=` of each form body), and
  * check that all three find exactly the same users without MFA (exit 1 otherwise).

Tools:
  (a) target/release/mfa-operator audit --output json --path-prefix /
  (b) custodian run --cache-period 0 (c7n 0.9.53), resource iam-user,
      filter {type: mfa-device, value: empty}
  (c) aws iam list-users, then aws iam list-mfa-devices --user-name U per user,
      one `aws` process per call, sequentially (awscli 1.46.3)

Usage (needs the test bed; run it alone, not while tests/run runs):
  tests/testbed/testbed up && eval "$(tests/testbed/testbed env)"
  cargo build --release --bin mfa-operator
  python3 benches/side_by_side.py [--sizes 500,2000,5000] [--runs 3] [--cli-runs 1]

c7n and awscli are installed into ~/.cache/mfa-operator-testbed/bench-venv (created on
first use); the script re-executes itself with that venv's python.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (VENV, RELEASE_BINARY, Proxy, binary_version, ensure_venv, fmt_calls,  # noqa: E402
                      machine, require_testbed, reset_moto, seed)


# ---------------------------------------------------------------- the three tools

def run_audit(binary, env):
    p = subprocess.run([binary, "audit", "--output", "json", "--path-prefix", "/"],
                       env=env, capture_output=True, text=True)
    if p.returncode not in (0, 1):
        raise RuntimeError(f"mfa-operator audit exited {p.returncode}: {p.stderr[-2000:]}")
    doc = json.loads(p.stdout)
    return {u["name"] for u in doc["users"] if u["state"] != "Compliant"}


POLICY = """policies:
  - name: iam-users-without-mfa
    resource: iam-user
    filters:
      - type: mfa-device
        key: MFADevices
        value: empty
"""


def run_custodian(env, workdir):
    pol = os.path.join(workdir, "policy.yml")
    with open(pol, "w") as f:
        f.write(POLICY)
    out = tempfile.mkdtemp(dir=workdir, prefix="c7n-out-")
    p = subprocess.run([os.path.join(VENV, "bin", "custodian"), "run", "--cache-period", "0",
                        "-r", env["AWS_DEFAULT_REGION"], "-s", out, pol],
                       env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"custodian exited {p.returncode}: {p.stderr[-2000:]}")
    with open(os.path.join(out, "iam-users-without-mfa", "resources.json")) as f:
        res = json.load(f)
    shutil.rmtree(out, ignore_errors=True)
    return {r["UserName"] for r in res}


def run_cli_loop(env):
    aws = os.path.join(VENV, "bin", "aws")

    def call(*args):
        p = subprocess.run([aws, "iam", *args, "--output", "json"], env=env,
                           capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"aws {' '.join(args)} exited {p.returncode}: {p.stderr[-1000:]}")
        return json.loads(p.stdout)

    users = [u["UserName"] for u in call("list-users")["Users"]]  # the CLI pages for us
    return {u for u in users if not call("list-mfa-devices", "--user-name", u)["MFADevices"]}


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="500", help="comma-separated user counts (default 500)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs of audit and custodian (default 3)")
    ap.add_argument("--cli-runs", type=int, default=None,
                    help="timed runs of the AWS-CLI loop (default: --runs up to 500 users, else 1)")
    ap.add_argument("--tools", default="audit,c7n,cli",
                    help="comma-separated subset of audit, c7n, cli to run (default all three)")
    ap.add_argument("--binary", default=RELEASE_BINARY)
    ap.add_argument("--seed-workers", type=int, default=16)
    args = ap.parse_args()
    ensure_venv()

    moto = require_testbed(args.binary)
    sizes = [int(s) for s in args.sizes.split(",") if s]

    proxy = Proxy(moto)
    env = dict(os.environ, AWS_ENDPOINT_URL=proxy.url, AWS_PAGER="", RUST_LOG="warn")
    env.setdefault("AWS_DEFAULT_REGION", env.get("AWS_REGION", "us-east-1"))
    work = tempfile.mkdtemp(prefix="mfa-side-by-side-")

    import awscli
    import botocore
    import c7n.version
    print(f"machine: {machine()}")
    print(f"tools: {binary_version(args.binary)} ({args.binary}); c7n {c7n.version.version}; awscli {awscli.__version__}; "
          f"botocore {botocore.__version__}")
    print(f"moto {moto} behind counting proxy {proxy.url}")
    print(f"command: python3 benches/side_by_side.py {' '.join(sys.argv[1:])}")
    print("NOTE: every size resets moto (POST /moto-api/reset) -- the test bed's IAM state is wiped.")
    print()

    chosen = set(args.tools.split(","))
    if not chosen or not chosen <= {"audit", "c7n", "cli"}:
        sys.exit(f"--tools: choose from audit, c7n, cli (got {args.tools!r})")
    tools = [(name, fn) for key, name, fn in [
        ("audit", "mfa-operator audit", lambda: run_audit(args.binary, env)),
        ("c7n", "Cloud Custodian (c7n)", lambda: run_custodian(env, work)),
        ("cli", "AWS CLI loop", lambda: run_cli_loop(env)),
    ] if key in chosen]
    failed = False
    for n in sizes:
        reset_moto(moto)
        t0 = time.monotonic()
        expect = seed(moto, n, args.seed_workers).without
        print(f"### {n:,} users, {len(expect):,} without MFA (seeded in {time.monotonic() - t0:.1f} s)\n")
        cli_runs = args.cli_runs if args.cli_runs is not None else (args.runs if n <= 500 else 1)
        rows, medians, calls_total = [], {}, {}
        for name, fn in tools:
            runs = cli_runs if name == "AWS CLI loop" else args.runs
            times, calls, found_sets = [], [], []
            for _ in range(runs):
                proxy.take()
                t = time.monotonic()
                found = fn()
                times.append(time.monotonic() - t)
                calls.append(proxy.take())
                found_sets.append(found)
            for f in found_sets:
                if f != expect:
                    failed = True
                    print(f"MISMATCH: {name} found {len(f)} users without MFA; "
                          f"missing {sorted(expect - f)[:5]}, extra {sorted(f - expect)[:5]}", file=sys.stderr)
            if any(c != calls[0] for c in calls):
                print(f"note: {name} IAM calls varied between runs: {[sum(c.values()) for c in calls]}",
                      file=sys.stderr)
            if sum(calls[0].values()) == 0:
                failed = True
                print(f"ERROR: {name} made no calls through the proxy (AWS_ENDPOINT_URL not honoured?)",
                      file=sys.stderr)
            med = statistics.median(times)
            medians[name], calls_total[name] = med, sum(calls[0].values())
            rows.append(f"| {name} | {runs} | {min(times):.3f} s | {med:.3f} s | {max(times):.3f} s | "
                        f"{fmt_calls(calls[0])} | {len(found_sets[0]):,} |")
        print("| tool | runs | wall min | wall median | wall max | IAM calls per run (at the proxy) | without MFA |")
        print("| --- | ---: | ---: | ---: | ---: | --- | ---: |")
        print("\n".join(rows))
        base = "mfa-operator audit"
        for other in ("Cloud Custodian (c7n)", "AWS CLI loop"):
            if base not in medians or other not in medians:
                continue
            print(f"| ratio {other} / audit | | | {medians[other] / medians[base]:.1f}x | | "
                  f"{calls_total[other] / max(calls_total[base], 1):.1f}x | |")
        agree = ("all three found the same" if len(tools) == 3 else f"{' and '.join(n for n, _ in tools)} found the same"
                 ) if not failed else "DISAGREEMENT:"
        print(f"\n{agree} {len(expect):,} users without MFA (checked against the seeded set, every run).")
        if "cli" in chosen and cli_runs < args.runs:
            print(f"The AWS CLI loop ran {cli_runs} time(s) at this size (one `aws` process per call).")
        print()
    shutil.rmtree(work, ignore_errors=True)
    if failed:
        sys.exit("FAILED: the tools disagree or a tool bypassed the proxy")


if __name__ == "__main__":
    main()
