#!/usr/bin/env python3
"""Test stand-in for the Google Cloud KMS REST API (v1), with service-account JWT auth.

This is NOT Google Cloud. It is a small plain-HTTP server that speaks the public HTTP/JSON
protocol of Cloud KMS (cloudkms.googleapis.com/v1), written from Google's public
documentation and checked with Google's own Python client (see test_standin.py):

  * GET  /v1/{keyRing}, /v1/{cryptoKey}, /v1/{cryptoKeyVersion}
  * GET  /v1/{cryptoKey}/cryptoKeyVersions              (list, pageSize/pageToken, filter state=X)
  * POST /v1/{cryptoKey or cryptoKeyVersion}:encrypt    (real AES-256-GCM, AAD, CRC32C fields)
  * POST /v1/{cryptoKey}:decrypt                        (uses the version the ciphertext names)
  * POST /v1/{keyRing or cryptoKey}:testIamPermissions
  * POST /token                                         (OAuth 2.0 JWT-bearer grant, for clients
                                                         that exchange instead of self-signing)

Callers authenticate the way Google's client libraries do with a service-account key file:
a self-signed RS256 JWT (header kid = private_key_id; iss = sub = client_email; aud = the
service URL, or a scope claim) sent as the bearer token.  The stand-in verifies it with the
public half of the key named by kid.  Service accounts, keys, IAM bindings, version states,
delays and faults are set up through the unauthenticated /_control API (see README.md).

Errors have Google's JSON shape {"error": {"code", "message", "status", "details"?}} with
Cloud KMS's messages for PERMISSION_DENIED, FAILED_PRECONDITION, INVALID_ARGUMENT and
NOT_FOUND.  Enums are answered as strings, int64 values as JSON strings, durations as
"<seconds>s" and timestamps as RFC 3339 UTC, as proto3 JSON prescribes.

Usage: standin.py --port P [--host 127.0.0.1]       (--port 0 picks a free port)
Prints one line when ready:  listening http://127.0.0.1:P
"""

import argparse
import base64
import binascii
import datetime
import json
import os
import re
import secrets
import signal
import sys
import threading
import time
import traceback
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SERVICE = "cloudkms.googleapis.com"
SERVICE_AUDIENCES = {"https://cloudkms.googleapis.com/", "https://cloudkms.googleapis.com"}
ACCEPTED_SCOPES = {"https://www.googleapis.com/auth/cloud-platform", "https://www.googleapis.com/auth/cloudkms"}
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
MAX_BODY = 1 << 20
REQUEST_LOG_SIZE = 500
MAX_PLAINTEXT = 64 * 1024          # SOFTWARE / EXTERNAL keys
MAX_AAD = 64 * 1024
MAX_HSM_INPUT = 8 * 1024           # HSM keys: plaintext + AAD together
TOKEN_LIFETIME = 3599
MAX_JWT_LIFETIME = 3600
CLOCK_SKEW = 300
DEFAULT_DESTROY_SCHEDULED = 30 * 24 * 3600

# ---------------------------------------------------------------------------- ciphertext format
# Opaque to clients, like Cloud KMS's own.  Layout (41 bytes of overhead):
#   [0]      format byte 0x01
#   [1:9]    key tag: 8 random bytes drawn when the CryptoKey is created
#   [9:13]   CryptoKeyVersion number, unsigned big-endian
#   [13:25]  96-bit AES-GCM nonce
#   [25:]    AES-256-GCM ciphertext followed by the 16-byte tag
# GCM's associated data is the 13-byte header followed by the request's
# additionalAuthenticatedData, so header and AAD are both authenticated.
CT_FORMAT = 0x01
CT_HEADER = 13
CT_NONCE = 12
CT_MIN = CT_HEADER + CT_NONCE + 16

PURPOSES = {
    # purpose -> (default algorithm, allowed algorithms)
    "ENCRYPT_DECRYPT": ("GOOGLE_SYMMETRIC_ENCRYPTION", {"GOOGLE_SYMMETRIC_ENCRYPTION"}),
    "RAW_ENCRYPT_DECRYPT": ("AES_256_GCM", {"AES_128_GCM", "AES_256_GCM", "AES_128_CBC", "AES_256_CBC",
                                            "AES_128_CTR", "AES_256_CTR"}),
    "ASYMMETRIC_SIGN": ("EC_SIGN_P256_SHA256", {"EC_SIGN_P256_SHA256", "EC_SIGN_P384_SHA384",
                                                "RSA_SIGN_PSS_2048_SHA256", "RSA_SIGN_PSS_3072_SHA256",
                                                "RSA_SIGN_PKCS1_2048_SHA256", "RSA_SIGN_PKCS1_3072_SHA256",
                                                "EC_SIGN_ED25519"}),
    "ASYMMETRIC_DECRYPT": ("RSA_DECRYPT_OAEP_2048_SHA256", {"RSA_DECRYPT_OAEP_2048_SHA256",
                                                            "RSA_DECRYPT_OAEP_3072_SHA256",
                                                            "RSA_DECRYPT_OAEP_4096_SHA256"}),
    "MAC": ("HMAC_SHA256", {"HMAC_SHA256", "HMAC_SHA384", "HMAC_SHA512"}),
}
PROTECTION_LEVELS = {"SOFTWARE", "HSM", "EXTERNAL", "EXTERNAL_VPC"}
STATES = ("ENABLED", "DISABLED", "DESTROY_SCHEDULED", "DESTROYED")

P_ENCRYPT = "cloudkms.cryptoKeyVersions.useToEncrypt"
P_DECRYPT = "cloudkms.cryptoKeyVersions.useToDecrypt"
P_KEY_GET = "cloudkms.cryptoKeys.get"
P_VERSION_GET = "cloudkms.cryptoKeyVersions.get"
P_VERSION_LIST = "cloudkms.cryptoKeyVersions.list"
P_RING_GET = "cloudkms.keyRings.get"
_LOCATIONS = {"cloudkms.locations.get", "cloudkms.locations.list", "resourcemanager.projects.get"}
_VIEWER = _LOCATIONS | {
    "cloudkms.cryptoKeys.get", "cloudkms.cryptoKeys.list",
    "cloudkms.cryptoKeyVersions.get", "cloudkms.cryptoKeyVersions.list",
    "cloudkms.keyRings.get", "cloudkms.keyRings.list",
    "cloudkms.importJobs.get", "cloudkms.importJobs.list",
    "cloudkms.ekmConnections.get", "cloudkms.ekmConnections.list",
}
# Predefined roles (the Cloud KMS permissions in them; the stand-in knows no custom roles).
ROLES = {
    "roles/cloudkms.cryptoKeyEncrypterDecrypter": _LOCATIONS | {P_ENCRYPT, P_DECRYPT},
    "roles/cloudkms.cryptoKeyEncrypter": _LOCATIONS | {P_ENCRYPT},
    "roles/cloudkms.cryptoKeyDecrypter": _LOCATIONS | {P_DECRYPT},
    "roles/cloudkms.viewer": set(_VIEWER),
    "roles/cloudkms.publicKeyViewer": _LOCATIONS | {"cloudkms.cryptoKeyVersions.viewPublicKey"},
    "roles/cloudkms.signerVerifier": _LOCATIONS | {"cloudkms.cryptoKeyVersions.useToSign",
                                                  "cloudkms.cryptoKeyVersions.useToVerify",
                                                  "cloudkms.cryptoKeyVersions.viewPublicKey"},
    "roles/cloudkms.admin": _VIEWER | {
        "cloudkms.cryptoKeys.create", "cloudkms.cryptoKeys.update",
        "cloudkms.cryptoKeys.getIamPolicy", "cloudkms.cryptoKeys.setIamPolicy",
        "cloudkms.cryptoKeyVersions.create", "cloudkms.cryptoKeyVersions.update",
        "cloudkms.cryptoKeyVersions.destroy", "cloudkms.cryptoKeyVersions.restore",
        "cloudkms.cryptoKeyVersions.viewPublicKey",
        "cloudkms.keyRings.create", "cloudkms.keyRings.getIamPolicy", "cloudkms.keyRings.setIamPolicy",
        "cloudkms.importJobs.create", "cloudkms.importJobs.getIamPolicy", "cloudkms.importJobs.setIamPolicy",
    },
}
# Operation names the control API accepts in place of permissions (for :deny).
OPERATIONS = {
    "encrypt": P_ENCRYPT, "decrypt": P_DECRYPT,
    "get": P_KEY_GET, "getCryptoKey": P_KEY_GET,
    "getVersion": P_VERSION_GET, "getCryptoKeyVersion": P_VERSION_GET,
    "listVersions": P_VERSION_LIST, "listCryptoKeyVersions": P_VERSION_LIST,
    "getKeyRing": P_RING_GET,
}
# Cloud KMS methods this stand-in does not implement (answered 501 UNIMPLEMENTED).
UNIMPLEMENTED_VERBS = {
    "asymmetricSign", "asymmetricDecrypt", "macSign", "macVerify", "rawEncrypt", "rawDecrypt",
    "decapsulate", "updatePrimaryVersion", "destroy", "restore", "import", "getIamPolicy",
    "setIamPolicy", "generateRandomBytes", "verifyConnectivity", "exportTrustedKeyWrappedCryptoKeyVersion",
}

HTTP_OF = {
    "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400, "DEADLINE_EXCEEDED": 504, "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409, "PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429, "FAILED_PRECONDITION": 400,
    "ABORTED": 409, "OUT_OF_RANGE": 400, "UNIMPLEMENTED": 501, "INTERNAL": 500, "UNAVAILABLE": 503,
    "DATA_LOSS": 500, "UNAUTHENTICATED": 401,
}
# What a fault without a body answers, per HTTP status (Google's canonical texts).
FAULT_STATUS = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    429: ("RESOURCE_EXHAUSTED", "Quota exceeded for quota metric 'Cryptographic requests' and limit "
          "'Cryptographic requests per minute' of service 'cloudkms.googleapis.com'."),
    500: ("INTERNAL", "Internal error encountered."),
    501: ("UNIMPLEMENTED", "Operation is not implemented, or supported, or enabled."),
    503: ("UNAVAILABLE", "The service is currently unavailable."),
    504: ("DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
}

NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,63}$")
PROJECT_RE = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
ACCOUNT_RE = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
DURATION_RE = re.compile(r"^(\d+)(\.\d{1,9})?s$")


# ---------------------------------------------------------------------------- CRC32C


def _crc32c_table():
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c(data, crc=0):
    """CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as Cloud KMS's *_crc32c fields use."""
    table = _CRC32C_TABLE
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# ---------------------------------------------------------------------------- small helpers


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text):
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_\-]*", text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def proto_bytes(text):
    """proto3 JSON bytes: standard or URL-safe base64, padding optional."""
    if not isinstance(text, str):
        raise ValueError("not a string")
    t = text.strip().rstrip("=")
    if not re.fullmatch(r"[A-Za-z0-9+/_\-]*", t) or len(t) % 4 == 1:
        raise ValueError("bad base64")
    t = t.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(t + "=" * (-len(t) % 4), validate=True)
    except binascii.Error as e:
        raise ValueError(str(e))


def b64(data):
    return base64.b64encode(data).decode("ascii")


def rfc3339(ts):
    """A unix time (float) as proto3 JSON Timestamp: UTC, 'Z', 9 fractional digits."""
    if ts is None:
        return None
    whole = int(ts)
    nanos = int(round((ts - whole) * 1e9))
    if nanos >= 1_000_000_000:
        whole, nanos = whole + 1, nanos - 1_000_000_000
    base = datetime.datetime.fromtimestamp(whole, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{nanos:09d}Z"


def parse_time(value):
    """RFC 3339 string or unix seconds -> unix seconds (float)."""
    if isinstance(value, bool):
        raise ValueError("not a time")
    if isinstance(value, (int, float)):
        return float(value)
    if not isinstance(value, str):
        raise ValueError("not a time")
    m = re.fullmatch(r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})", value)
    if not m:
        raise ValueError("not RFC 3339")
    tz = "+00:00" if m.group(3) == "Z" else m.group(3)
    dt = datetime.datetime.fromisoformat(m.group(1) + tz)
    return dt.timestamp() + (float("0" + m.group(2)) if m.group(2) else 0.0)


def duration_seconds(value):
    """'7776000s' / '1.5s' / a number -> seconds (float)."""
    if isinstance(value, bool):
        raise ValueError("not a duration")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("negative duration")
        return float(value)
    if not isinstance(value, str) or not DURATION_RE.match(value):
        raise ValueError("not a duration")
    return float(value[:-1])


def fmt_duration(seconds):
    if seconds is None:
        return None
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{seconds:.9f}".rstrip("0") + "s"


def int64_json(value):
    return str(value)


class Request:
    def __init__(self, method, target, headers, body):
        parts = urlsplit(target)
        self.method = method
        self.raw_path = parts.path
        self.raw_query = parts.query
        self.path = unquote(parts.path)
        self.query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        self.headers = headers
        self.body = body
        self.host = headers.get("Host") or ""


class Response:
    def __init__(self, status, body=b"", headers=None):
        self.status = status
        self.body = body
        self.headers = list(headers or [])


GOOGLE_HEADERS = [
    ("Vary", "Origin"), ("Vary", "X-Origin"), ("Vary", "Referer"),
    ("Server", "ESF"), ("X-XSS-Protection", "0"), ("X-Frame-Options", "SAMEORIGIN"),
    ("X-Content-Type-Options", "nosniff"),
]


def json_response(status, obj, headers=None, google=False):
    hdrs = [("Content-Type", "application/json; charset=UTF-8")]
    if google:
        hdrs += GOOGLE_HEADERS
    hdrs += list(headers or [])
    return Response(status, (json.dumps(obj, indent=2) + "\n").encode("utf-8"), hdrs)


class ApiError(Exception):
    """A Cloud KMS error: answered as Google's error JSON."""

    def __init__(self, status, message, details=None, headers=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = list(details or [])
        self.headers = list(headers or [])

    def response(self):
        err = {"code": HTTP_OF[self.status], "message": self.message, "status": self.status}
        if self.details:  # proto3 JSON leaves an empty repeated field out, as Google's answers do
            err["details"] = self.details
        return json_response(HTTP_OF[self.status], {"error": err}, self.headers, google=True)


class ClientError(Exception):
    """A control-API request problem, answered as 4xx JSON."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


def not_enabled(version_name, state):
    details = []
    if state == "DISABLED":
        # Cloud KMS attaches this for a disabled version (seen in gcloud's output).
        details.append({"@type": "type.googleapis.com/google.rpc.PreconditionFailure",
                        "violations": [{"type": "KEY_DISABLED", "subject": version_name}]})
    return ApiError("FAILED_PRECONDITION", f"{version_name} is not enabled, current state is: {state}.", details)


def permission_denied(permission, resource):
    return ApiError("PERMISSION_DENIED",
                    f"Permission '{permission}' denied on resource '{resource}' (or it may not exist).")


DECRYPTION_FAILED = "Decryption failed: verify that 'name' refers to the correct CryptoKey."


def bad_field(field, message):
    return ApiError("INVALID_ARGUMENT", message, [{
        "@type": "type.googleapis.com/google.rpc.BadRequest",
        "fieldViolations": [{"field": field, "description": message}],
    }])


# ---------------------------------------------------------------------------- resource names


def parse_name(path):
    """'projects/p/locations/l/keyRings/r[/cryptoKeys/k[/cryptoKeyVersions[/n]]]' -> dict or None."""
    segs = path.split("/")
    if len(segs) < 4 or segs[0] != "projects" or segs[2] != "locations" or not segs[1] or not segs[3]:
        return None
    out = {"project": segs[1], "location": segs[3]}
    rest = segs[4:]
    if not rest:
        out["kind"] = "location"
        return out
    if len(rest) < 2 or rest[0] != "keyRings" or not rest[1]:
        return None
    out["keyRing"] = rest[1]
    rest = rest[2:]
    if not rest:
        out["kind"] = "keyRing"
        return out
    if len(rest) < 2 or rest[0] != "cryptoKeys" or not rest[1]:
        return None
    out["key"] = rest[1]
    rest = rest[2:]
    if not rest:
        out["kind"] = "cryptoKey"
        return out
    if rest == ["cryptoKeyVersions"]:
        out["kind"] = "versions"
        return out
    if len(rest) == 2 and rest[0] == "cryptoKeyVersions" and rest[1]:
        out["version"] = rest[1]
        out["kind"] = "cryptoKeyVersion"
        return out
    return None


def ring_name(n):
    return f"projects/{n['project']}/locations/{n['location']}/keyRings/{n['keyRing']}"


def key_name(n):
    return f"{ring_name(n)}/cryptoKeys/{n['key']}"


def ancestors(resource):
    """The resource and the parents IAM inherits from (project, key ring, key)."""
    n = parse_name(resource) if resource.count("/") >= 3 else None
    out = []
    if n is None:
        m = re.match(r"^projects/([^/]+)", resource)
        return [f"projects/{m.group(1)}"] if m else [resource]
    out.append(f"projects/{n['project']}")
    if "keyRing" in n:
        out.append(ring_name(n))
    if "key" in n:
        out.append(key_name(n))
    if n.get("version"):
        out.append(f"{key_name(n)}/cryptoKeyVersions/{n['version']}")
    return out


# ---------------------------------------------------------------------------- the stand-in


class StandIn:
    def __init__(self):
        self.lock = threading.RLock()
        self.accounts = {}     # email -> {project, client_id, disabled, keys: {kid: public_key}}
        self.kid_owner = {}    # kid -> email
        self.tokens = {}       # opaque access token -> (email, expires_at)
        self.rings = {}        # key ring name -> {createTime}
        self.keys = {}         # key name -> key dict
        self.iam = {}          # resource -> {role: set(member)}
        self.denies = {}       # resource -> {member: set(permission)}
        self.locations = {}    # "projects/p/locations/l" -> {delay_seconds, fault}
        self.requests = deque(maxlen=REQUEST_LOG_SIZE)
        self.public_base = "http://127.0.0.1"

    # ------------------------------------------------------------------ dispatch

    def handle(self, req):
        if req.path == "/_control" or req.path.startswith("/_control/"):
            return self.control(req, req.path[len("/_control/"):])
        entry = {"time": rfc3339(time.time()), "method": req.method, "path": req.path,
                 "query": req.raw_query, "caller": None, "auth": None, "operation": None, "status": 0}
        try:
            if req.path == "/token":
                entry["operation"] = "token"
                resp = self.token_endpoint(req, entry)
            elif req.path.startswith("/v1/"):
                resp = self.api(req, entry)
            else:
                raise ApiError("NOT_FOUND", f"The stand-in has no route for {req.method} {req.path}.")
        except ApiError as e:
            resp = e.response()
        entry["status"] = resp.status
        with self.lock:
            self.requests.append(entry)
        return resp

    def base_url(self, req):
        return "http://" + req.host if req.host else self.public_base

    # ------------------------------------------------------------------ auth

    def authenticate(self, req, method_name, entry):
        """-> caller email, or raises 401 the way Google's front end answers."""
        auth = req.headers.get("Authorization") or ""
        meta = {"service": SERVICE, "method": f"google.cloud.kms.v1.KeyManagementService.{method_name}"}
        if not auth.lower().startswith("bearer ") or not auth[7:].strip():
            raise ApiError(
                "UNAUTHENTICATED",
                "Request is missing required authentication credential. Expected OAuth 2 access token, login "
                "cookie or other valid authentication credential. See "
                "https://developers.google.com/identity/sign-in/web/devconsole-project.",
                [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "CREDENTIALS_MISSING",
                  "domain": "googleapis.com", "metadata": meta}],
                [("WWW-Authenticate", 'Bearer realm="https://accounts.google.com/"')])
        token = auth[7:].strip()
        entry["auth"] = "jwt" if token.count(".") == 2 else "access_token"
        email, reason = self.check_token(req, token, entry)
        if email is None:
            raise ApiError(
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or "
                "other valid authentication credential. See "
                "https://developers.google.com/identity/sign-in/web/devconsole-project.",
                [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason,
                  "domain": "googleapis.com", "metadata": meta}],
                [("WWW-Authenticate", 'Bearer realm="https://accounts.google.com/", error="invalid_token"')])
        return email

    def check_token(self, req, token, entry):
        """-> (email, None) or (None, ErrorInfo reason)."""
        now = time.time()
        if token.count(".") != 2:
            with self.lock:
                tok = self.tokens.get(token)
                if tok is None:
                    return None, "ACCESS_TOKEN_TYPE_UNSUPPORTED"
                email, exp = tok
                account = self.accounts.get(email)
                if exp <= now:
                    return None, "ACCESS_TOKEN_EXPIRED"
                if account is None or account["disabled"]:
                    return None, "ACCESS_TOKEN_TYPE_UNSUPPORTED"
            return email, None
        claims, problem = self.verify_jwt(token)
        if claims is None:
            return None, problem
        aud = claims.get("aud")
        scope = claims.get("scope")
        entry["jwt"] = {k: claims[k] for k in ("aud", "scope") if k in claims}
        auds = aud if isinstance(aud, list) else [aud]
        base = self.base_url(req)
        ok_aud = any(isinstance(a, str) and (a in SERVICE_AUDIENCES or a.rstrip("/") == base.rstrip("/")
                                             or a.rstrip("/") == self.public_base.rstrip("/")) for a in auds)
        ok_scope = isinstance(scope, str) and bool(set(scope.split()) & ACCEPTED_SCOPES)
        if not (ok_aud or ok_scope):
            return None, "ACCESS_TOKEN_TYPE_UNSUPPORTED"
        return claims["iss"], None

    def verify_jwt(self, token):
        """Signature, kid, iss/sub, iat/exp.  -> (claims, None) or (None, reason)."""
        try:
            h64, c64, s64 = token.split(".")
            header = json.loads(b64url_decode(h64))
            claims = json.loads(b64url_decode(c64))
            sig = b64url_decode(s64)
        except (ValueError, UnicodeDecodeError):
            return None, "ACCESS_TOKEN_TYPE_UNSUPPORTED"
        if not isinstance(header, dict) or not isinstance(claims, dict):
            return None, "ACCESS_TOKEN_TYPE_UNSUPPORTED"
        if header.get("alg") != "RS256" or not isinstance(header.get("kid"), str):
            return None, "ACCESS_TOKEN_TYPE_UNSUPPORTED"
        with self.lock:
            email = self.kid_owner.get(header["kid"])
            account = self.accounts.get(email) if email else None
            public = account["keys"].get(header["kid"]) if account else None
            disabled = account["disabled"] if account else True
        if public is None:
            return None, "ACCESS_TOKEN_TYPE_UNSUPPORTED"
        try:
            public.verify(sig, f"{h64}.{c64}".encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return None, "ACCESS_TOKEN_TYPE_UNSUPPORTED"
        if claims.get("iss") != email or claims.get("sub", email) != email:
            return None, "ACCESS_TOKEN_TYPE_UNSUPPORTED"
        iat, exp = claims.get("iat"), claims.get("exp")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (iat, exp)):
            return None, "ACCESS_TOKEN_TYPE_UNSUPPORTED"
        now = time.time()
        if exp <= now:
            return None, "ACCESS_TOKEN_EXPIRED"
        # Google's Rust client backdates iat (seen: exp - iat = 3620 s), so the hour of
        # lifetime is allowed the clock skew too.
        if iat > now + CLOCK_SKEW or exp - iat > MAX_JWT_LIFETIME + CLOCK_SKEW or exp <= iat:
            return None, "ACCESS_TOKEN_TYPE_UNSUPPORTED"
        if disabled:
            return None, "ACCESS_TOKEN_TYPE_UNSUPPORTED"
        return claims, None

    def token_endpoint(self, req, entry):
        """OAuth 2.0 JWT-bearer grant (RFC 7523), as oauth2.googleapis.com/token answers it."""
        def oauth_error(status, error, description):
            return json_response(status, {"error": error, "error_description": description}, google=True)

        if req.method != "POST":
            return oauth_error(405, "invalid_request", "Method not allowed.")
        try:
            form = {k: v[-1] for k, v in parse_qs(req.body.decode("utf-8"), keep_blank_values=True).items()}
        except (UnicodeDecodeError, ValueError):
            form = {}
        if form.get("grant_type") != JWT_BEARER:
            return oauth_error(400, "unsupported_grant_type", "Invalid grant_type: " + form.get("grant_type", ""))
        assertion = form.get("assertion", "")
        if assertion.count(".") != 2:
            return oauth_error(400, "invalid_grant", "Invalid JWT: Failed audience check.")
        try:
            header = json.loads(b64url_decode(assertion.split(".")[0]))
            unverified = json.loads(b64url_decode(assertion.split(".")[1]))
        except (ValueError, UnicodeDecodeError):
            return oauth_error(400, "invalid_grant", "Invalid JWT Signature.")
        iss = unverified.get("iss") if isinstance(unverified, dict) else None
        with self.lock:
            account = self.accounts.get(iss) if isinstance(iss, str) else None
        if account is None:
            return oauth_error(400, "invalid_grant", "Invalid grant: account not found")
        if account["disabled"]:
            return oauth_error(400, "invalid_grant", "Invalid grant: account disabled")
        if not isinstance(header, dict) or header.get("kid") not in account["keys"]:
            return oauth_error(400, "invalid_grant", "Invalid JWT Signature.")
        claims, problem = self.verify_jwt(assertion)
        if claims is None:
            if problem == "ACCESS_TOKEN_EXPIRED" or (isinstance(unverified.get("exp"), (int, float))
                                                   and isinstance(unverified.get("iat"), (int, float))):
                return oauth_error(400, "invalid_grant",
                                   "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable "
                                   "timeframe. Check your iat and exp values in the JWT claim.")
            return oauth_error(400, "invalid_grant", "Invalid JWT Signature.")
        aud = claims.get("aud")
        token_uri = self.base_url(req) + "/token"
        if aud not in (token_uri, self.public_base + "/token", "https://oauth2.googleapis.com/token"):
            return oauth_error(400, "invalid_grant", "Invalid JWT: Failed audience check.")
        entry["caller"] = iss
        token = "ya29.standin-" + secrets.token_urlsafe(48)
        now = time.time()
        with self.lock:
            for t, (_, exp) in list(self.tokens.items()):
                if exp < now - 3600:
                    del self.tokens[t]
            self.tokens[token] = (iss, now + TOKEN_LIFETIME)
        return json_response(200, {"access_token": token, "expires_in": TOKEN_LIFETIME, "token_type": "Bearer"},
                             [("Cache-Control", "no-cache, no-store, max-age=0, must-revalidate")], google=True)

    # ------------------------------------------------------------------ IAM

    def permissions_of(self, email, resource):
        """The permissions `email` holds on `resource` (bindings inherited from its parents, minus denies)."""
        member = f"serviceAccount:{email}"
        held, denied = set(), set()
        with self.lock:
            for res in ancestors(resource):
                for role, members in self.iam.get(res, {}).items():
                    if member in members or "allAuthenticatedUsers" in members:
                        held |= ROLES.get(role, set())
                denied |= self.denies.get(res, {}).get(member, set())
        return held - denied

    def require(self, email, permission, resource):
        if permission not in self.permissions_of(email, resource):
            raise permission_denied(permission, resource)

    # ------------------------------------------------------------------ state

    def tick(self, key, now=None):
        """Applies the transitions time makes (lock held): scheduled destruction, automatic rotation."""
        now = time.time() if now is None else now
        for v in key["versions"]:
            if v["state"] == "DESTROY_SCHEDULED" and v["destroyTime"] is not None and v["destroyTime"] <= now:
                v["state"] = "DESTROYED"
                v["material"] = None
                v["destroyEventTime"] = v["destroyTime"]
        if key["rotationPeriod"] and key["nextRotationTime"] is not None and key["nextRotationTime"] <= now:
            self.add_version(key, make_primary=True, now=key["nextRotationTime"])
            nxt = key["nextRotationTime"]
            while nxt <= now:
                nxt += key["rotationPeriod"]
            key["nextRotationTime"] = nxt

    def add_version(self, key, make_primary=True, now=None, state="ENABLED"):
        now = time.time() if now is None else now
        number = len(key["versions"]) + 1
        v = {
            "number": number,
            "state": state,
            "protectionLevel": key["protectionLevel"],
            "algorithm": key["algorithm"],
            "createTime": now,
            "generateTime": now,
            "destroyTime": None,
            "destroyEventTime": None,
            "material": os.urandom(32) if key["purpose"] in ("ENCRYPT_DECRYPT", "RAW_ENCRYPT_DECRYPT") else None,
        }
        key["versions"].append(v)
        if make_primary and key["purpose"] == "ENCRYPT_DECRYPT":
            key["primary"] = number
        return v

    def version_json(self, key, v):
        out = {
            "name": f"{key['name']}/cryptoKeyVersions/{v['number']}",
            "state": v["state"],
            "createTime": rfc3339(v["createTime"]),
            "protectionLevel": v["protectionLevel"],
            "algorithm": v["algorithm"],
            "generateTime": rfc3339(v["generateTime"]),
        }
        if v["state"] == "DESTROY_SCHEDULED" and v["destroyTime"] is not None:
            out["destroyTime"] = rfc3339(v["destroyTime"])
        if v["state"] == "DESTROYED":
            if v["destroyTime"] is not None:
                out["destroyTime"] = rfc3339(v["destroyTime"])
            out["destroyEventTime"] = rfc3339(v["destroyEventTime"])
        return out

    def key_json(self, key):
        out = {"name": key["name"]}
        if key["purpose"] == "ENCRYPT_DECRYPT" and key["primary"] is not None:
            out["primary"] = self.version_json(key, key["versions"][key["primary"] - 1])
        out["purpose"] = key["purpose"]
        out["createTime"] = rfc3339(key["createTime"])
        if key["rotationPeriod"]:
            out["nextRotationTime"] = rfc3339(key["nextRotationTime"])
            out["rotationPeriod"] = fmt_duration(key["rotationPeriod"])
        out["versionTemplate"] = {"protectionLevel": key["protectionLevel"], "algorithm": key["algorithm"]}
        out["destroyScheduledDuration"] = fmt_duration(key["destroyScheduledDuration"])
        return out

    # ------------------------------------------------------------------ Cloud KMS API

    def api(self, req, entry):
        path = req.path[len("/v1/"):].rstrip("/")
        verb = None
        last = path.rsplit("/", 1)[-1]
        if ":" in last:
            path, verb = path.rsplit(":", 1)
        n = parse_name(path)
        if n is None:
            raise ApiError("NOT_FOUND", "Method not found.")

        kind = n["kind"]
        if verb is None:
            route = {("GET", "keyRing"): ("GetKeyRing", "getKeyRing"),
                     ("GET", "cryptoKey"): ("GetCryptoKey", "getCryptoKey"),
                     ("GET", "cryptoKeyVersion"): ("GetCryptoKeyVersion", "getCryptoKeyVersion"),
                     ("GET", "versions"): ("ListCryptoKeyVersions", "listCryptoKeyVersions")}.get((req.method, kind))
        else:
            route = {("POST", "cryptoKey", "encrypt"): ("Encrypt", "encrypt"),
                     ("POST", "cryptoKeyVersion", "encrypt"): ("Encrypt", "encrypt"),
                     ("POST", "cryptoKey", "decrypt"): ("Decrypt", "decrypt"),
                     ("POST", "cryptoKey", "testIamPermissions"): ("TestIamPermissions", "testIamPermissions"),
                     ("POST", "keyRing", "testIamPermissions"): ("TestIamPermissions", "testIamPermissions"),
                     }.get((req.method, kind, verb))
        if route is None:
            if verb in UNIMPLEMENTED_VERBS:
                raise ApiError("UNIMPLEMENTED", f"The Cloud KMS stand-in does not implement '{verb}'.")
            raise ApiError("NOT_FOUND", "Method not found.")
        method_name, op = route
        entry["operation"] = op

        # Delay and fault: per location, then per key (the time-out and outage knobs).
        loc = f"projects/{n['project']}/locations/{n['location']}"
        with self.lock:
            lset = dict(self.locations.get(loc) or {})
            key = self.keys.get(key_name(n)) if "key" in n else None
            kdelay = key["delay_seconds"] if key else 0.0
            kfault = key["fault"] if key else None
        delay = float(lset.get("delay_seconds") or 0.0) + float(kdelay or 0.0)
        if delay > 0:
            time.sleep(delay)
        fault = lset.get("fault") or kfault
        if fault:
            return fault_response(fault)

        email = self.authenticate(req, method_name, entry)
        entry["caller"] = email
        body = self.json_body(req) if req.method == "POST" else None

        if op == "getKeyRing":
            return self.get_key_ring(email, n)
        if op == "testIamPermissions":
            return self.test_iam_permissions(email, n, body)
        if op == "getCryptoKey":
            return self.get_crypto_key(email, n)
        if op == "getCryptoKeyVersion":
            return self.get_crypto_key_version(email, n)
        if op == "listCryptoKeyVersions":
            return self.list_versions(email, n, req)
        if op == "encrypt":
            return self.encrypt(email, n, body)
        return self.decrypt(email, n, body)

    def json_body(self, req):
        if not req.body.strip():
            return {}
        try:
            body = json.loads(req.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise bad_field("", f"Invalid JSON payload received. {e}.")
        if not isinstance(body, dict):
            raise bad_field("", "Invalid JSON payload received. Expected an object.")
        return body

    def _resolve_key(self, n, email, permission, resource):
        """Permission first (so a missing key the caller cannot see is a 403), then existence."""
        self.require(email, permission, resource)
        with self.lock:
            if ring_name(n) not in self.rings:
                raise ApiError("NOT_FOUND", f"KeyRing {ring_name(n)} not found.")
            key = self.keys.get(key_name(n))
            if key is None:
                raise ApiError("NOT_FOUND", f"CryptoKey {key_name(n)} not found.")
            self.tick(key)
            return key

    def _version_of(self, key, label):
        if not re.fullmatch(r"[1-9][0-9]{0,9}", label) or int(label) > len(key["versions"]):
            raise ApiError("NOT_FOUND", f"CryptoKeyVersion {key['name']}/cryptoKeyVersions/{label} not found.")
        return key["versions"][int(label) - 1]

    def get_key_ring(self, email, n):
        name = ring_name(n)
        self.require(email, P_RING_GET, name)
        with self.lock:
            ring = self.rings.get(name)
            if ring is None:
                raise ApiError("NOT_FOUND", f"KeyRing {name} not found.")
            return json_response(200, {"name": name, "createTime": rfc3339(ring["createTime"])}, google=True)

    def get_crypto_key(self, email, n):
        key = self._resolve_key(n, email, P_KEY_GET, key_name(n))
        with self.lock:
            return json_response(200, self.key_json(key), google=True)

    def get_crypto_key_version(self, email, n):
        name = f"{key_name(n)}/cryptoKeyVersions/{n['version']}"
        key = self._resolve_key(n, email, P_VERSION_GET, name)
        with self.lock:
            return json_response(200, self.version_json(key, self._version_of(key, n["version"])), google=True)

    def list_versions(self, email, n, req):
        key = self._resolve_key(n, email, P_VERSION_LIST, key_name(n))
        try:
            size = int(req.query.get("pageSize") or 0)
            start = int(req.query.get("pageToken") or 0)
        except ValueError:
            raise ApiError("INVALID_ARGUMENT", "Invalid pageSize or pageToken.")
        if size < 0 or start < 0:
            raise ApiError("INVALID_ARGUMENT", "Invalid pageSize or pageToken.")
        flt = (req.query.get("filter") or "").strip()
        want = None
        negate = False
        if flt:
            m = re.fullmatch(r'(NOT\s+)?state\s*[=:]\s*"?([A-Z_]+)"?', flt)
            if not m or m.group(2) not in STATES:
                raise ApiError("INVALID_ARGUMENT", f"Invalid filter: {flt} (the stand-in supports state=STATE "
                               "and NOT state=STATE only).")
            negate, want = bool(m.group(1)), m.group(2)
        size = min(size or 1000, 1000)
        with self.lock:
            items = [v for v in key["versions"] if want is None or ((v["state"] == want) != negate)]
            page = items[start:start + size]
            out = {}
            if page:
                out["cryptoKeyVersions"] = [self.version_json(key, v) for v in page]
            if start + size < len(items):
                out["nextPageToken"] = str(start + size)
            out["totalSize"] = len(items)
        return json_response(200, out, google=True)

    def test_iam_permissions(self, email, n, body):
        resource = key_name(n) if n["kind"] == "cryptoKey" else ring_name(n)
        perms = body.get("permissions", [])
        if not isinstance(perms, list) or not all(isinstance(p, str) for p in perms):
            raise bad_field("permissions", "Invalid value at 'permissions' (TYPE_STRING).")
        for p in perms:
            if "*" in p:
                raise ApiError("INVALID_ARGUMENT",
                               "Permissions with wildcards (such as '*' or 'storage.*') are not allowed.")
        with self.lock:
            if ring_name(n) not in self.rings:
                raise ApiError("NOT_FOUND", f"KeyRing {ring_name(n)} not found.")
            if n["kind"] == "cryptoKey" and resource not in self.keys:
                raise ApiError("NOT_FOUND", f"CryptoKey {resource} not found.")
        held = self.permissions_of(email, resource)
        granted = [p for p in dict.fromkeys(perms) if p in held]
        return json_response(200, {"permissions": granted} if granted else {}, google=True)

    # --- encrypt / decrypt

    def _bytes_field(self, body, camel, snake):
        value = body.get(camel, body.get(snake))
        if value is None or value == "":
            return b""
        try:
            return proto_bytes(value)
        except ValueError:
            shown = value if isinstance(value, str) else json.dumps(value)
            raise bad_field(snake, f"Invalid value at '{snake}' (TYPE_BYTES), Base64 decoding failed for "
                                   f"\"{shown[:64]}\"")

    def _crc_field(self, body, camel, snake):
        value = body.get(camel, body.get(snake))
        if value is None:
            return None
        if isinstance(value, dict):  # {"value": ...} is tolerated
            value = value.get("value")
        try:
            if isinstance(value, bool):
                raise ValueError()
            iv = int(value)
            if isinstance(value, float) and not value.is_integer():
                raise ValueError()
        except (TypeError, ValueError):
            raise bad_field(snake, f"Invalid value at '{snake}' (type.googleapis.com/google.protobuf.Int64Value), "
                                   f"{json.dumps(value)}")
        return iv

    def _check_fields(self, body, allowed):
        for k in body:
            if k not in allowed:
                raise bad_field(k, f"Invalid JSON payload received. Unknown name \"{k}\": Cannot find field.")

    def encrypt(self, email, n, body):
        self._check_fields(body, {"name", "plaintext", "additionalAuthenticatedData", "additional_authenticated_data",
                                  "plaintextCrc32c", "plaintext_crc32c", "additionalAuthenticatedDataCrc32c",
                                  "additional_authenticated_data_crc32c"})
        # Decoding the JSON (base64, int64) happens in Google's front end, before IAM; the rest after.
        plaintext = self._bytes_field(body, "plaintext", "plaintext")
        aad = self._bytes_field(body, "additionalAuthenticatedData", "additional_authenticated_data")
        pt_crc = self._crc_field(body, "plaintextCrc32c", "plaintext_crc32c")
        aad_crc = self._crc_field(body, "additionalAuthenticatedDataCrc32c", "additional_authenticated_data_crc32c")
        resource = key_name(n) if n["kind"] == "cryptoKey" else f"{key_name(n)}/cryptoKeyVersions/{n['version']}"
        key = self._resolve_key(n, email, P_ENCRYPT, resource)
        if not plaintext:
            raise bad_field("plaintext", "plaintext is required.")
        if pt_crc is not None and crc32c(plaintext) != pt_crc:
            raise ApiError("INVALID_ARGUMENT",
                           "The checksum in field plaintext_crc32c did not match the data in field plaintext.")
        if aad_crc is not None and crc32c(aad) != aad_crc:
            raise ApiError("INVALID_ARGUMENT", "The checksum in field additional_authenticated_data_crc32c did not "
                                               "match the data in field additional_authenticated_data.")
        with self.lock:
            if key["purpose"] != "ENCRYPT_DECRYPT":
                raise ApiError("FAILED_PRECONDITION", f"{key['name']} has purpose {key['purpose']}, but Encrypt "
                                                      "requires a CryptoKey with purpose ENCRYPT_DECRYPT.")
            if n["kind"] == "cryptoKeyVersion":
                v = self._version_of(key, n["version"])
            else:
                if key["primary"] is None:
                    raise ApiError("FAILED_PRECONDITION", f"{key['name']} has no primary CryptoKeyVersion.")
                v = key["versions"][key["primary"] - 1]
            vname = f"{key['name']}/cryptoKeyVersions/{v['number']}"
            if v["state"] != "ENABLED":
                raise not_enabled(vname, v["state"])
            material, number, tag, level = v["material"], v["number"], key["tag"], v["protectionLevel"]
        if len(plaintext) > MAX_PLAINTEXT:
            raise ApiError("INVALID_ARGUMENT", f"The plaintext must be no larger than {MAX_PLAINTEXT} bytes.")
        if len(aad) > MAX_AAD:
            raise ApiError("INVALID_ARGUMENT", f"The additional authenticated data must be no larger than {MAX_AAD} "
                                               "bytes.")
        if level == "HSM" and len(plaintext) + len(aad) > MAX_HSM_INPUT:
            raise ApiError("INVALID_ARGUMENT", "For HSM keys the plaintext and additional authenticated data together "
                                               f"must be no larger than {MAX_HSM_INPUT} bytes.")
        header = bytes([CT_FORMAT]) + tag + number.to_bytes(4, "big")
        nonce = os.urandom(CT_NONCE)
        ciphertext = header + nonce + AESGCM(material).encrypt(nonce, plaintext, header + aad)
        out = {
            "name": vname,
            "ciphertext": b64(ciphertext),
            "ciphertextCrc32c": int64_json(crc32c(ciphertext)),
        }
        if pt_crc is not None:
            out["verifiedPlaintextCrc32c"] = True
        if aad_crc is not None:
            out["verifiedAdditionalAuthenticatedDataCrc32c"] = True
        out["protectionLevel"] = level
        return json_response(200, out, google=True)

    def decrypt(self, email, n, body):
        self._check_fields(body, {"name", "ciphertext", "additionalAuthenticatedData", "additional_authenticated_data",
                                  "ciphertextCrc32c", "ciphertext_crc32c", "additionalAuthenticatedDataCrc32c",
                                  "additional_authenticated_data_crc32c"})
        ciphertext = self._bytes_field(body, "ciphertext", "ciphertext")
        aad = self._bytes_field(body, "additionalAuthenticatedData", "additional_authenticated_data")
        ct_crc = self._crc_field(body, "ciphertextCrc32c", "ciphertext_crc32c")
        aad_crc = self._crc_field(body, "additionalAuthenticatedDataCrc32c", "additional_authenticated_data_crc32c")
        key = self._resolve_key(n, email, P_DECRYPT, key_name(n))
        if not ciphertext:
            raise bad_field("ciphertext", "ciphertext is required.")
        if ct_crc is not None and crc32c(ciphertext) != ct_crc:
            raise ApiError("INVALID_ARGUMENT",
                           "The checksum in field ciphertext_crc32c did not match the data in field ciphertext.")
        if aad_crc is not None and crc32c(aad) != aad_crc:
            raise ApiError("INVALID_ARGUMENT", "The checksum in field additional_authenticated_data_crc32c did not "
                                               "match the data in field additional_authenticated_data.")
        if len(aad) > MAX_AAD:
            raise ApiError("INVALID_ARGUMENT", f"The additional authenticated data must be no larger than {MAX_AAD} "
                                               "bytes.")
        with self.lock:
            if key["purpose"] != "ENCRYPT_DECRYPT":
                raise ApiError("FAILED_PRECONDITION", f"{key['name']} has purpose {key['purpose']}, but Decrypt "
                                                      "requires a CryptoKey with purpose ENCRYPT_DECRYPT.")
            if (len(ciphertext) < CT_MIN or ciphertext[0] != CT_FORMAT or ciphertext[1:9] != key["tag"]):
                raise ApiError("INVALID_ARGUMENT", DECRYPTION_FAILED)
            number = int.from_bytes(ciphertext[9:13], "big")
            if number < 1 or number > len(key["versions"]):
                raise ApiError("INVALID_ARGUMENT", DECRYPTION_FAILED)
            v = key["versions"][number - 1]
            vname = f"{key['name']}/cryptoKeyVersions/{number}"
            if v["state"] != "ENABLED":
                raise not_enabled(vname, v["state"])
            material, level, used_primary = v["material"], v["protectionLevel"], key["primary"] == number
        header, nonce, sealed = ciphertext[:CT_HEADER], ciphertext[CT_HEADER:CT_HEADER + CT_NONCE], \
            ciphertext[CT_HEADER + CT_NONCE:]
        try:
            plaintext = AESGCM(material).decrypt(nonce, sealed, header + aad)
        except InvalidTag:
            raise ApiError("INVALID_ARGUMENT", DECRYPTION_FAILED)
        out = {"plaintext": b64(plaintext), "plaintextCrc32c": int64_json(crc32c(plaintext))}
        if used_primary:
            out["usedPrimary"] = True
        out["protectionLevel"] = level
        return json_response(200, out, google=True)

    # ------------------------------------------------------------------ control API

    def control(self, req, rest):
        try:
            return self._control(req, rest)
        except ClientError as e:
            return json_response(e.status, {"error": e.message})

    def _body(self, req):
        if not req.body.strip():
            return {}
        try:
            body = json.loads(req.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise ClientError(400, "request body is not valid JSON")
        if not isinstance(body, dict):
            raise ClientError(400, "request body must be a JSON object")
        return body

    def _control(self, req, rest):
        m = req.method
        rest = rest.strip("/")
        verb = None
        if ":" in rest.rsplit("/", 1)[-1]:
            rest, verb = rest.rsplit(":", 1)
        segs = rest.split("/") if rest else []

        if segs == ["health"] and m == "GET" and verb is None:
            return json_response(200, {"ok": True})
        if segs == ["requests"] and verb is None and m in ("GET", "DELETE"):
            with self.lock:
                out = list(self.requests)
                if m == "DELETE":
                    self.requests.clear()
            return json_response(200, out)
        if segs and segs[0] == "serviceAccounts":
            return self.control_accounts(req, segs[1:], verb)
        if segs == ["cryptoKeys"] and m == "POST" and verb is None:
            return self.control_create_key(req)
        if segs and segs[0] == "projects":
            return self.control_resource(req, "/".join(segs), verb)
        raise ClientError(404, f"no control route {m} /_control/{req.path[len('/_control/'):]}")

    # --- service accounts

    def control_accounts(self, req, segs, verb):
        m = req.method
        if not segs and m == "POST" and verb is None:
            b = self._body(req)
            project = _opt_str(b, "project", "standin-project")
            if not PROJECT_RE.match(project):
                raise ClientError(400, "project must be a Google Cloud project id (6-30 characters: a-z, 0-9, -)")
            name = _opt_str(b, "name", "sa-" + secrets.token_hex(5))
            if not ACCOUNT_RE.match(name):
                raise ClientError(400, "name must be 6-30 characters: a-z, 0-9, - (starting with a letter)")
            email = f"{name}@{project}.iam.gserviceaccount.com"
            with self.lock:
                if email in self.accounts:
                    raise ClientError(409, f"service account {email} already exists")
                self.accounts[email] = {"project": project, "client_id": str(10**20 + secrets.randbelow(9 * 10**20)),
                                        "disabled": False, "keys": {}}
            return json_response(200, self.new_key_file(req, email))
        if not segs:
            raise ClientError(404, "no such control route")
        email = unquote(segs[0])
        with self.lock:
            account = self.accounts.get(email)
        if account is None:
            raise ClientError(404, f"no service account {email}")
        if len(segs) == 1 and verb is None and m in ("GET", "PATCH"):
            if m == "PATCH":
                b = self._body(req)
                if "disabled" in b:
                    with self.lock:
                        account["disabled"] = _opt_bool(b, "disabled", False)
            with self.lock:
                return json_response(200, {"email": email, "project": account["project"],
                                           "client_id": account["client_id"], "disabled": account["disabled"],
                                           "keys": sorted(account["keys"])})
        if len(segs) == 2 and segs[1] == "keys" and m == "POST" and verb is None:
            return json_response(200, self.new_key_file(req, email))
        if len(segs) == 3 and segs[1] == "keys" and m == "DELETE" and verb is None:
            kid = segs[2]
            with self.lock:
                if kid not in account["keys"]:
                    raise ClientError(404, f"no key {kid} for {email}")
                del account["keys"][kid]
                self.kid_owner.pop(kid, None)
            return json_response(200, {"deleted": kid})
        raise ClientError(404, "no such control route")

    def new_key_file(self, req, email):
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        kid = secrets.token_hex(20)
        pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode("ascii")
        with self.lock:
            account = self.accounts[email]
            account["keys"][kid] = private.public_key()
            self.kid_owner[kid] = email
            project, client_id = account["project"], account["client_id"]
        base = self.base_url(req)
        return {
            "type": "service_account",
            "project_id": project,
            "private_key_id": kid,
            "private_key": pem,
            "client_email": email,
            "client_id": client_id,
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": f"{base}/token",
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/" + email.replace("@", "%40"),
            "universe_domain": "googleapis.com",
        }

    # --- keys

    def control_create_key(self, req):
        b = self._body(req)
        project = _req_str(b, "project")
        location = _req_str(b, "location")
        ring = _req_str(b, "keyRing")
        kname = _req_str(b, "key")
        for label, value in (("project", project), ("location", location), ("keyRing", ring), ("key", kname)):
            if not NAME_RE.match(value):
                raise ClientError(400, f"{label} must be 1-63 characters: letters, digits, _ and -")
        purpose = _opt_str(b, "purpose", "ENCRYPT_DECRYPT")
        if purpose not in PURPOSES:
            raise ClientError(400, f"purpose must be one of {sorted(PURPOSES)}")
        default_alg, algs = PURPOSES[purpose]
        algorithm = _opt_str(b, "algorithm", default_alg)
        if algorithm not in algs:
            raise ClientError(400, f"algorithm for {purpose} must be one of {sorted(algs)}")
        level = _opt_str(b, "protectionLevel", "SOFTWARE")
        if level not in PROTECTION_LEVELS:
            raise ClientError(400, f"protectionLevel must be one of {sorted(PROTECTION_LEVELS)}")
        now = time.time()
        rotation = _opt_duration(b, "rotationPeriod")
        if rotation is not None and purpose != "ENCRYPT_DECRYPT":
            raise ClientError(400, "only ENCRYPT_DECRYPT keys rotate automatically")
        nrt = _opt_timestamp(b, "nextRotationTime")
        if rotation is not None and rotation <= 0:
            raise ClientError(400, "rotationPeriod must be positive")
        if nrt is not None and rotation is None:
            raise ClientError(400, "nextRotationTime needs rotationPeriod")
        dsd = _opt_duration(b, "destroyScheduledDuration")
        delay = _opt_delay(b)
        versions = b.get("versions", 1)
        if isinstance(versions, bool) or not isinstance(versions, int) or not 0 <= versions <= 100:
            raise ClientError(400, "versions must be an integer 0-100")
        name = f"projects/{project}/locations/{location}/keyRings/{ring}/cryptoKeys/{kname}"
        key = {
            "name": name, "purpose": purpose, "algorithm": algorithm, "protectionLevel": level,
            "createTime": now, "rotationPeriod": rotation,
            "nextRotationTime": (nrt if nrt is not None else now + rotation) if rotation else None,
            "destroyScheduledDuration": DEFAULT_DESTROY_SCHEDULED if dsd is None else dsd,
            "versions": [], "primary": None, "tag": os.urandom(8), "delay_seconds": delay, "fault": None,
        }
        for _ in range(versions):
            self.add_version(key, make_primary=True, now=now)
        with self.lock:
            if name in self.keys:
                raise ClientError(409, f"CryptoKey {name} already exists")
            rname = name.rsplit("/cryptoKeys/", 1)[0]
            self.rings.setdefault(rname, {"createTime": now})
            self.keys[name] = key
            for binding in _bindings(b):
                self.iam.setdefault(name, {}).setdefault(binding[0], set()).add(binding[1])
            return json_response(200, self.key_state(key))

    def key_state(self, key):
        self.tick(key)
        state = self.key_json(key)
        state["primaryVersion"] = key["primary"]
        state["versions"] = [self.version_json(key, v) for v in key["versions"]]
        state["delay_seconds"] = key["delay_seconds"]
        state["fault"] = key["fault"]
        state["iam"] = {role: sorted(ms) for role, ms in sorted(self.iam.get(key["name"], {}).items()) if ms}
        state["denies"] = {mem: sorted(ps) for mem, ps in sorted(self.denies.get(key["name"], {}).items()) if ps}
        return state

    def control_resource(self, req, name, verb):
        m = req.method
        n = parse_name(name)
        if n is None and re.fullmatch(r"projects/[^/]+", name):
            n = {"kind": "project"}
        if n is None:
            raise ClientError(404, f"not a resource name: {name}")
        kind = n["kind"]

        if verb in ("addIamMember", "removeIamMember") and m == "POST":
            if kind not in ("project", "keyRing", "cryptoKey"):
                raise ClientError(400, "IAM bindings go on a project, a key ring or a key")
            self._require_exists(n, name)
            b = self._body(req)
            role = _req_str(b, "role")
            if role not in ROLES:
                raise ClientError(400, f"role must be one of {sorted(ROLES)}")
            member = _member(_req_str(b, "member"))
            with self.lock:
                members = self.iam.setdefault(name, {}).setdefault(role, set())
                if verb == "addIamMember":
                    members.add(member)
                else:
                    members.discard(member)
                return json_response(200, {"resource": name, "bindings": [
                    {"role": r, "members": sorted(ms)} for r, ms in sorted(self.iam[name].items()) if ms]})
        if verb == "deny" and m == "POST":
            if kind not in ("project", "keyRing", "cryptoKey"):
                raise ClientError(400, "denies go on a project, a key ring or a key")
            self._require_exists(n, name)
            b = self._body(req)
            member = _member(_req_str(b, "member"))
            perms = set(_str_list(b, "permissions", []))
            for op in _str_list(b, "operations", []):
                if op not in OPERATIONS:
                    raise ClientError(400, f"unknown operation '{op}' (known: {sorted(OPERATIONS)})")
                perms.add(OPERATIONS[op])
            with self.lock:
                self.denies.setdefault(name, {})[member] = perms
                return json_response(200, {"resource": name, "denies": {
                    mem: sorted(ps) for mem, ps in sorted(self.denies[name].items()) if ps}})

        if kind == "location" and verb is None and m in ("GET", "PATCH"):
            with self.lock:
                lset = self.locations.setdefault(name, {"delay_seconds": 0.0, "fault": None})
            if m == "PATCH":
                b = self._body(req)
                updates = {}
                if "delay_seconds" in b:
                    updates["delay_seconds"] = _opt_delay(b)
                if "fault" in b:
                    updates["fault"] = _fault(b["fault"])
                with self.lock:
                    lset.update(updates)
            with self.lock:
                return json_response(200, dict(lset, name=name))

        if kind == "cryptoKey":
            with self.lock:
                key = self.keys.get(name)
            if key is None:
                raise ClientError(404, f"no CryptoKey {name}")
            if verb is None and m in ("GET", "PATCH"):
                if m == "PATCH":
                    self._patch_key(key, self._body(req))
                with self.lock:
                    return json_response(200, self.key_state(key))
            if verb == "rotate" and m == "POST":
                b = self._body(req)
                primary = _opt_bool(b, "primary", True)
                with self.lock:
                    self.tick(key)
                    self.add_version(key, make_primary=primary)
                    return json_response(200, self.key_state(key))
            if verb == "setPrimary" and m == "POST":
                b = self._body(req)
                number = b.get("version")
                if isinstance(number, str) and number.isdigit():
                    number = int(number)
                if isinstance(number, bool) or not isinstance(number, int):
                    raise ClientError(400, "version must be a version number")
                with self.lock:
                    if key["purpose"] != "ENCRYPT_DECRYPT":
                        raise ClientError(400, "only ENCRYPT_DECRYPT keys have a primary version")
                    if not 1 <= number <= len(key["versions"]):
                        raise ClientError(404, f"no version {number}")
                    key["primary"] = number
                    return json_response(200, self.key_state(key))
        if kind == "cryptoKeyVersion" and m == "POST" and verb in (
                "enable", "disable", "scheduleDestroy", "destroy", "restore"):
            with self.lock:
                key = self.keys.get(key_name(n))
                if key is None:
                    raise ClientError(404, f"no CryptoKey {key_name(n)}")
                label = n["version"]
                if not label.isdigit() or not 1 <= int(label) <= len(key["versions"]):
                    raise ClientError(404, f"no version {label}")
                self.tick(key)
                v = key["versions"][int(label) - 1]
                self._transition(key, v, verb)
                return json_response(200, self.version_json(key, v))
        raise ClientError(404, f"no control route {m} /_control/{name}{':' + verb if verb else ''}")

    def _require_exists(self, n, name):
        with self.lock:
            if n["kind"] == "keyRing" and name not in self.rings:
                raise ClientError(404, f"no KeyRing {name}")
            if n["kind"] == "cryptoKey" and name not in self.keys:
                raise ClientError(404, f"no CryptoKey {name}")

    def _patch_key(self, key, b):
        updates = {}
        if "delay_seconds" in b:
            updates["delay_seconds"] = _opt_delay(b)
        if "fault" in b:
            updates["fault"] = _fault(b["fault"])
        if "destroyScheduledDuration" in b:
            d = _opt_duration(b, "destroyScheduledDuration")
            updates["destroyScheduledDuration"] = DEFAULT_DESTROY_SCHEDULED if d is None else d
        if "purpose" in b:
            raise ClientError(400, "a key's purpose cannot change (create another key)")
        with self.lock:
            if "rotationPeriod" in b:
                rot = _opt_duration(b, "rotationPeriod")
                if rot is not None and (rot <= 0 or key["purpose"] != "ENCRYPT_DECRYPT"):
                    raise ClientError(400, "rotationPeriod must be positive, on an ENCRYPT_DECRYPT key")
                updates["rotationPeriod"] = rot
                if rot is None:
                    updates["nextRotationTime"] = None
                elif "nextRotationTime" not in b:
                    updates["nextRotationTime"] = time.time() + rot
            if "nextRotationTime" in b:
                nrt = _opt_timestamp(b, "nextRotationTime")
                if nrt is not None and not (updates.get("rotationPeriod", key["rotationPeriod"])):
                    raise ClientError(400, "nextRotationTime needs rotationPeriod")
                updates["nextRotationTime"] = nrt
            key.update(updates)

    def _transition(self, key, v, verb):
        """Version state changes, with Cloud KMS's rules (lock held)."""
        state = v["state"]
        now = time.time()
        if verb == "enable":
            if state not in ("ENABLED", "DISABLED"):
                raise ClientError(409, f"cannot enable a version in state {state} (restore it first)")
            v["state"] = "ENABLED"
        elif verb == "disable":
            if state not in ("ENABLED", "DISABLED"):
                raise ClientError(409, f"cannot disable a version in state {state}")
            v["state"] = "DISABLED"
        elif verb == "scheduleDestroy":
            if state not in ("ENABLED", "DISABLED"):
                raise ClientError(409, f"cannot schedule destruction of a version in state {state}")
            v["state"] = "DESTROY_SCHEDULED"
            v["destroyTime"] = now + key["destroyScheduledDuration"]
        elif verb == "restore":
            if state != "DESTROY_SCHEDULED":
                raise ClientError(409, f"only a DESTROY_SCHEDULED version can be restored (state {state})")
            v["state"] = "DISABLED"
            v["destroyTime"] = None
        elif verb == "destroy":  # a shortcut Cloud KMS does not have: destroyed now
            if state != "DESTROYED":
                v["state"] = "DESTROYED"
                if v["destroyTime"] is None:
                    v["destroyTime"] = now
                v["destroyEventTime"] = now
                v["material"] = None


def fault_response(fault):
    if fault.get("body") is not None:
        return Response(fault["status"], fault["body"].encode("utf-8"), [("Content-Type", "text/html; charset=UTF-8")])
    status, message = FAULT_STATUS.get(fault["status"], ("UNKNOWN", "Unknown error."))
    err = {"code": fault["status"], "message": message, "status": status}
    return json_response(fault["status"], {"error": err}, google=True)


def _fault(f):
    if f is None:
        return None
    if not (isinstance(f, dict) and isinstance(f.get("status"), int) and not isinstance(f.get("status"), bool)
            and 400 <= f["status"] <= 599):
        raise ClientError(400, "fault must be null or {status: 400-599, body?: string}")
    body = f.get("body")
    if body is not None and not isinstance(body, str):
        raise ClientError(400, "fault.body must be a string")
    return {"status": f["status"], "body": body}


def _member(value):
    if value == "allAuthenticatedUsers" or ":" in value:
        return value
    return f"serviceAccount:{value}"


def _bindings(b):
    out = []
    bindings = b.get("bindings", [])
    if not isinstance(bindings, list):
        raise ClientError(400, "bindings must be a list of {role, members}")
    for item in bindings:
        if not isinstance(item, dict) or item.get("role") not in ROLES:
            raise ClientError(400, f"each binding needs a role among {sorted(ROLES)}")
        for member in _str_list(item, "members", []):
            out.append((item["role"], _member(member)))
    return out


def _req_str(b, field):
    v = b.get(field)
    if not isinstance(v, str) or not v:
        raise ClientError(400, f"'{field}' must be a non-empty string")
    return v


def _opt_str(b, field, default):
    v = b.get(field)
    if v is None:
        return default
    if not isinstance(v, str) or not v:
        raise ClientError(400, f"'{field}' must be a non-empty string")
    return v


def _opt_bool(b, field, default):
    v = b.get(field)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise ClientError(400, f"'{field}' must be true or false")
    return v


def _opt_delay(b):
    v = b.get("delay_seconds")
    if v is None:
        return 0.0
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or v > 600:
        raise ClientError(400, "'delay_seconds' must be a number between 0 and 600")
    return float(v)


def _opt_duration(b, field):
    v = b.get(field)
    if v is None:
        return None
    try:
        return duration_seconds(v)
    except ValueError:
        raise ClientError(400, f"'{field}' must be a duration such as \"7776000s\" (or a number of seconds)")


def _opt_timestamp(b, field):
    v = b.get(field)
    if v is None:
        return None
    try:
        return parse_time(v)
    except ValueError:
        raise ClientError(400, f"'{field}' must be an RFC 3339 time or unix seconds")


def _str_list(b, field, default):
    v = b.get(field, default)
    if v is None:
        return list(default)
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        raise ClientError(400, f"'{field}' must be a list of non-empty strings")
    return list(v)


# ---------------------------------------------------------------------------- server


class BodyTooLarge(Exception):
    pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ESF"
    sys_version = ""
    timeout = 120  # idle keep-alive connections are closed after this many seconds

    def log_message(self, format, *args):  # quiet: no per-request logging
        pass

    def version_string(self):
        return self.server_version

    def _read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks, total = [], 0
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY:
                    raise BodyTooLarge()
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0 or length > MAX_BODY:
            raise BodyTooLarge()
        return self.rfile.read(length) if length else b""

    def _serve(self):
        try:
            body = self._read_body()
        except (BodyTooLarge, ValueError):
            self.close_connection = True
            resp = json_response(413, {"error": {
                "code": 413, "message": f"Request payload size exceeds the limit: {MAX_BODY} bytes.",
                "status": "INVALID_ARGUMENT"}}, google=True)
        else:
            try:
                resp = self.server.app.handle(Request(self.command, self.path, self.headers, body))
            except Exception:  # never a traceback to the client
                sys.stderr.write(f"standin: error handling {self.command} {self.path.split('?')[0]}\n")
                traceback.print_exc()
                resp = ApiError("INTERNAL", "Internal error encountered.").response()
        self.send_response(resp.status)
        for k, v in resp.headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(resp.body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(resp.body)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = do_HEAD = _serve


class StandInServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address, app):
        super().__init__(address, Handler)
        self.app = app

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return  # the client went away (a time-out test, for example)
        sys.stderr.write(f"standin: connection error from {client_address[0]}\n")
        traceback.print_exc()


def main(argv=None):
    ap = argparse.ArgumentParser(description="Google Cloud KMS REST test stand-in (not Google Cloud).")
    ap.add_argument("--port", type=int, required=True, help="port to listen on (0 = pick a free one)")
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    args = ap.parse_args(argv)

    app = StandIn()
    server = StandInServer((args.host, args.port), app)
    port = server.server_address[1]
    shown = args.host if ":" not in args.host else f"[{args.host}]"
    app.public_base = f"http://{shown}:{port}"

    def stop(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"listening {app.public_base}", flush=True)
    try:
        server.serve_forever(poll_interval=0.25)
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
