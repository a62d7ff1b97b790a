#!/usr/bin/env python3
"""moto's server with a strict IAM layer: the test bed's stand-in for AWS IAM.

moto 5.2.5 is lenient where real IAM is not, so tests could not fail where AWS would.
This runs moto's own WSGI app in-process (as `moto_server` builds it) behind a
middleware that answers as IAM documents for the calls where moto differs:

  EnableMFADevice         codes must be six digits (400 ValidationError); the user
                          (404 NoSuchEntity) and the virtual device (404 NoSuchEntity)
                          must exist; the device must be unassigned (409
                          EntityAlreadyExists); the codes must be two consecutive TOTP
                          codes of the device's seed (403 InvalidAuthenticationCode)
  DeleteVirtualMFADevice  refused for a device assigned to a user (409 DeleteConflict)
  ListUsers, ListGroups, ListVirtualMFADevices, ListMFADevices, ListUserTags,
  GetAccountAuthorizationDetails
                          MaxItems (1..1000, default 100), IsTruncated and an opaque
                          Marker, which the next call accepts; the pages after the
                          first come from moto's answer to the first (for 60 s): one
                          consistent listing, and moto builds a large answer once

Everything else goes to moto untouched, /moto-api/ (reset, seed) included. Control
endpoints, not IAM:

  GET  /strict-iam/                        200 while this layer runs (health)
  POST /strict-iam/console-cleanup[?account=ID]
                                           delete every unassigned virtual MFA device
                                           in that account (default: every account),
                                           as AWS does when anyone adds a virtual
                                           device in the console; {"deleted": [...]}
  POST /strict-iam/latency?delay_ms=N&jitter_ms=M[&account=ID]
                                           delay every IAM request by N ms plus up to M
                                           ms of uniform jitter (default 0, 0); with
                                           account=, only that account's requests
                                           (0, 0 removes the account's own delay)
  GET  /strict-iam/latency[?account=ID]    the current delay (for that account)

Usage: strict_iam.py [-H HOST] [-p PORT]   (the same flags as moto_server)
"""

import argparse
import base64
import binascii
import hashlib
import hmac
import io
import json
import os
import random
import re
import signal
import struct
import sys
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from urllib.parse import parse_qs, parse_qsl, urlencode

from werkzeug.serving import run_simple

from moto.core.responses import BaseResponse
from moto.iam import models as iam_models
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.utilities.utils import get_partition

NS = "https://iam.amazonaws.com/doc/2010-05-08/"
Q = "{" + NS + "}"
ET.register_namespace("", NS)  # serialise rewritten answers with IAM's default xmlns

# Listing calls IAM pages: action -> the lists it pages, each with the member's unique
# key (paging resumes after the last key, so items added or removed between pages
# never shift the rest). GetAccountAuthorizationDetails pages its four lists as one.
LISTS = {
    "ListUsers": (("Users", "UserName"),),
    "ListGroups": (("Groups", "GroupName"),),
    "ListVirtualMFADevices": (("VirtualMFADevices", "SerialNumber"),),
    "ListMFADevices": (("MFADevices", "SerialNumber"),),
    "ListUserTags": (("Tags", "Key"),),
    "GetAccountAuthorizationDetails": (
        ("UserDetailList", "UserName"),
        ("GroupDetailList", "GroupName"),
        ("RoleDetailList", "RoleName"),
        ("Policies", "Arn"),
    ),
}
MAX_ITEMS_DEFAULT = 100
MAX_ITEMS_LIMIT = 1000
# moto pages ListVirtualMFADevices itself (and oddly): ask it for everything.
MOTO_ALL = "1000000"
# A paged listing's later pages come from the answer moto gave for its first page, for
# this long (a consistent view, and moto builds a 5,000-user answer once, not per page).
SNAPSHOT_SECS = 60

HANDLED = frozenset(LISTS) | {"EnableMFADevice", "DeleteVirtualMFADevice"}

ACTION = re.compile(rb"(?:^|&)Action=([A-Za-z0-9]+)(?:&|$)")
SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/([^/]+)/([^/]+)/aws4_request")
SERIAL = re.compile(r"^arn:([^:]+):iam::([^:]+):mfa/.+$")
SIX_DIGITS = re.compile(r"[0-9]{6}")

STATUS = {
    200: "200 OK",
    400: "400 Bad Request",
    403: "403 Forbidden",
    404: "404 Not Found",
    405: "405 Method Not Allowed",
    409: "409 Conflict",
}


class IamError(Exception):
    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def totp(key, step):
    """RFC 6238 (RFC 4226 truncation): SHA-1, 6 digits, for time step `step`."""
    mac = hmac.new(key, struct.pack(">Q", step), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return "%06d" % (value % 1_000_000)


def codes_match(seed_base32, code1, code2, now=None):
    """code1 at step k and code2 at k+1, with k+1 within two steps before and one after
    the current 30 s step (IAM's tolerance for a phone's clock)."""
    text = seed_base32.strip().upper()
    key = base64.b32decode(text + "=" * (-len(text) % 8))
    step = int((time.time() if now is None else now) // 30)
    for k1 in range(step - 2, step + 2):
        if hmac.compare_digest(totp(key, k1 - 1), code1) and hmac.compare_digest(totp(key, k1), code2):
            return True
    return False


def validation_error(problems):
    n = len(problems)
    return IamError(400, "ValidationError", "%d validation error%s detected: %s" % (n, "" if n == 1 else "s", "; ".join(problems)))


def code_problems(params):
    # The values are never echoed: they are authentication codes.
    problems = []
    for field in ("UserName", "SerialNumber", "AuthenticationCode1", "AuthenticationCode2"):
        member = field[0].lower() + field[1:]
        value = params.get(field)
        if value is None:
            problems.append("Value null at '%s' failed to satisfy constraint: Member must not be null" % member)
        elif not field.startswith("AuthenticationCode"):
            continue
        elif len(value) < 6:
            problems.append("Value at '%s' failed to satisfy constraint: Member must have length greater than or equal to 6" % member)
        elif len(value) > 6:
            problems.append("Value at '%s' failed to satisfy constraint: Member must have length less than or equal to 6" % member)
        elif not SIX_DIGITS.fullmatch(value):
            problems.append("Value at '%s' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\d]+" % member)
    return problems


def encode_marker(action, index, key):
    raw = json.dumps([action, index, key], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_marker(action, marker):
    try:
        raw = base64.urlsafe_b64decode(marker + "=" * (-len(marker) % 4))
        marked_action, index, key = json.loads(raw)
        if marked_action == action and isinstance(index, int) and isinstance(key, str):
            return index, key
    except (ValueError, TypeError, binascii.Error):
        pass
    raise IamError(400, "ValidationError", "Invalid Marker.")


def page_parameters(params):
    max_items = params.get("MaxItems")
    if max_items is None:
        max_items = MAX_ITEMS_DEFAULT
    else:
        try:
            max_items = int(max_items)
        except ValueError:
            raise validation_error(["Value '%s' at 'maxItems' failed to satisfy constraint: Member must be an integer" % max_items[:20]])
        if max_items < 1:
            raise validation_error(["Value '%d' at 'maxItems' failed to satisfy constraint: Member must have value greater than or equal to 1" % max_items])
        if max_items > MAX_ITEMS_LIMIT:
            raise validation_error(["Value '%d' at 'maxItems' failed to satisfy constraint: Member must have value less than or equal to %d" % (max_items, MAX_ITEMS_LIMIT)])
    return max_items, params.get("Marker")


def iam_backend(account, partition):
    """moto's IAM backend of an account, without creating one that does not exist yet
    (BackendDict's [] creates on lookup)."""
    per_account = dict.get(iam_models.iam_backends, account)
    return None if per_account is None else dict.get(per_account, partition)


def all_iam_backends():
    for per_account in list(dict.values(iam_models.iam_backends)):
        yield from list(dict.values(per_account))


class StrictIam:
    def __init__(self, app):
        self.app = app
        # Check-then-act of EnableMFADevice, DeleteVirtualMFADevice and the console
        # cleanup must not interleave (two users enabling one device at once).
        self.mutations = threading.Lock()
        self.delay_ms = 0
        self.jitter_ms = 0
        # account id -> (delay_ms, jitter_ms), instead of the global delay for that account
        self.account_delays = {}
        # (account, action, parameters but paging) -> (time, moto's status, headers, body)
        self.snapshots = {}

    # ------------------------------------------------------------------ dispatch

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/strict-iam" or path.startswith("/strict-iam/"):
            return self.control(environ, start_response, path[len("/strict-iam") :].strip("/"))
        if path.startswith("/moto-api"):
            return self.app(environ, start_response)
        action, form = self.iam_action(environ)
        if action is None:
            return self.app(environ, start_response)
        delay, jitter = self.delay_ms, self.jitter_ms
        if self.account_delays:
            delay, jitter = self.account_delays.get(self.request_account(environ), (delay, jitter))
        if delay or jitter:
            time.sleep((delay + random.uniform(0, jitter)) / 1000)
        if action not in HANDLED:
            return self.app(environ, start_response)
        params = self.params(environ, form)
        try:
            if action == "EnableMFADevice":
                return self.enable_mfa_device(environ, start_response, params)
            if action == "DeleteVirtualMFADevice":
                return self.delete_virtual_mfa_device(environ, start_response, params)
            return self.paged(environ, start_response, action, params, form)
        except IamError as e:
            return error(start_response, e)

    def iam_action(self, environ):
        """The IAM action of a request, or None for anything else; and the form body
        (bytes, put back for moto) when there is one. Only IAM requests' bodies are read."""
        scope = SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
        if scope and scope.group(2) != "iam":
            return None, None
        environ["strict_iam.region"] = scope.group(1) if scope else None
        form = None
        if environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
            try:
                length = int(environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
            form = environ["wsgi.input"].read(length) if length > 0 else b""
            environ["wsgi.input"] = io.BytesIO(form)
        found = ACTION.search(form) if form else None
        if found is None:
            found = ACTION.search(environ.get("QUERY_STRING", "").encode())
        return (found.group(1).decode() if found else None), form

    @staticmethod
    def params(environ, form):
        params = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True).items()}
        if form:
            params.update((k, v[0]) for k, v in parse_qs(form.decode("utf-8", "replace"), keep_blank_values=True).items())
        return params

    def call_moto(self, environ):
        captured = {}
        chunks = []

        def start_response(status, headers, exc_info=None):
            captured["status"], captured["headers"] = status, headers
            return chunks.append

        answer = self.app(environ, start_response)
        try:
            chunks.extend(answer)
        finally:
            if hasattr(answer, "close"):
                answer.close()
        return captured["status"], captured["headers"], b"".join(chunks)

    # ----------------------------------------------------------------- accounts

    @staticmethod
    def request_account(environ):
        """The account moto serves this request from, decided as moto decides it."""
        if "MOTO_ACCOUNT_ID" in os.environ:
            return os.environ["MOTO_ACCOUNT_ID"]
        if environ.get("HTTP_X_MOTO_ACCOUNT_ID"):
            return environ["HTTP_X_MOTO_ACCOUNT_ID"]
        found = BaseResponse.access_key_regex.search(environ.get("HTTP_AUTHORIZATION", ""))
        return iam_models.get_account_id_from(found.group("access_key") if found else "AKIAEXAMPLE")

    def request_place(self, environ):
        """(partition, account) of the request."""
        return get_partition(environ.get("strict_iam.region")), self.request_account(environ)

    def request_backend(self, environ):
        partition, account = self.request_place(environ)
        return iam_backend(account, partition)

    def device(self, environ, serial):
        """The virtual device `serial` as the requesting account sees it, or None."""
        found = SERIAL.match(serial)
        if not found or found.groups() != self.request_place(environ):
            return None
        backend = self.request_backend(environ)
        return None if backend is None else backend.virtual_mfa_devices.get(serial)

    # ---------------------------------------------------------------- mutations

    def enable_mfa_device(self, environ, start_response, params):
        problems = code_problems(params)
        if problems:
            raise validation_error(problems)
        user_name, serial = params["UserName"], params["SerialNumber"]
        with self.mutations:
            backend = self.request_backend(environ)
            if backend is None or user_name not in backend.users:
                raise IamError(404, "NoSuchEntity", "The user with name %s cannot be found." % user_name)
            device = self.device(environ, serial)
            if device is None:
                raise IamError(404, "NoSuchEntity", "VirtualMFADevice with serial number %s doesn't exist." % serial)
            if device.user is not None:
                raise IamError(409, "EntityAlreadyExists", "MFA device %s is already in use." % serial)
            if not codes_match(device.base32_string_seed, params["AuthenticationCode1"], params["AuthenticationCode2"]):
                raise IamError(403, "InvalidAuthenticationCode", "Authentication code for device is not valid.")
            return relay(start_response, *self.call_moto(environ))

    def delete_virtual_mfa_device(self, environ, start_response, params):
        serial = params.get("SerialNumber") or ""
        with self.mutations:
            device = self.device(environ, serial)
            if device is not None and device.user is not None:
                raise IamError(409, "DeleteConflict", "MFA device %s is assigned to a user and cannot be deleted." % serial)
            # Unknown serials get moto's own NoSuchEntity.
            return relay(start_response, *self.call_moto(environ))

    def console_cleanup(self, account):
        deleted = []
        with self.mutations:
            if account is None:
                backends = list(all_iam_backends())
            else:
                per_account = dict.get(iam_models.iam_backends, account)
                backends = [] if per_account is None else list(dict.values(per_account))
            for backend in backends:
                for serial, device in list(backend.virtual_mfa_devices.items()):
                    if device.user is None:
                        del backend.virtual_mfa_devices[serial]
                        deleted.append(serial)
        return deleted

    # ------------------------------------------------------------------- paging

    def paged(self, environ, start_response, action, params, form):
        max_items, marker = page_parameters(params)
        after = decode_marker(action, marker) if marker is not None else None
        listing = (self.request_account(environ), action,
                   tuple(sorted((k, v) for k, v in params.items() if k not in ("MaxItems", "Marker"))))
        now = time.monotonic()
        snapshot = self.snapshots.get(listing) if after is not None else None
        if snapshot is not None and now - snapshot[0] < SNAPSHOT_SECS:
            status, headers, body = snapshot[1:]
        else:
            self.ask_for_everything(environ, action, form)
            status, headers, body = self.call_moto(environ)
            if status.startswith("200"):
                kept = {k: v for k, v in self.snapshots.items() if now - v[0] < SNAPSHOT_SECS}
                kept[listing] = (now, status, headers, body)
                self.snapshots = kept
        if not status.startswith("200"):
            return relay(start_response, status, headers, body)
        if after is None and body.count(b"<member>") <= max_items:
            # Fast path (most calls): every <member>, nested ones included, bounds the
            # items, so all fit in one page and moto's answer stands as it is.
            if b"<IsTruncated>" not in body:  # moto omits it for ListGroups
                end = b"</" + action.encode() + b"Result>"
                body = body.replace(end, b"<IsTruncated>false</IsTruncated>" + end, 1)
            return relay(start_response, status, headers, body)
        root = ET.fromstring(body)
        result = root.find(Q + action + "Result")
        if result is None:
            return relay(start_response, status, headers, body)
        items = []
        for index, (name, key) in enumerate(LISTS[action]):
            container = result.find(Q + name)
            if container is None:
                continue
            for member in list(container):
                items.append(((index, member.findtext(Q + key) or ""), container, member))
                container.remove(member)
        items.sort(key=lambda item: item[0])
        if after is not None:
            after = tuple(after)
            items = [item for item in items if item[0] > after]
        page, truncated = items[:max_items], len(items) > max_items
        for _, container, member in page:
            container.append(member)
        for name in ("IsTruncated", "Marker"):
            for old in result.findall(Q + name):
                result.remove(old)
        ET.SubElement(result, Q + "IsTruncated").text = "true" if truncated else "false"
        if truncated:
            (index, key), _, _ = page[-1]
            ET.SubElement(result, Q + "Marker").text = encode_marker(action, index, key)
        return relay(start_response, status, headers, ET.tostring(root, encoding="utf-8", xml_declaration=False))

    @staticmethod
    def ask_for_everything(environ, action, form):
        """Drops MaxItems and Marker from what moto sees (this layer pages), asking
        moto for all items where it would page by itself."""

        def rewrite(pairs, override):
            kept = [(k, v) for k, v in pairs if k not in ("MaxItems", "Marker")]
            if override:
                kept.append(("MaxItems", MOTO_ALL))
            return urlencode(kept)

        override = action == "ListVirtualMFADevices"
        query = environ.get("QUERY_STRING", "")
        if form:
            body = rewrite(parse_qsl(form.decode("utf-8", "replace"), keep_blank_values=True), override).encode()
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            override = False
        if query:
            environ["QUERY_STRING"] = rewrite(parse_qsl(query, keep_blank_values=True), override)

    # ------------------------------------------------------------------ control

    def control(self, environ, start_response, what):
        method = environ.get("REQUEST_METHOD", "GET")
        query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        if what == "" and method in ("GET", "HEAD"):
            return json_answer(start_response, 200, {"strict_iam": True, "delay_ms": self.delay_ms, "jitter_ms": self.jitter_ms})
        if what == "console-cleanup":
            if method != "POST":
                return json_answer(start_response, 405, {"error": "use POST"})
            return json_answer(start_response, 200, {"deleted": self.console_cleanup(query.get("account"))})
        if what == "latency":
            if method == "POST":
                try:
                    delay, jitter = int(query.get("delay_ms", "0")), int(query.get("jitter_ms", "0"))
                except ValueError:
                    return json_answer(start_response, 400, {"error": "delay_ms and jitter_ms must be integers"})
                if delay < 0 or jitter < 0:
                    return json_answer(start_response, 400, {"error": "delay_ms and jitter_ms must not be negative"})
                account = query.get("account")
                if account is None:
                    self.delay_ms, self.jitter_ms = delay, jitter
                elif delay or jitter:
                    self.account_delays = {**self.account_delays, account: (delay, jitter)}
                else:
                    self.account_delays = {k: v for k, v in self.account_delays.items() if k != account}
            elif method != "GET":
                return json_answer(start_response, 405, {"error": "use GET or POST"})
            delay, jitter = self.account_delays.get(query.get("account"), (self.delay_ms, self.jitter_ms))
            return json_answer(start_response, 200, {"delay_ms": delay, "jitter_ms": jitter})
        return json_answer(start_response, 404, {"error": "no such control endpoint: /strict-iam/%s" % what})


def relay(start_response, status, headers, body):
    headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
    headers.append(("Content-Length", str(len(body))))
    start_response(status, headers)
    return [body]


def error(start_response, e):
    request_id = str(uuid.uuid4())
    body = (
        '<ErrorResponse xmlns="%s"><Error><Type>Sender</Type><Code>%s</Code><Message>%s</Message></Error>'
        "<RequestId>%s</RequestId></ErrorResponse>" % (NS, e.code, escape(e.message), request_id)
    ).encode()
    start_response(
        STATUS[e.status],
        [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id), ("Content-Length", str(len(body)))],
    )
    return [body]


def escape(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def json_answer(start_response, status, value):
    body = json.dumps(value).encode()
    start_response(STATUS[status], [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def main(argv=None):
    parser = argparse.ArgumentParser(description="moto's server behind a strict IAM layer")
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=int(os.environ.get("MOTO_PORT", 5000)))
    args = parser.parse_args(argv)
    # What moto_server does: moto calls itself on MOTO_PORT; SIGTERM ends cleanly.
    os.environ.setdefault("MOTO_PORT", str(args.port))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app = StrictIam(DomainDispatcherApplication(create_backend_app))
    run_simple(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
