"""Demo helper for tests/demo: seeds moto with a realistic account, and plays the phone.

    demo_account.py seed      reset moto, then create users, a group, tags, devices
    demo_account.py codes B32 print two consecutive TOTP codes for a base32 seed,
                              computed exactly as an authenticator app does (RFC 6238)

Uses boto3 (installed with moto in the test bed's venv) through the standard AWS
environment that `tests/testbed/testbed env` exports.
"""
import base64
import hashlib
import hmac
import os
import struct
import sys
import time
import urllib.request

import boto3


def totp(secret: bytes, step: int) -> str:
    digest = hmac.new(secret, struct.pack(">Q", step), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset:offset + 4])[0] & 0x7FFFFFFF
    return f"{value % 1_000_000:06d}"


def codes(seed: str) -> None:
    secret = base64.b32decode(seed.strip().upper() + "=" * (-len(seed.strip()) % 8))
    step = int(time.time()) // 30
    print(totp(secret, step - 1), totp(secret, step))


def seed_account() -> None:
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"))
    iam = boto3.client("iam")
    users = {
        "/engineering/": ["alice", "bob", "carol", "break-glass"],
        "/engineering/data/": ["dana"],
        "/finance/": ["erin", "frank"],
        "/contractors/": ["gus"],
    }
    for path, names in users.items():
        for name in names:
            iam.create_user(UserName=name, Path=path)
    iam.create_group(GroupName="developers")
    for name in ["alice", "bob", "gus"]:
        iam.add_user_to_group(GroupName="developers", UserName=name)
    iam.tag_user(UserName="erin", Tags=[{"Key": "team", "Value": "payments"}])
    iam.create_login_profile(UserName="frank", Password="Demo-Password-123!")
    # alice and erin already use MFA (set up in the console long ago).
    for name in ["alice", "erin"]:
        device = iam.create_virtual_mfa_device(VirtualMFADeviceName=f"{name}-phone")["VirtualMFADevice"]
        secret = base64.b32decode(device["Base32StringSeed"])
        step = int(time.time()) // 30
        iam.enable_mfa_device(UserName=name, SerialNumber=device["SerialNumber"],
                              AuthenticationCode1=totp(secret, step - 1), AuthenticationCode2=totp(secret, step))
    print("moto: 8 users under /engineering/, /finance/, /contractors/; group developers; "
          "erin tagged team=payments; frank has a console password; alice and erin already have MFA")


if __name__ == "__main__":
    if sys.argv[1:2] == ["seed"]:
        seed_account()
    elif sys.argv[1:2] == ["codes"] and len(sys.argv) == 3:
        codes(sys.argv[2])
    else:
        sys.exit(__doc__)
