#!/usr/bin/env python3
"""Several operator builds timed on a new MfaEnrollment over the whole account, interleaved:
benches/steady_state.py's part 1 (fresh operator, create, wait for a complete status; IAM
and apiserver requests counted), each round running every build in turn, so a busy
machine slows all of them alike. Seeds the account once (THIS RESETS THE TEST BED'S MOTO).

Each --build is LABEL=BINARY, optionally followed by ,crds=DIR (a source tree whose crds/
that build needs: an older build that predates MfaAccountBinding gets its enrollment
without a binding; list the current build first, so that the MfaAccountBinding CRD
exists) and ,ENV=VALUE pairs for that build's environment.

Usage (needs the test bed; run it alone):
  python3 benches/interleave.py --modes Report,Enroll --rounds 3 \\
      --build now=target/release/mfa-operator --build old=/tmp/old/target/release/mfa-operator,crds=/tmp/old
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import steady_state as ss  # noqa: E402
from benchlib import REPO, Proxy, fmt_calls, machine, require_testbed, reset_moto, run_with, seed, set_latency  # noqa: E402


def parse_build(text):
    label, _, rest = text.partition("=")
    binary, *pairs = rest.split(",")
    crds, env = REPO, {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key == "crds":
            crds = os.path.abspath(value)
        else:
            env[key] = value
    if not label or not binary:
        sys.exit(f"--build {text!r}: expected LABEL=BINARY[,crds=DIR][,ENV=VALUE...]")
    return label, os.path.abspath(binary), crds, env


def apply_crds(kube, tree):
    """The CRDs of `tree`, taking over fields another manager set (a test run's)."""
    subprocess.run([os.environ.get("MFA_TESTBED_KUBECTL", "kubectl"), "apply", "--server-side", "--force-conflicts",
                    "--field-manager", "mfa-bench", "-f", os.path.join(tree, "crds")], check=True, capture_output=True)
    ss.REPO = tree
    kube.apply_crd()  # the same again, and waits until they are Established


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", action="append", required=True, help="LABEL=BINARY[,crds=DIR][,ENV=VALUE...]")
    ap.add_argument("--modes", default="Report,Enroll")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--users", type=int, default=5000)
    args = ap.parse_args()
    builds = [parse_build(b) for b in args.build]
    moto = require_testbed(builds[0][1])
    run_with(os.environ["MFA_TESTBED_PYTHON"])  # the test bed's moto venv has boto3

    proxy = Proxy(moto)
    base_env = dict(os.environ, AWS_ENDPOINT_URL=proxy.url)
    base_env.pop("RUST_LOG", None)
    logdir = tempfile.mkdtemp(prefix="mfa-interleave-")
    print(f"machine: {machine()}")
    print(f"command: python3 benches/interleave.py {' '.join(sys.argv[1:])}")
    print(f"{set_latency(moto, 0)}; operator logs in {logdir}")
    kube = ss.Kube()
    bind = ss.Kube.bind
    reset_moto(moto)
    seeded = seed(moto, args.users, groups=10)
    print(f"Seeded {args.users:,} users ({len(seeded.without):,} without MFA).\n")
    results, crds_applied = {}, None
    for round_ in range(args.rounds):
        for label, binary, crds, env in builds:
            if crds != crds_applied:
                apply_crds(kube, crds)
                crds_applied = crds
            # A build without bindings takes the device path in its own spec.
            has_bindings = os.path.exists(os.path.join(crds, "crds", "mfaaccountbindings.iam.mfa-operator.dev.yaml"))
            ss.Kube.bind = bind if has_bindings else (lambda self, ns, spec: spec)
            for mode in args.modes.split(","):
                secs, first, calls, _, requests = ss.new_enrollment(
                    kube, proxy, moto, binary, dict(base_env, **env), logdir, mode, seeded, 600)
                results.setdefault((label, mode), []).append(secs)
                print(f"- round {round_ + 1}, {label}, {mode}: {secs:.2f} s (first status {first:.2f} s); "
                      f"IAM {fmt_calls(calls)}; apiserver {fmt_calls(requests)}", flush=True)
    print("\n| build | mode | runs | min | median | max |\n| --- | --- | ---: | ---: | ---: | ---: |")
    for (label, mode), times in results.items():
        print(f"| {label} | {mode} | {len(times)} | {min(times):.2f} s | {statistics.median(times):.2f} s | "
              f"{max(times):.2f} s |")


if __name__ == "__main__":
    main()
