#!/usr/bin/env python3
"""Test stand-in for Azure Key Vault (keys) and the Microsoft Entra ID token authority.

This is NOT Azure. It is a small HTTPS server that speaks the public REST protocol
of two Microsoft services, written from Microsoft's public documentation:

  * the Microsoft Entra ID v2.0 token endpoint (OAuth 2.0 client credentials grant)
    and its OpenID Connect discovery document, as used by MSAL / azure-identity;
  * the Azure Key Vault keys data-plane API (api-version 7.x and 2025-07-01):
    get key, wrapKey, unwrapKey, encrypt, decrypt, with Key Vault's 401 bearer
    challenge, RBAC 403s and its error JSON.

One port serves both the authority (https://localhost:P/{tenant}/...) and any
number of vaults.  A vault is addressed either
  * by path:  https://localhost:P/{vault}/keys/...    (kid = https://localhost:P/{vault}/keys/...)
  * by host:  https://{vault}.vault.localhost:P/keys/...  (kid has Azure's own shape,
    which SDKs that parse key ids need; the client must resolve *.vault.localhost
    to 127.0.0.1 itself, the certificate covers it).

Simplifications (deliberate):
  * access tokens are opaque random strings remembered in memory, not signed JWTs;
  * all state (apps, tenants, vaults, keys, tokens) is in memory and set up through
    the unauthenticated /_control API; nothing persists;
  * an unknown vault answers 404 VaultNotFound (real Azure fails DNS resolution);
  * RBAC is a per-key set of client ids ("grants") plus per-key denied operations;
  * one certificate serves every name; no PoP tokens, CAE claims, paging, key
    creation through the data plane, soft delete, or managed HSM.

Key Vault error codes used: Unauthorized (AKV10000 missing token, AKV10013 expired
token, AKV10022 unknown token, AKV10032 wrong issuer/tenant), Forbidden with inner
errors ForbiddenByRbac, KeyDisabled, KeyNotYetValid, KeyExpired, KeyOperationForbidden (an
operation the key's key_ops do not allow); BadParameter;
KeyNotFound; VaultNotFound; NotFound / MethodNotAllowed (route not implemented).
Entra errors used: AADSTS90002 (invalid_request / invalid_tenant), AADSTS700016 (an
unknown application) and AADSTS7000229 (an application without a service principal in the
tenant; both unauthorized_client), AADSTS7000215 and AADSTS7000218 (invalid_client),
AADSTS1002012 and AADSTS70011 (invalid_scope), AADSTS70003 (unsupported_grant_type),
AADSTS900144 (missing parameter), AADSTS900561 (wrong method).

Usage: standin.py --port P --dir D [--host 127.0.0.1]     (--port 0 picks a free port)
Prints one line when ready:  listening https://localhost:P ca D/ca.pem
"""

import argparse
import base64
import datetime
import ipaddress
import json
import os
import re
import secrets
import signal
import ssl
import sys
import threading
import time
import traceback
import uuid
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VAULT_RESOURCE = "https://vault.azure.net"
SERVICE_VERSION = "1.9.2179.1"
HOST_MODE_SUFFIX = ".vault.localhost"
DEFAULT_TOKEN_LIFETIME = 3599
MAX_BODY = 1 << 20
REQUEST_LOG_SIZE = 500
API_VERSION_RE = re.compile(r"^(7\.\d+|\d{4}-\d{2}-\d{2})(-preview(\.\d+)?)?$")

# Data-plane operation name (as in the URL) -> canonical Key Vault operation name.
URL_OPS = {"wrapkey": "wrapKey", "unwrapkey": "unwrapKey", "encrypt": "encrypt", "decrypt": "decrypt"}
KNOWN_OPS = {"get": "get", "wrapkey": "wrapKey", "unwrapkey": "unwrapKey", "encrypt": "encrypt", "decrypt": "decrypt"}
RBAC_ACTIONS = {
    "get": "Microsoft.KeyVault/vaults/keys/read",
    "wrapKey": "Microsoft.KeyVault/vaults/keys/wrap/action",
    "unwrapKey": "Microsoft.KeyVault/vaults/keys/unwrap/action",
    "encrypt": "Microsoft.KeyVault/vaults/keys/encrypt/action",
    "decrypt": "Microsoft.KeyVault/vaults/keys/decrypt/action",
}
# Operations that "exp" forbids (new protection); unprotecting stays allowed after exp.
PROTECTING_OPS = {"wrapKey", "encrypt"}
RSA_KTYS = {"RSA", "RSA-HSM"}
EC_KTYS = {"EC", "EC-HSM"}
EC_CURVES = {"P-256": ec.SECP256R1, "P-384": ec.SECP384R1, "P-521": ec.SECP521R1}
# 1024 is not offered by Key Vault for new keys; it stands for a legacy imported key, which
# the console must refuse.
RSA_SIZES = {1024, 2048, 3072, 4096}


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text):
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_\-]*={0,2}", text):
        raise ValueError("not base64url")
    text = text.rstrip("=")
    if len(text) % 4 == 1:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def int_bytes(value, length=None):
    if length is None:
        length = max(1, (value.bit_length() + 7) // 8)
    return value.to_bytes(length, "big")


def rsa_padding(alg):
    if alg == "RSA-OAEP-256":
        return padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    if alg == "RSA-OAEP":
        return padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    if alg == "RSA1_5":
        return padding.PKCS1v15()
    return None


# --------------------------------------------------------------------------- PKI


def make_pki(directory):
    """Writes ca.pem (self-signed CA), server.pem and server-key.pem (leaf signed by the CA)."""
    os.makedirs(directory, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=30)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cmek-console tests"),
        x509.NameAttribute(NameOID.COMMON_NAME, "Azure stand-in test CA"),
    ])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(
            x509.SubjectAlternativeName([
                x509.DNSName("localhost"),
                x509.DNSName("*" + HOST_MODE_SUFFIX),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            ]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    ca_path = os.path.join(directory, "ca.pem")
    cert_path = os.path.join(directory, "server.pem")
    key_path = os.path.join(directory, "server-key.pem")
    with open(ca_path, "wb") as f:
        f.write(ca_cert.public_bytes(serialization.Encoding.PEM))
    with open(cert_path, "wb") as f:
        f.write(leaf_cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return ca_path, cert_path, key_path


# --------------------------------------------------------------------------- HTTP plumbing


class Request:
    def __init__(self, method, target, headers, body):
        self.method = method
        self.headers = headers
        self.body = body
        parts = urlsplit(target)
        self.path = parts.path or "/"
        self.query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        # Keep empty segments: /keys/name//wrapkey means "latest version".
        self.segments = [unquote(s) for s in self.path.split("/")[1:]]
        if self.segments and self.segments[-1] == "" and len(self.segments) == 1:
            self.segments = []
        self.host = (headers.get("Host") or "").strip()


class Response:
    def __init__(self, status, body=b"", headers=None):
        self.status = status
        self.body = body
        self.headers = list(headers or [])


def json_response(status, obj, headers=None):
    hdrs = [("Content-Type", "application/json; charset=utf-8")] + list(headers or [])
    return Response(status, json.dumps(obj).encode("utf-8"), hdrs)


class ClientError(Exception):
    """A control-API request problem, answered as 4xx JSON."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


def host_without_port(host):
    if host.startswith("["):
        return host.split("]")[0] + "]"
    return host.rsplit(":", 1)[0] if ":" in host else host


# --------------------------------------------------------------------------- the stand-in


class StandIn:
    def __init__(self):
        self.lock = threading.RLock()
        self.apps = {}        # client_id -> client_secret
        self.tenants = {}     # tenant_id -> set(client_id) with a service principal there
        self.tenant_delays = {}  # tenant_id -> seconds the token endpoint waits before answering
        self.vaults = {}      # name -> {tenant_id, region, purge_protection, delay_seconds, keys}
        self.tokens = {}      # token -> (tenant_id, client_id, expires_at)
        self.config = {"challenge_authority": None, "token_lifetime_seconds": DEFAULT_TOKEN_LIFETIME,
                       "token_delay_seconds": 0}
        self.requests = deque(maxlen=REQUEST_LOG_SIZE)
        self.public_base = "https://localhost"

    # ------------------------------------------------------------------ dispatch

    def handle(self, req):
        entry = {"method": req.method, "path": req.path, "authorized": False, "status": 0, "vault": None}
        segs = req.segments
        if segs and segs[0] == "_control":
            return self.control(req, segs[1:])
        host_name = host_without_port(req.host).lower()
        if host_name.endswith(HOST_MODE_SUFFIX) and len(host_name) > len(HOST_MODE_SUFFIX):
            vault = host_name[: -len(HOST_MODE_SUFFIX)]
            base = "https://" + req.host
            resp = self.vault_request(req, vault, segs, base, entry)
        elif len(segs) >= 2 and segs[0] and segs[1].lower() == "keys":
            base = "https://" + (req.host or self.public_base[len("https://"):]) + "/" + segs[0]
            resp = self.vault_request(req, segs[0].lower(), segs[1:], base, entry)
        else:
            resp = self.entra(req, segs)
        entry["status"] = resp.status
        with self.lock:
            self.requests.append(entry)
        return resp

    # ------------------------------------------------------------------ Entra ID

    def entra_base(self, req):
        return "https://" + req.host if req.host else self.public_base

    def entra_error(self, req, status, error, code, text):
        trace_id = str(uuid.uuid4())
        corr = req.headers.get("client-request-id") or str(uuid.uuid4())
        ts = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
        desc = f"AADSTS{code}: {text}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {corr}\r\nTimestamp: {ts}"
        body = {
            "error": error,
            "error_description": desc,
            "error_codes": [code],
            "timestamp": ts,
            "trace_id": trace_id,
            "correlation_id": corr,
            "error_uri": f"{self.entra_base(req)}/error?code={code}",
        }
        return json_response(status, body, self.entra_headers(req, trace_id))

    def entra_headers(self, req, trace_id=None):
        hdrs = [("Cache-Control", "no-store, no-cache"), ("Pragma", "no-cache"),
                ("x-ms-request-id", trace_id or str(uuid.uuid4()))]
        if req.headers.get("client-request-id"):
            hdrs.append(("client-request-id", req.headers["client-request-id"]))
        return hdrs

    def tenant_not_found(self, req, tenant, error="invalid_request"):
        return self.entra_error(
            req, 400, error, 90002,
            f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing "
            "into the correct cloud. Check with your subscription administrator, this may happen if there are "
            "no active subscriptions for the tenant.")

    def entra(self, req, segs):
        base = self.entra_base(req)
        if req.method == "GET" and segs[:3] == ["common", "discovery", "instance"]:
            auth_ep = req.query.get("authorization_endpoint", "")
            tenant = "common"
            m = re.match(r"https://[^/]+/([^/?]+)/", auth_ep)
            if m:
                tenant = m.group(1)
            host = req.host or self.public_base[len("https://"):]
            return json_response(200, {
                "tenant_discovery_endpoint": f"{base}/{tenant}/v2.0/.well-known/openid-configuration",
                "api-version": "1.1",
                "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
            }, self.entra_headers(req))
        if len(segs) == 4 and segs[1:] == ["v2.0", ".well-known", "openid-configuration"]:
            tenant = segs[0]
            if req.method != "GET":
                return self.wrong_method(req, "GET")
            with self.lock:
                known = tenant in self.tenants
            if not known:
                return self.tenant_not_found(req, tenant, error="invalid_tenant")
            return json_response(200, self.openid_configuration(base, tenant), self.entra_headers(req))
        if len(segs) == 4 and segs[1:] == ["oauth2", "v2.0", "token"]:
            if req.method != "POST":
                return self.wrong_method(req, "POST")
            return self.token(req, segs[0])
        if len(segs) == 4 and segs[1:] == ["discovery", "v2.0", "keys"] and req.method == "GET":
            return json_response(200, {"keys": []}, self.entra_headers(req))
        if segs == ["error"] and req.method == "GET":
            code = req.query.get("code", "")
            return json_response(200, {"code": code, "note": "Azure stand-in: see Microsoft's AADSTS error code reference."})
        return json_response(404, {"error": {"code": "NotFound",
                                             "message": f"The stand-in has no route for {req.method} {req.path}."}})

    def wrong_method(self, req, allowed):
        return self.entra_error(req, 400, "invalid_request", 900561,
                                f"The endpoint only accepts {allowed} requests. Received a {req.method} request.")

    def openid_configuration(self, base, tenant):
        return {
            "token_endpoint": f"{base}/{tenant}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": f"{base}/{tenant}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"https://login.microsoftonline.com/{tenant}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": f"{base}/oidc/userinfo",
            "authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{base}/{tenant}/oauth2/v2.0/logout",
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "tid", "ver"],
            "kerberos_endpoint": f"{base}/{tenant}/kerberos",
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
            "rbac_url": "https://pas.windows.net",
        }

    def token(self, req, tenant):
        try:
            form = {k: v[0] for k, v in parse_qs(req.body.decode("utf-8"), keep_blank_values=True).items()}
        except (UnicodeDecodeError, ValueError):
            form = {}
        with self.lock:
            sps = self.tenants.get(tenant)
            sps = set(sps) if sps is not None else None
            lifetime = int(self.config["token_lifetime_seconds"])
        if sps is None:
            return self.tenant_not_found(req, tenant)
        for param in ("grant_type", "client_id"):
            if not form.get(param):
                return self.entra_error(req, 400, "invalid_request", 900144,
                                        f"The request body must contain the following parameter: '{param}'.")
        grant = form["grant_type"]
        if grant != "client_credentials":
            return self.entra_error(
                req, 400, "unsupported_grant_type", 70003,
                f"The app requested an unsupported grant type '{grant}'. This stand-in supports only "
                "'client_credentials'.")
        client_id = form["client_id"]
        with self.lock:
            secret = self.apps.get(client_id)
        with self.lock:
            delay = float(self.config.get("token_delay_seconds") or 0) + self.tenant_delays.get(tenant, 0.0)
        if delay:
            time.sleep(delay)
        if secret is not None and client_id not in sps:
            # A known multi-tenant app without a service principal in this tenant (never created,
            # or deleted): Entra's client-credentials answer since 2024.
            return self.entra_error(
                req, 400, "unauthorized_client", 7000229,
                f"The client application {client_id} is missing service principal in the tenant {tenant}. "
                "See instructions here: https://go.microsoft.com/fwlink/?linkid=2225119")
        if secret is None:
            return self.entra_error(
                req, 400, "unauthorized_client", 700016,
                f"Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can "
                "happen if the application has not been installed by the administrator of the tenant or consented "
                "to by any user in the tenant. You may have sent your authentication request to the wrong tenant.")
        given = form.get("client_secret")
        if not given:
            return self.entra_error(
                req, 401, "invalid_client", 7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.")
        if not secrets.compare_digest(given.encode("utf-8"), secret.encode("utf-8")):
            return self.entra_error(
                req, 401, "invalid_client", 7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret "
                f"value, not the client secret ID, for a secret added to app '{client_id}'.")
        scope = form.get("scope", "")
        if not scope:
            return self.entra_error(req, 400, "invalid_request", 900144,
                                    "The request body must contain the following parameter: 'scope'.")
        scopes = scope.split()
        if len(scopes) != 1 or not scopes[0].endswith("/.default"):
            return self.entra_error(
                req, 400, "invalid_scope", 1002012,
                f"The provided value for scope {scope} is not valid. Client credential flows must have a scope "
                "value with /.default suffixed to the resource identifier (application ID URI).")
        resource = scopes[0][: -len("/.default")].rstrip("/").lower()
        if resource != VAULT_RESOURCE:
            return self.entra_error(
                req, 400, "invalid_scope", 70011,
                f"The provided value for the input parameter 'scope' is not valid. The scope {scope} is not "
                f"valid. This stand-in only issues tokens for {VAULT_RESOURCE}/.default.")
        token = "standin." + secrets.token_urlsafe(32)
        now = time.time()
        with self.lock:
            for t, (_, _, exp) in list(self.tokens.items()):
                if exp < now - 3600:
                    del self.tokens[t]
            self.tokens[token] = (tenant, client_id, now + lifetime)
        return json_response(200, {
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": token,
        }, self.entra_headers(req))

    # ------------------------------------------------------------------ Key Vault

    def kv_error(self, status, code, message, inner=None, region=None, extra_headers=None, req=None):
        err = {"code": code, "message": message}
        if inner:
            err["innererror"] = {"code": inner}
        return json_response(status, {"error": err}, self.kv_headers(region, req) + list(extra_headers or []))

    def kv_headers(self, region, req=None):
        hdrs = [("Cache-Control", "no-cache"), ("x-ms-keyvault-service-version", SERVICE_VERSION),
                ("x-ms-request-id", str(uuid.uuid4())), ("x-content-type-options", "nosniff")]
        if region is not None:
            hdrs.insert(0, ("x-ms-keyvault-region", region))
        if req is not None and req.headers.get("x-ms-client-request-id"):
            hdrs.append(("x-ms-client-request-id", req.headers["x-ms-client-request-id"]))
        return hdrs

    def challenge(self, tenant):
        with self.lock:
            authority = self.config["challenge_authority"] or self.public_base
        authority = authority.rstrip("/")
        return ("WWW-Authenticate", f'Bearer authorization="{authority}/{tenant}", resource="{VAULT_RESOURCE}"')

    def vault_request(self, req, vault_name, segs, base, entry):
        entry["vault"] = vault_name
        with self.lock:
            vault = self.vaults.get(vault_name)
            delay = float(vault["delay_seconds"]) if vault else 0.0
            fault = vault.get("fault") if vault else None
        if vault is None:
            return self.kv_error(404, "VaultNotFound",
                                 f"Vault '{vault_name}' does not exist. (Azure stand-in: a real vault URL that does "
                                 "not exist fails DNS resolution instead.)", req=req)
        if delay > 0:
            time.sleep(delay)
        if fault:
            # Something in front of the vault answers instead (a proxy, a gateway, a WAF): a bare
            # status and body, none of Key Vault's headers or error codes.
            return Response(fault["status"], fault["body"].encode("utf-8"),
                            [("Content-Type", "text/plain; charset=utf-8")])
        with self.lock:
            region, vault_tenant = vault["region"], vault["tenant_id"]

        def err(status, code, message, inner=None, headers=None):
            return self.kv_error(status, code, message, inner, region, headers, req)

        api_version = req.query.get("api-version")
        if not api_version:
            return err(400, "BadParameter", "The 'api-version' query parameter is missing. Add e.g. "
                       "?api-version=7.5 or ?api-version=2025-07-01 to the request URI.")
        if not API_VERSION_RE.match(api_version):
            return err(400, "BadParameter", f"The specified version ({api_version}) is not recognized. "
                       "Consider using the latest supported version (2025-07-01).")

        # --- authentication
        auth = req.headers.get("Authorization") or ""
        if not auth.lower().startswith("bearer ") or not auth[7:].strip():
            return err(401, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.",
                       headers=[self.challenge(vault_tenant)])
        token = auth[7:].strip()
        with self.lock:
            tok = self.tokens.get(token)
        if tok is None:
            return err(401, "Unauthorized", f"AKV10022: Invalid audience. Expected {VAULT_RESOURCE}, found: "
                       "(a token this authority did not issue).", headers=[self.challenge(vault_tenant)])
        tok_tenant, client_id, expires_at = tok
        if expires_at <= time.time():
            return err(401, "Unauthorized", "AKV10013: Token is expired.", headers=[self.challenge(vault_tenant)])
        if tok_tenant != vault_tenant:
            return err(401, "Unauthorized",
                       f"AKV10032: Invalid issuer. Expected one of https://sts.windows.net/{vault_tenant}/, "
                       f"https://login.microsoftonline.com/{vault_tenant}/v2.0, "
                       f"found https://sts.windows.net/{tok_tenant}/.", headers=[self.challenge(vault_tenant)])
        entry["authorized"] = True

        # --- routing
        if not segs or segs[0].lower() != "keys" or len(segs) < 2 or not segs[1]:
            return err(404, "NotFound", f"The stand-in does not implement {req.method} {req.path}.")
        rest = segs[1:]
        name, version, op = rest[0], "", None
        if len(rest) == 2:
            if req.method == "POST" and rest[1].lower() in URL_OPS:
                op = URL_OPS[rest[1].lower()]
            else:
                version = rest[1]
        elif len(rest) == 3 and rest[2].lower() in URL_OPS:
            version, op = rest[1], URL_OPS[rest[2].lower()]
        elif len(rest) != 1:
            return err(404, "NotFound", f"The stand-in does not implement {req.method} {req.path}.")
        if (op is None and req.method != "GET") or (op is not None and req.method != "POST"):
            return err(405, "MethodNotAllowed", f"The stand-in does not implement {req.method} {req.path}.")
        op_name = op or "get"

        # --- key lookup
        with self.lock:
            key = vault["keys"].get(name)
            if key is None:
                ver = None
            elif version:
                ver = next((v for v in key["versions"] if v["version"] == version), None)
            else:
                ver = key["versions"][-1]
            if key is not None:
                grants, deny_ops = set(key["grants"]), set(key["deny_ops"])
        if ver is None:
            ident = name if key is None else f"{name}/{version}"
            return err(404, "KeyNotFound",
                       f"A key with (name/id) {ident} was not found in this key vault. If you recently deleted "
                       "this key you may be able to recover it using the correct recovery command. For help "
                       "resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182")

        # --- authorization (RBAC stand-in)
        if client_id not in grants or op_name in deny_ops:
            assignment = "(not found)" if client_id not in grants else "(found)"
            deny = "null" if client_id not in grants else f"standin-deny-{op_name}"
            msg = (
                "Caller is not authorized to perform action on resource.\r\n"
                "If role assignments, deny assignments or role definitions were changed recently, please observe "
                "propagation time.\r\n"
                f"Caller: appid={client_id};oid={uuid.uuid5(uuid.NAMESPACE_URL, client_id)};"
                f"iss=https://sts.windows.net/{tok_tenant}/\r\n"
                f"Action: '{RBAC_ACTIONS[op_name]}'\r\n"
                f"Resource: '/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/standin/providers/"
                f"microsoft.keyvault/vaults/{vault_name}/keys/{name.lower()}'\r\n"
                f"Assignment: {assignment}\r\n"
                f"DenyAssignmentId: {deny}\r\n"
                "DecisionReason: null \r\n"
                f"Vault: {vault_name};location={region}\r\n"
            )
            return err(403, "Forbidden", msg, "ForbiddenByRbac")

        kid = f"{base}/keys/{name}/{ver['version']}"
        if op is None:
            with self.lock:
                bundle = self.key_bundle(kid, ver, vault)
            return json_response(200, bundle, self.kv_headers(region, req))
        return self.key_operation(req, op, kid, ver, err, self.kv_headers(region, req))

    def key_bundle(self, kid, ver, vault):
        pub = ver["private"].public_key()
        jwk = {"kid": kid, "kty": ver["kty"], "key_ops": list(ver["key_ops"])}
        if ver["kty"] in RSA_KTYS:
            nums = pub.public_numbers()
            jwk["n"] = b64url(int_bytes(nums.n, (pub.key_size + 7) // 8))
            jwk["e"] = b64url(int_bytes(nums.e))
        else:
            nums = pub.public_numbers()
            size = (pub.curve.key_size + 7) // 8
            jwk["crv"] = ver["crv"]
            jwk["x"] = b64url(int_bytes(nums.x, size))
            jwk["y"] = b64url(int_bytes(nums.y, size))
        attrs = {"enabled": ver["enabled"]}
        if ver["nbf"] is not None:
            attrs["nbf"] = ver["nbf"]
        if ver["exp"] is not None:
            attrs["exp"] = ver["exp"]
        attrs.update({
            "created": ver["created"],
            "updated": ver["updated"],
            "recoveryLevel": "Recoverable" if vault["purge_protection"] else "Recoverable+Purgeable",
            "recoverableDays": 90,
            "exportable": False,
        })
        return {"key": jwk, "attributes": attrs, "tags": {}}

    def key_operation(self, req, op, kid, ver, err, ok_headers):
        try:
            body = json.loads(req.body.decode("utf-8")) if req.body else None
        except (UnicodeDecodeError, ValueError):
            body = None
        if not isinstance(body, dict):
            return err(400, "BadParameter", "The request body must be a JSON object with 'alg' and 'value'.")
        alg = body.get("alg")
        if not isinstance(alg, str) or not alg:
            return err(400, "BadParameter", "The parameter 'alg' is required.")
        pad = rsa_padding(alg)
        if pad is None:
            return err(400, "BadParameter", f"Invalid algorithm '{alg}'. Supported for {op}: RSA-OAEP-256, "
                       "RSA-OAEP, RSA1_5.")
        try:
            value = b64url_decode(body.get("value"))
        except (ValueError, TypeError):
            return err(400, "BadParameter", "The parameter 'value' must be a base64url encoded string.")
        if not value:
            return err(400, "BadParameter", "The parameter 'value' must not be empty.")

        now = int(time.time())
        with self.lock:
            enabled, nbf, exp = ver["enabled"], ver["nbf"], ver["exp"]
            kty, key_ops, private = ver["kty"], list(ver["key_ops"]), ver["private"]
        if not enabled:
            return err(403, "Forbidden", f"Operation {op} is not allowed on a disabled key.", "KeyDisabled")
        if nbf is not None and now < nbf:
            return err(403, "Forbidden", f"Operation {op} is not allowed before the key's activation date (nbf).",
                       "KeyNotYetValid")
        if exp is not None and now >= exp and op in PROTECTING_OPS:
            return err(403, "Forbidden", f"Operation {op} is not allowed on an expired key.", "KeyExpired")
        if kty not in RSA_KTYS:
            return err(400, "BadParameter", f"Key and algorithm are not compatible: key type {kty} does not "
                       f"support {op} with {alg}.")
        if op not in key_ops:
            return err(403, "Forbidden", f"Operation {op} is not permitted on this key.", "KeyOperationForbidden")
        try:
            if op in PROTECTING_OPS:
                result = private.public_key().encrypt(value, pad)
            else:
                result = private.decrypt(value, pad)
        except ValueError:
            if op in PROTECTING_OPS:
                return err(400, "BadParameter", f"The value is too long for algorithm {alg} with this key size.")
            return err(400, "BadParameter", "Decryption failed: the value could not be unwrapped with this key "
                       "version and algorithm.")
        return json_response(200, {"kid": kid, "value": b64url(result)}, ok_headers)

    # ------------------------------------------------------------------ control API

    def control(self, req, segs):
        try:
            return self._control(req, segs)
        except ClientError as e:
            return json_response(e.status, {"error": e.message})

    def _body(self, req):
        if not req.body:
            return {}
        try:
            body = json.loads(req.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise ClientError(400, "request body is not valid JSON")
        if not isinstance(body, dict):
            raise ClientError(400, "request body must be a JSON object")
        return body

    def _control(self, req, segs):
        m = req.method
        if segs == ["health"] and m == "GET":
            return json_response(200, {"ok": True})
        if segs == ["apps"] and m == "POST":
            b = self._body(req)
            cid, sec = _req_str(b, "client_id"), _req_str(b, "client_secret")
            with self.lock:
                self.apps[cid] = sec
            return json_response(200, {"client_id": cid})
        if segs == ["tenants"] and m == "POST":
            b = self._body(req)
            tid = _req_str(b, "tenant_id")
            sps = _str_list(b, "service_principals", [])
            delay = b.get("token_delay_seconds") or 0
            if not isinstance(delay, (int, float)) or isinstance(delay, bool) or delay < 0:
                raise ClientError(400, "token_delay_seconds must be a non-negative number")
            with self.lock:
                self.tenants[tid] = set(sps)
                self.tenant_delays[tid] = float(delay)
            return json_response(200, {"tenant_id": tid, "service_principals": sorted(sps),
                                       "token_delay_seconds": delay})
        if segs == ["vaults"] and m == "POST":
            b = self._body(req)
            name = _req_str(b, "name").lower()
            if "/" in name or "." in name:
                raise ClientError(400, "vault name must not contain '/' or '.'")
            tid = _req_str(b, "tenant_id")
            region = _opt_str(b, "region", "westeurope")
            pp = _opt_bool(b, "purge_protection", False)
            delay = _opt_delay(b, 0.0)
            with self.lock:
                old = self.vaults.get(name)
                self.vaults[name] = {"tenant_id": tid, "region": region, "purge_protection": pp,
                                     "delay_seconds": delay, "keys": old["keys"] if old else {}}
                return json_response(200, self.vault_state(req, name))
        if len(segs) == 2 and segs[0] == "vaults":
            name = segs[1].lower()
            with self.lock:
                if name not in self.vaults:
                    raise ClientError(404, f"no vault '{name}'")
            if m == "GET":
                with self.lock:
                    return json_response(200, self.vault_state(req, name))
            if m == "PATCH":
                b = self._body(req)
                updates = {}
                if "delay_seconds" in b:
                    updates["delay_seconds"] = _opt_delay(b, 0.0)
                if "region" in b:
                    updates["region"] = _req_str(b, "region")
                if "purge_protection" in b:
                    updates["purge_protection"] = _opt_bool(b, "purge_protection", False)
                if "tenant_id" in b:
                    updates["tenant_id"] = _req_str(b, "tenant_id")
                if "fault" in b:
                    f = b["fault"]
                    if f is not None and not (isinstance(f, dict) and isinstance(f.get("status"), int)
                                              and 100 <= f["status"] <= 599):
                        raise ClientError(400, "fault must be null or {status: 100-599, body?: string}")
                    updates["fault"] = None if f is None else {"status": f["status"], "body": str(f.get("body", ""))}
                with self.lock:
                    self.vaults[name].update(updates)
                    return json_response(200, self.vault_state(req, name))
        if len(segs) == 3 and segs[0] == "vaults" and segs[2] == "keys" and m == "POST":
            return self.control_create_key(req, segs[1].lower())
        if len(segs) == 4 and segs[0] == "vaults" and segs[2] == "keys" and m in ("GET", "PATCH"):
            vname, kname = segs[1].lower(), segs[3]
            with self.lock:
                vault = self.vaults.get(vname)
                key = vault["keys"].get(kname) if vault else None
                if key is None:
                    raise ClientError(404, f"no key '{kname}' in vault '{vname}'")
            if m == "PATCH":
                self.control_patch_key(req, key)
            with self.lock:
                return json_response(200, self.key_state(req, vname, kname))
        if segs == ["config"] and m in ("GET", "POST"):
            if m == "POST":
                b = self._body(req)
                with self.lock:
                    if "challenge_authority" in b:
                        ca = b["challenge_authority"]
                        if ca is not None and (not isinstance(ca, str) or not ca.startswith("https://")):
                            raise ClientError(400, "challenge_authority must be an https:// URL or null")
                        self.config["challenge_authority"] = ca.rstrip("/") if ca else None
                    if "token_lifetime_seconds" in b:
                        lt = b["token_lifetime_seconds"]
                        if lt is None:
                            lt = DEFAULT_TOKEN_LIFETIME
                        if not isinstance(lt, int) or isinstance(lt, bool) or lt < 0:
                            raise ClientError(400, "token_lifetime_seconds must be a non-negative integer or null")
                        self.config["token_lifetime_seconds"] = lt
                    if "token_delay_seconds" in b:
                        d = b["token_delay_seconds"] or 0
                        if not isinstance(d, (int, float)) or isinstance(d, bool) or d < 0:
                            raise ClientError(400, "token_delay_seconds must be a non-negative number or null")
                        self.config["token_delay_seconds"] = d
            with self.lock:
                cfg = dict(self.config)
            cfg["effective_challenge_authority"] = cfg["challenge_authority"] or self.public_base
            return json_response(200, cfg)
        if segs == ["requests"] and m in ("GET", "DELETE"):
            with self.lock:
                if m == "DELETE":
                    self.requests.clear()
                return json_response(200, list(self.requests))
        raise ClientError(404, f"no control route {m} /_control/{'/'.join(segs)}")

    def vault_state(self, req, name):
        v = self.vaults[name]
        return {"name": name, "tenant_id": v["tenant_id"], "region": v["region"],
                "purge_protection": v["purge_protection"], "delay_seconds": v["delay_seconds"],
                "fault": v.get("fault"),
                "url": f"{self.control_base(req)}/{name}",
                "host_url": f"https://{name}{HOST_MODE_SUFFIX}:{self.port}",
                "keys": sorted(v["keys"])}

    def control_base(self, req):
        host = host_without_port(req.host).lower()
        if not req.host or host.endswith(HOST_MODE_SUFFIX):
            return self.public_base
        return "https://" + req.host

    @property
    def port(self):
        return int(self.public_base.rsplit(":", 1)[1]) if self.public_base.count(":") == 2 else 443

    def key_state(self, req, vname, kname):
        key = self.vaults[vname]["keys"][kname]
        base = f"{self.control_base(req)}/{vname}"
        return {
            "vault": vname, "name": kname,
            "grants": sorted(key["grants"]), "deny_ops": sorted(key["deny_ops"]),
            "kid": f"{base}/keys/{kname}/{key['versions'][-1]['version']}",
            "version": key["versions"][-1]["version"],
            "versions": [{
                "version": v["version"], "kid": f"{base}/keys/{kname}/{v['version']}", "kty": v["kty"],
                "key_ops": list(v["key_ops"]), "enabled": v["enabled"], "nbf": v["nbf"], "exp": v["exp"],
            } for v in key["versions"]],
        }

    def control_create_key(self, req, vname):
        with self.lock:
            if vname not in self.vaults:
                raise ClientError(404, f"no vault '{vname}'")
        b = self._body(req)
        kname = _req_str(b, "name")
        if "/" in kname:
            raise ClientError(400, "key name must not contain '/'")
        kty = _opt_str(b, "kty", "RSA")
        crv = None
        if kty in RSA_KTYS:
            size = b.get("size", 2048)
            if size not in RSA_SIZES or isinstance(size, bool):
                raise ClientError(400, f"size must be one of {sorted(RSA_SIZES)}")
            private = rsa.generate_private_key(public_exponent=65537, key_size=size)
            default_ops = ["encrypt", "decrypt", "wrapKey", "unwrapKey"]
        elif kty in EC_KTYS:
            crv = _opt_str(b, "crv", "P-256")
            if crv not in EC_CURVES:
                raise ClientError(400, f"crv must be one of {sorted(EC_CURVES)}")
            private = ec.generate_private_key(EC_CURVES[crv]())
            default_ops = ["sign", "verify"]
        else:
            raise ClientError(400, "kty must be one of RSA, RSA-HSM, EC, EC-HSM")
        key_ops = _str_list(b, "key_ops", default_ops)
        enabled = _opt_bool(b, "enabled", True)
        nbf, exp = _opt_time(b, "nbf"), _opt_time(b, "exp")
        now = int(time.time())
        ver = {"version": uuid.uuid4().hex, "kty": kty, "crv": crv, "private": private, "key_ops": key_ops,
               "enabled": enabled, "nbf": nbf, "exp": exp, "created": now, "updated": now}
        with self.lock:
            vault = self.vaults.get(vname)
            if vault is None:
                raise ClientError(404, f"no vault '{vname}'")
            key = vault["keys"].get(kname)
            if key is None:
                key = {"grants": set(), "deny_ops": set(), "versions": []}
                vault["keys"][kname] = key
            if "grants" in b:
                key["grants"] = set(_str_list(b, "grants", []))
            if "deny_ops" in b:
                key["deny_ops"] = set(_op_list(b))
            key["versions"].append(ver)
            state = self.key_state(req, vname, kname)
        return json_response(200, state)

    def control_patch_key(self, req, key):
        b = self._body(req)
        with self.lock:
            if "version" in b:
                ver = next((v for v in key["versions"] if v["version"] == b["version"]), None)
                if ver is None:
                    raise ClientError(404, f"no version '{b['version']}'")
            else:
                ver = key["versions"][-1]
            changed = False
            if "enabled" in b:
                ver["enabled"] = _opt_bool(b, "enabled", True)
                changed = True
            for field in ("nbf", "exp"):
                if field in b:
                    ver[field] = _opt_time(b, field)
                    changed = True
            if changed:
                ver["updated"] = int(time.time())
            if "grants" in b:
                key["grants"] = set(_str_list(b, "grants", []))
            if "deny_ops" in b:
                key["deny_ops"] = set(_op_list(b))


def _req_str(b, field):
    v = b.get(field)
    if not isinstance(v, str) or not v:
        raise ClientError(400, f"'{field}' must be a non-empty string")
    return v


def _opt_str(b, field, default):
    v = b.get(field, default)
    if v is None:
        return default
    if not isinstance(v, str) or not v:
        raise ClientError(400, f"'{field}' must be a non-empty string")
    return v


def _opt_bool(b, field, default):
    v = b.get(field, default)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise ClientError(400, f"'{field}' must be true or false")
    return v


def _opt_delay(b, default):
    v = b.get("delay_seconds", default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or v > 600:
        raise ClientError(400, "'delay_seconds' must be a number between 0 and 600")
    return float(v)


def _opt_time(b, field):
    v = b.get(field)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise ClientError(400, f"'{field}' must be a unix time (integer seconds) or null")
    return v


def _str_list(b, field, default):
    v = b.get(field, default)
    if v is None:
        return list(default)
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        raise ClientError(400, f"'{field}' must be a list of non-empty strings")
    return list(v)


def _op_list(b):
    ops = []
    for op in _str_list(b, "deny_ops", []):
        canon = KNOWN_OPS.get(op.lower())
        if canon is None:
            raise ClientError(400, f"unknown operation '{op}' in deny_ops (known: {sorted(KNOWN_OPS.values())})")
        ops.append(canon)
    return ops


# --------------------------------------------------------------------------- server


class BodyTooLarge(Exception):
    pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "azure-standin"
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
            resp = json_response(413, {"error": {"code": "BadParameter", "message": "request body too large or malformed"}})
        else:
            try:
                resp = self.server.app.handle(Request(self.command, self.path, self.headers, body))
            except Exception:  # never a traceback to the client
                sys.stderr.write(f"standin: error handling {self.command} {self.path.split('?')[0]}\n")
                traceback.print_exc()
                resp = json_response(500, {"error": {"code": "InternalError", "message": "stand-in internal error"}})
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

    def __init__(self, address, ssl_context, app):
        super().__init__(address, Handler)
        self.ssl_context = ssl_context
        self.app = app

    def finish_request(self, request, client_address):
        # TLS handshake happens here, in the per-connection thread, so a slow or
        # broken client never blocks accept().
        request.settimeout(30)
        try:
            tls = self.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        except (OSError, ssl.SSLError):
            pass  # client went away
        finally:
            try:
                tls.close()
            except OSError:
                pass

    def handle_error(self, request, client_address):
        sys.stderr.write(f"standin: connection error from {client_address[0]}\n")
        traceback.print_exc()


def main(argv=None):
    ap = argparse.ArgumentParser(description="Azure Key Vault + Entra ID test stand-in (not Azure).")
    ap.add_argument("--port", type=int, required=True, help="port to listen on (0 = pick a free one)")
    ap.add_argument("--dir", required=True, help="directory for ca.pem, server.pem, server-key.pem")
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    args = ap.parse_args(argv)

    ca_path, cert_path, key_path = make_pki(args.dir)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_path, key_path)
    ctx.set_alpn_protocols(["http/1.1"])

    app = StandIn()
    server = StandInServer((args.host, args.port), ctx, app)
    port = server.server_address[1]
    app.public_base = f"https://localhost:{port}"

    def stop(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"listening https://localhost:{port} ca {ca_path}", flush=True)
    try:
        server.serve_forever(poll_interval=0.25)
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
