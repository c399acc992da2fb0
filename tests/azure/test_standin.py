"""Checks tests/azure/standin.py against Microsoft's own Python SDK.

Run from the repository root with the venv that has tests/azure/requirements.txt:
    ~/.cache/cmek-console/moto-venv/bin/python -m unittest tests/azure/test_standin.py
or  ~/.cache/cmek-console/moto-venv/bin/python tests/azure/test_standin.py

The suite starts the stand-in itself (subprocess, free port, temp dir) and stops it at the end.

Two ways of naming a vault are exercised:
  * path form  https://localhost:P/{vault}       - what the stand-in's brief specifies;
  * host form  https://{vault}.vault.localhost:P - Azure's own URL shape.  The Python SDK
    parses key ids and only accepts https://host/keys/{name}/{version}, so KeyClient.get_key
    and CryptographyClient need this form.  *.vault.localhost does not resolve on this
    machine, so this module maps it to 127.0.0.1 in-process (socket.getaddrinfo wrapper,
    installed in setUpModule and removed in tearDownModule); the TLS name check is real.
"""

import base64
import http.client
import json
import logging
import os
import re
import secrets
import select
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid
from urllib.parse import urlencode

from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from azure.core.rest import HttpRequest
from azure.identity import ClientSecretCredential
from azure.keyvault.keys import KeyClient, KeyType
from azure.keyvault.keys._shared import http_challenge_cache
from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

HERE = os.path.dirname(os.path.abspath(__file__))
STANDIN = os.path.join(HERE, "standin.py")
VAULT_SCOPE = "https://vault.azure.net/.default"
API = "api-version=7.5"

S = {}  # filled by setUpModule: proc, port, base, ca, dir, line, ctx
_real_getaddrinfo = socket.getaddrinfo


def _getaddrinfo(host, *args, **kwargs):
    if isinstance(host, str) and host.lower().endswith(".vault.localhost"):
        host = "127.0.0.1"
    return _real_getaddrinfo(host, *args, **kwargs)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setUpModule():
    # azure-identity logs every refused token request as a WARNING; the tests assert on them instead.
    logging.getLogger("azure").addHandler(logging.NullHandler())
    logging.getLogger("azure").propagate = False
    socket.getaddrinfo = _getaddrinfo
    tmp = tempfile.mkdtemp(prefix="azure-standin-")
    port = _free_port()
    err = open(os.path.join(tmp, "stderr.txt"), "wb")
    proc = subprocess.Popen(
        [sys.executable, STANDIN, "--port", str(port), "--dir", tmp],
        stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
    )
    err.close()
    S.update(proc=proc, dir=tmp, port=port)
    deadline = time.time() + 30
    line = b""
    while not line.endswith(b"\n"):
        remaining = deadline - time.time()
        if remaining <= 0 or proc.poll() is not None:
            tearDownModule()
            raise RuntimeError(f"stand-in did not start; stderr in {tmp}/stderr.txt")
        ready, _, _ = select.select([proc.stdout], [], [], remaining)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                continue
            line += chunk
    line = line.decode().strip()
    S.update(line=line, base=f"https://localhost:{port}", ca=os.path.join(tmp, "ca.pem"))
    S["ctx"] = ssl.create_default_context(cafile=S["ca"])


def tearDownModule():
    socket.getaddrinfo = _real_getaddrinfo
    proc = S.get("proc")
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    if proc is not None and proc.stdout:
        proc.stdout.close()
    if S.get("dir"):
        stderr_path = os.path.join(S["dir"], "stderr.txt")
        if os.path.exists(stderr_path) and os.path.getsize(stderr_path):
            with open(stderr_path, "rb") as f:
                sys.stderr.write("stand-in stderr:\n" + f.read().decode(errors="replace"))
        shutil.rmtree(S["dir"], ignore_errors=True)


# --------------------------------------------------------------------------- helpers


def raw(method, path, body=None, headers=None, host="localhost"):
    """One HTTPS request to the stand-in; returns (status, headers lower-cased, parsed JSON or None)."""
    conn = http.client.HTTPSConnection(host, S["port"], context=S["ctx"], timeout=30)
    hdrs = dict(headers or {})
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    elif isinstance(body, str):
        body = body.encode()
    try:
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        payload = resp.read()
        headers_out = {k.lower(): v for k, v in resp.getheaders()}
        status = resp.status
    finally:
        conn.close()
    return status, headers_out, (json.loads(payload) if payload else None)


def control(method, path, body=None, expect=200):
    status, _, data = raw(method, "/_control" + path, body)
    if status != expect:
        raise AssertionError(f"control {method} {path} -> {status} {data}")
    return data


def form_token(tenant, **fields):
    return raw("POST", f"/{tenant}/oauth2/v2.0/token", urlencode(fields),
               {"Content-Type": "application/x-www-form-urlencoded"})


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def uniq(prefix):
    return prefix + uuid.uuid4().hex[:12]


def request_log():
    return control("GET", "/requests")


OAEP256 = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
OAEP1 = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)


def public_key_of(kv_key):
    n = int.from_bytes(kv_key.key.n, "big")
    e = int.from_bytes(kv_key.key.e, "big")
    return rsa.RSAPublicNumbers(e, n).public_key()


class StandInCase(unittest.TestCase):
    """Each test gets its own tenant, app and vault (unique names)."""

    def setUp(self):
        # The SDK caches Key Vault challenges per host in a process-wide cache.
        http_challenge_cache.clear()
        self.tenant = str(uuid.uuid4())
        self.app = str(uuid.uuid4())
        self.secret = secrets.token_urlsafe(24)
        control("POST", "/apps", {"client_id": self.app, "client_secret": self.secret})
        control("POST", "/tenants", {"tenant_id": self.tenant, "service_principals": [self.app]})
        self.vault = self.make_vault()

    def make_vault(self, tenant=None, **fields):
        name = uniq("v")
        body = {"name": name, "tenant_id": tenant or self.tenant, "region": "westeurope",
                "purge_protection": False, "delay_seconds": 0}
        body.update(fields)
        control("POST", "/vaults", body)
        return name

    def make_key(self, vault=None, name=None, grants=None, **fields):
        body = {"name": name or uniq("k"), "grants": [self.app] if grants is None else grants}
        body.update(fields)
        return control("POST", f"/vaults/{vault or self.vault}/keys", body)

    def patch_key(self, key, **fields):
        return control("PATCH", f"/vaults/{key['vault']}/keys/{key['name']}", fields)

    def credential(self, tenant=None, secret=None, allowed=("*",), client_id=None):
        return ClientSecretCredential(
            tenant or self.tenant, client_id or self.app, secret or self.secret,
            authority=S["base"], disable_instance_discovery=True, connection_verify=S["ca"],
            additionally_allowed_tenants=list(allowed),
        )

    @staticmethod
    def host_url(vault):
        return f"https://{vault}.vault.localhost:{S['port']}"

    @staticmethod
    def path_url(vault):
        return f"{S['base']}/{vault}"

    def key_client(self, vault=None, credential=None, form="host"):
        vault = vault or self.vault
        url = self.host_url(vault) if form == "host" else self.path_url(vault)
        return KeyClient(url, credential or self.credential(), verify_challenge_resource=False,
                         connection_verify=S["ca"])

    def crypto(self, key, credential=None):
        return CryptographyClient(key, credential or self.credential(), verify_challenge_resource=False,
                                  connection_verify=S["ca"])

    def host_kid(self, key, version=None):
        return f"{self.host_url(key['vault'])}/keys/{key['name']}/{version or key['version']}"

    @staticmethod
    def sdk_post(client, path, body):
        resp = client.send_request(HttpRequest("POST", path, json=body))
        return resp.status_code, resp.json(), resp.headers

    def token_for(self, tenant=None):
        return self.credential(tenant).get_token(VAULT_SCOPE).token

    def assertKvError(self, status, body, want_status, code, inner=None, message=None):
        self.assertEqual(status, want_status, body)
        self.assertEqual(body["error"]["code"], code, body)
        if inner is not None:
            self.assertEqual(body["error"].get("innererror", {}).get("code"), inner, body)
        if message is not None:
            self.assertIn(message, body["error"]["message"])


# --------------------------------------------------------------------------- startup / TLS


class StartupTest(unittest.TestCase):
    def test_printed_line(self):
        self.assertEqual(S["line"], f"listening https://localhost:{S['port']} ca {S['dir']}/ca.pem")
        self.assertEqual(control("GET", "/health"), {"ok": True})

    def test_certificates(self):
        with open(S["ca"], "rb") as f:
            ca = x509.load_pem_x509_certificate(f.read())
        self.assertTrue(ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
        with socket.create_connection(("127.0.0.1", S["port"])) as sock:
            with S["ctx"].wrap_socket(sock, server_hostname="127.0.0.1") as tls:  # IP SAN is checked
                leaf = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
        self.assertNotEqual(leaf.subject, leaf.issuer)
        self.assertEqual(leaf.issuer, ca.subject)
        self.assertFalse(leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
        self.assertIn(ExtendedKeyUsageOID.SERVER_AUTH,
                      leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertIn("localhost", san.get_values_for_type(x509.DNSName))
        self.assertIn("*.vault.localhost", san.get_values_for_type(x509.DNSName))
        self.assertEqual([str(ip) for ip in san.get_values_for_type(x509.IPAddress)], ["127.0.0.1"])


# --------------------------------------------------------------------------- SDK: keys


class GetKeyTest(StandInCase):
    def test_get_rsa_key(self):
        key = self.make_key()
        got = self.key_client().get_key(key["name"])
        self.assertEqual(got.id, self.host_kid(key))
        self.assertEqual(got.properties.version, key["version"])
        self.assertTrue(got.properties.enabled)
        self.assertEqual(got.key_type, KeyType.rsa)
        self.assertEqual(sorted(got.key_operations), sorted(["encrypt", "decrypt", "wrapKey", "unwrapKey"]))
        self.assertEqual(got.properties.recovery_level, "Recoverable+Purgeable")
        self.assertEqual(got.properties.recoverable_days, 90)
        self.assertFalse(got.properties.exportable)
        self.assertEqual(len(got.key.n), 256)
        self.assertEqual(got.key.e, b"\x01\x00\x01")
        self.assertIsNone(got.properties.expires_on)

    def test_rsa_hsm_and_sizes_and_ec(self):
        hsm = self.make_key(kty="RSA-HSM", size=3072)
        ec_key = self.make_key(kty="EC")
        client = self.key_client()
        got = client.get_key(hsm["name"])
        self.assertEqual(got.key_type, KeyType.rsa_hsm)
        self.assertEqual(len(got.key.n), 384)
        got_ec = client.get_key(ec_key["name"])
        self.assertEqual(got_ec.key_type, KeyType.ec)
        self.assertEqual(got_ec.key.crv, "P-256")
        self.assertEqual((len(got_ec.key.x), len(got_ec.key.y)), (32, 32))

    def test_recovery_level_follows_purge_protection(self):
        protected = self.make_vault(purge_protection=True)
        key = self.make_key(vault=protected)
        got = self.key_client(protected).get_key(key["name"])
        self.assertEqual(got.properties.recovery_level, "Recoverable")
        control("PATCH", f"/vaults/{protected}", {"purge_protection": False})
        self.assertEqual(self.key_client(protected).get_key(key["name"]).properties.recovery_level,
                         "Recoverable+Purgeable")

    def test_specific_version_and_trailing_slash(self):
        key = self.make_key()
        client = self.key_client()
        self.assertEqual(client.get_key(key["name"], version=key["version"]).id, self.host_kid(key))
        resp = client.send_request(HttpRequest("GET", f"/keys/{key['name']}/?{API}"))
        self.assertEqual(resp.status_code, 200)
        self.assertEqual(resp.json()["key"]["kid"], self.host_kid(key))

    def test_missing_key_and_version(self):
        key = self.make_key()
        client = self.key_client()
        with self.assertRaises(ResourceNotFoundError) as cm:
            client.get_key(uniq("missing"))
        self.assertEqual(cm.exception.status_code, 404)
        self.assertEqual(cm.exception.error.code, "KeyNotFound")
        self.assertIn("was not found in this key vault", cm.exception.error.message)
        with self.assertRaises(ResourceNotFoundError) as cm:
            client.get_key(key["name"], version=uuid.uuid4().hex)
        self.assertEqual(cm.exception.error.code, "KeyNotFound")

    def test_disabled_key_still_answers_get(self):
        key = self.make_key()
        self.patch_key(key, enabled=False)
        got = self.key_client().get_key(key["name"])
        self.assertFalse(got.properties.enabled)

    def test_nbf_and_exp_are_reported(self):
        now = int(time.time())
        key = self.make_key(nbf=now - 60, exp=now + 3600)
        got = self.key_client().get_key(key["name"])
        self.assertEqual(int(got.properties.not_before.timestamp()), now - 60)
        self.assertEqual(int(got.properties.expires_on.timestamp()), now + 3600)


class PathFormTest(StandInCase):
    """The path form https://localhost:P/{vault} as seen by the Python SDK."""

    def test_kid_uses_the_vault_url_the_client_used(self):
        key = self.make_key()
        client = self.key_client(form="path")
        resp = client.send_request(HttpRequest("GET", f"/keys/{key['name']}?{API}"))
        self.assertEqual(resp.status_code, 200)
        self.assertEqual(resp.json()["key"]["kid"], f"{S['base']}/{self.vault}/keys/{key['name']}/{key['version']}")
        status, _, body = raw("GET", f"/{self.vault}/keys/{key['name']}?{API}",
                              headers={"Authorization": "Bearer " + self.token_for()}, host="127.0.0.1")
        self.assertEqual(status, 200)
        self.assertEqual(body["key"]["kid"], f"https://127.0.0.1:{S['port']}/{self.vault}/keys/{key['name']}/"
                         f"{key['version']}")

    def test_python_sdk_rejects_a_kid_with_a_path_prefix(self):
        # azure-keyvault-keys parses the kid and requires exactly /keys/{name}[/{version}] as
        # its path; the server answered 200, the SDK's model refuses the id.
        key = self.make_key()
        with self.assertRaisesRegex(ValueError, "is not a valid ID"):
            self.key_client(form="path").get_key(key["name"])


class WrapUnwrapTest(StandInCase):
    def test_server_side_wrap_then_unwrap(self):
        key = self.make_key()
        secret = os.urandom(32)
        client = self.key_client(form="path")
        status, body, _ = self.sdk_post(client, f"/keys/{key['name']}/{key['version']}/wrapkey?{API}",
                                        {"alg": "RSA-OAEP-256", "value": b64url(secret)})
        self.assertEqual(status, 200, body)
        self.assertEqual(body["kid"], f"{S['base']}/{self.vault}/keys/{key['name']}/{key['version']}")
        wrapped = b64url_decode(body["value"])
        self.assertEqual(len(wrapped), 256)
        self.assertNotIn(secret, wrapped)
        # unwrap through the path form with the raw protocol ...
        status, body, _ = self.sdk_post(client, f"/keys/{key['name']}/{key['version']}/unwrapkey?{API}",
                                        {"alg": "RSA-OAEP-256", "value": b64url(wrapped)})
        self.assertEqual(status, 200, body)
        self.assertEqual(b64url_decode(body["value"]), secret)
        # ... and through the SDK's CryptographyClient (needs the private key: goes to the server)
        before = len([e for e in request_log() if e["path"].endswith("/unwrapkey")])
        result = self.crypto(self.host_kid(key)).unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped)
        self.assertEqual(result.key, secret)
        self.assertEqual(result.key_id, self.host_kid(key))
        unwraps = [e for e in request_log() if e["path"].endswith("/unwrapkey")]
        # CryptographyClient first GETs the key (401 challenge there), so the unwrap itself is one call
        self.assertEqual(len(unwraps), before + 1)
        self.assertEqual((unwraps[-1]["status"], unwraps[-1]["authorized"]), (200, True))
        self.assertEqual(unwraps[-1]["path"], f"/keys/{key['name']}/{key['version']}/unwrapkey")

    def test_locally_wrapped_values_are_unwrapped_by_the_server(self):
        key = self.make_key()
        got = self.key_client().get_key(key["name"])
        pub = public_key_of(got)
        crypto = self.crypto(got)
        for alg, pad in ((KeyWrapAlgorithm.rsa_oaep_256, OAEP256), (KeyWrapAlgorithm.rsa_oaep, OAEP1),
                         (KeyWrapAlgorithm.rsa1_5, padding.PKCS1v15())):
            secret = os.urandom(32)
            result = crypto.unwrap_key(alg, pub.encrypt(secret, pad))
            self.assertEqual(result.key, secret, alg)
        served = [e for e in request_log() if e["vault"] == self.vault and e["path"].endswith("/unwrapkey")
                  and e["status"] == 200]
        self.assertEqual(len(served), 3)

    def test_latest_version_paths(self):
        key = self.make_key()
        client = self.key_client()
        kid = self.host_kid(key)
        for path in (f"/keys/{key['name']}//wrapkey", f"/keys/{key['name']}/wrapkey",
                     f"/keys/{key['name']}/{key['version']}/wrapkey"):
            status, body, _ = self.sdk_post(client, f"{path}?{API}", {"alg": "RSA-OAEP", "value": b64url(b"k" * 16)})
            self.assertEqual(status, 200, (path, body))
            self.assertEqual(body["kid"], kid)

    def test_rotation_keeps_old_versions_usable(self):
        key = self.make_key()
        client = self.key_client()
        v1 = client.get_key(key["name"])
        secret = os.urandom(32)
        wrapped = public_key_of(v1).encrypt(secret, OAEP256)
        rotated = self.make_key(name=key["name"], grants=None)  # same name -> new version
        rotated_no_grants = control("POST", f"/vaults/{self.vault}/keys", {"name": key["name"]})
        self.assertEqual(len(rotated_no_grants["versions"]), 3)
        self.assertEqual(rotated_no_grants["grants"], [self.app])  # kept when not given
        self.assertNotEqual(rotated["version"], key["version"])
        latest = client.get_key(key["name"])
        self.assertEqual(latest.properties.version, rotated_no_grants["version"])
        self.assertNotEqual(latest.key.n, v1.key.n)
        # the first version's kid still unwraps
        result = self.crypto(self.host_kid(key)).unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped)
        self.assertEqual(result.key, secret)
        # and the newest version cannot (real RSA, different key)
        status, body, _ = self.sdk_post(client, f"/keys/{key['name']}/unwrapkey?{API}",
                                        {"alg": "RSA-OAEP-256", "value": b64url(wrapped)})
        self.assertKvError(status, body, 400, "BadParameter", message="Decryption failed")


class RefusalTest(StandInCase):
    def wrap(self, client, key, version="", alg="RSA-OAEP-256", value=None):
        return self.sdk_post(client, f"/keys/{key['name']}/{version}/wrapkey?{API}",
                             {"alg": alg, "value": value or b64url(os.urandom(32))})

    def unwrap(self, client, key, wrapped, version="", alg="RSA-OAEP-256"):
        return self.sdk_post(client, f"/keys/{key['name']}/{version}/unwrapkey?{API}",
                             {"alg": alg, "value": b64url(wrapped)})

    def test_disabled_key(self):
        key = self.make_key()
        got = self.key_client().get_key(key["name"])
        wrapped = public_key_of(got).encrypt(os.urandom(32), OAEP256)
        self.patch_key(key, enabled=False)
        with self.assertRaises(HttpResponseError) as cm:
            self.crypto(self.host_kid(key)).unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped)
        self.assertEqual(cm.exception.status_code, 403)
        self.assertEqual(cm.exception.error.code, "Forbidden")
        self.assertEqual(cm.exception.response.json()["error"]["innererror"]["code"], "KeyDisabled")
        status, body, _ = self.wrap(self.key_client(), key)
        self.assertKvError(status, body, 403, "Forbidden", "KeyDisabled", "disabled key")
        self.patch_key(key, enabled=True)
        self.assertEqual(self.crypto(self.host_kid(key)).unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped).key_id,
                         self.host_kid(key))

    def test_not_granted(self):
        key = self.make_key(grants=[])
        with self.assertRaises(HttpResponseError) as cm:
            self.key_client().get_key(key["name"])
        self.assertEqual(cm.exception.status_code, 403)
        self.assertEqual(cm.exception.error.code, "Forbidden")
        error = cm.exception.response.json()["error"]
        self.assertEqual(error["innererror"]["code"], "ForbiddenByRbac")
        self.assertIn("Caller is not authorized to perform action on resource.", error["message"])
        self.assertIn(f"appid={self.app};", error["message"])
        self.assertIn("Action: 'Microsoft.KeyVault/vaults/keys/read'", error["message"])
        with self.assertRaises(HttpResponseError) as cm:
            self.crypto(self.host_kid(key)).unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, b"\0" * 256)
        self.assertEqual(cm.exception.status_code, 403)
        self.assertIn("Microsoft.KeyVault/vaults/keys/unwrap/action", cm.exception.error.message)
        self.patch_key(key, grants=[self.app])
        self.assertEqual(self.key_client().get_key(key["name"]).id, self.host_kid(key))

    def test_deny_ops(self):
        key = self.make_key(deny_ops=["unwrapKey"])
        client = self.key_client()
        status, body, _ = self.wrap(client, key)
        self.assertEqual(status, 200, body)
        status, body, _ = self.unwrap(client, key, b64url_decode(body["value"]))
        self.assertKvError(status, body, 403, "Forbidden", "ForbiddenByRbac",
                           "Action: 'Microsoft.KeyVault/vaults/keys/unwrap/action'")
        self.patch_key(key, deny_ops=["wrapKey", "get"])
        status, body, _ = self.wrap(client, key)
        self.assertKvError(status, body, 403, "Forbidden", "ForbiddenByRbac", "keys/wrap/action")
        with self.assertRaises(HttpResponseError) as cm:
            client.get_key(key["name"])
        self.assertEqual(cm.exception.status_code, 403)

    def test_expired_key_unwraps_but_does_not_wrap(self):
        key = self.make_key()
        client = self.key_client()
        status, body, _ = self.wrap(client, key)
        self.assertEqual(status, 200, body)
        wrapped = b64url_decode(body["value"])
        self.patch_key(key, exp=int(time.time()) - 10)
        status, body, _ = self.wrap(client, key)
        self.assertKvError(status, body, 403, "Forbidden", "KeyExpired")
        status, body, _ = self.unwrap(client, key, wrapped)
        self.assertEqual(status, 200, body)
        self.patch_key(key, exp=None)
        status, body, _ = self.wrap(client, key)
        self.assertEqual(status, 200, body)

    def test_not_yet_valid_key(self):
        key = self.make_key()
        client = self.key_client()
        status, body, _ = self.wrap(client, key)
        wrapped = b64url_decode(body["value"])
        self.patch_key(key, nbf=int(time.time()) + 3600)
        status, body, _ = self.wrap(client, key)
        self.assertKvError(status, body, 403, "Forbidden", "KeyNotYetValid")
        status, body, _ = self.unwrap(client, key, wrapped)
        self.assertKvError(status, body, 403, "Forbidden", "KeyNotYetValid")

    def test_operation_not_in_key_ops(self):
        key = self.make_key(key_ops=["unwrapKey"])
        status, body, _ = self.wrap(self.key_client(), key)
        self.assertKvError(status, body, 403, "Forbidden", "KeyOperationForbidden")

    def test_ec_key_cannot_wrap(self):
        key = self.make_key(kty="EC", key_ops=["sign", "verify", "wrapKey"])
        status, body, _ = self.wrap(self.key_client(), key)
        self.assertKvError(status, body, 400, "BadParameter", message="Key and algorithm are not compatible")

    def test_bad_requests(self):
        key = self.make_key()
        client = self.key_client()
        status, body, _ = self.wrap(client, key, alg="A256KW")
        self.assertKvError(status, body, 400, "BadParameter", message="A256KW")
        status, body, _ = self.wrap(client, key, value="not base64!")
        self.assertKvError(status, body, 400, "BadParameter", message="base64url")
        status, body, _ = self.wrap(client, key, value=b64url(os.urandom(200)))  # too long for OAEP-256/2048
        self.assertKvError(status, body, 400, "BadParameter")
        status, body, _ = self.unwrap(client, key, os.urandom(256))
        self.assertKvError(status, body, 400, "BadParameter", message="Decryption failed")
        resp = client.send_request(HttpRequest("POST", f"/keys/{key['name']}/wrapkey?{API}", content=b"{nope",
                                               headers={"Content-Type": "application/json"}))
        self.assertEqual(resp.status_code, 400)
        self.assertEqual(resp.json()["error"]["code"], "BadParameter")
        # KeyClient.send_request adds the client's api-version itself, so check its absence raw:
        status, _, body = raw("GET", f"/{self.vault}/keys/{key['name']}",
                              headers={"Authorization": "Bearer " + self.token_for()})
        self.assertKvError(status, body, 400, "BadParameter", message="api-version")
        resp = client.send_request(HttpRequest("GET", f"/keys/{key['name']}"))  # SDK default 2025-07-01
        self.assertEqual(resp.status_code, 200)


class HeadersAndTimingTest(StandInCase):
    def test_key_vault_headers(self):
        vault = self.make_vault(region="norwayeast")
        key = self.make_key(vault=vault)
        client = self.key_client(vault)
        resp = client.send_request(HttpRequest("GET", f"/keys/{key['name']}?{API}"))
        self.assertEqual(resp.status_code, 200)
        self.assertEqual(resp.headers["x-ms-keyvault-region"], "norwayeast")
        self.assertTrue(resp.headers["x-ms-keyvault-service-version"].startswith("1.9."))
        uuid.UUID(resp.headers["x-ms-request-id"])
        self.assertEqual(resp.headers["content-type"], "application/json; charset=utf-8")
        missing = client.send_request(HttpRequest("GET", f"/keys/{uniq('nokey')}?{API}"))
        self.assertEqual(missing.status_code, 404)
        self.assertEqual(missing.headers["x-ms-keyvault-region"], "norwayeast")
        control("PATCH", f"/vaults/{vault}", {"region": "swedencentral"})
        resp = client.send_request(HttpRequest("GET", f"/keys/{key['name']}?{API}"))
        self.assertEqual(resp.headers["x-ms-keyvault-region"], "swedencentral")

    def test_delay_and_concurrency(self):
        vault = self.make_vault(delay_seconds=0.8)
        key = self.make_key(vault=vault)
        token = self.token_for()
        results = []

        def one():
            t0 = time.monotonic()
            status, _, _ = raw("GET", f"/{vault}/keys/{key['name']}?{API}", headers={"Authorization": "Bearer " + token})
            results.append((status, time.monotonic() - t0))

        t0 = time.monotonic()
        threads = [threading.Thread(target=one) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        total = time.monotonic() - t0
        self.assertEqual([r[0] for r in results], [200, 200, 200])
        self.assertTrue(all(r[1] >= 0.8 for r in results), results)
        self.assertLess(total, 2.0)  # served concurrently, not one after another
        control("PATCH", f"/vaults/{vault}", {"delay_seconds": 0})
        t0 = time.monotonic()
        status, _, _ = raw("GET", f"/{vault}/keys/{key['name']}?{API}", headers={"Authorization": "Bearer " + token})
        self.assertEqual(status, 200)
        self.assertLess(time.monotonic() - t0, 0.5)


# --------------------------------------------------------------------------- auth: challenge, Entra


class ChallengeTest(StandInCase):
    def vault_entries(self, vault=None):
        return [e for e in request_log() if e["vault"] == (vault or self.vault)]

    def token_entries(self, tenant=None):
        return [e for e in request_log() if e["path"] == f"/{tenant or self.tenant}/oauth2/v2.0/token"]

    def test_sdk_follows_the_401_challenge_and_caches_the_token(self):
        key = self.make_key()
        client = self.key_client()
        client.get_key(key["name"])
        entries = self.vault_entries()
        self.assertEqual([(e["status"], e["authorized"]) for e in entries], [(401, False), (200, True)])
        self.assertEqual(len(self.token_entries()), 1)
        client.get_key(key["name"])
        self.assertEqual([(e["status"], e["authorized"]) for e in self.vault_entries()],
                         [(401, False), (200, True), (200, True)])
        self.assertEqual(len(self.token_entries()), 1)

    def test_raw_challenge_shape(self):
        status, headers, body = raw("GET", f"/{self.vault}/keys/any?{API}")
        self.assertEqual(status, 401)
        self.assertEqual(headers["www-authenticate"],
                         f'Bearer authorization="{S["base"]}/{self.tenant}", resource="https://vault.azure.net"')
        self.assertEqual(body, {"error": {"code": "Unauthorized",
                                          "message": "AKV10000: Request is missing a Bearer or PoP token."}})
        self.assertEqual(headers["x-ms-keyvault-region"], "westeurope")

    def test_challenge_authority_host_is_not_used_by_the_sdk(self):
        key = self.make_key()
        control("POST", "/config", {"challenge_authority": "https://login.standin.invalid"})
        try:
            status, headers, _ = raw("GET", f"/{self.vault}/keys/any?{API}")
            self.assertEqual(headers["www-authenticate"],
                             f'Bearer authorization="https://login.standin.invalid/{self.tenant}", '
                             'resource="https://vault.azure.net"')
            got = self.key_client().get_key(key["name"])
            self.assertEqual(got.id, self.host_kid(key))
            self.assertEqual(len(self.token_entries()), 1)  # the token came from the configured authority
        finally:
            control("POST", "/config", {"challenge_authority": None})
        self.assertEqual(control("GET", "/config")["effective_challenge_authority"], S["base"])

    def test_unknown_and_expired_tokens(self):
        status, headers, body = raw("GET", f"/{self.vault}/keys/any?{API}",
                                    headers={"Authorization": "Bearer forged"})
        self.assertKvError(status, body, 401, "Unauthorized", message="AKV10022")
        self.assertIn("www-authenticate", headers)
        control("POST", "/config", {"token_lifetime_seconds": 0})
        try:
            status, _, body = form_token(self.tenant, grant_type="client_credentials", client_id=self.app,
                                         client_secret=self.secret, scope=VAULT_SCOPE)
            self.assertEqual((status, body["expires_in"]), (200, 0))
        finally:
            control("POST", "/config", {"token_lifetime_seconds": None})
        status, headers, body = raw("GET", f"/{self.vault}/keys/any?{API}",
                                    headers={"Authorization": "Bearer " + body["access_token"]})
        self.assertKvError(status, body, 401, "Unauthorized", message="AKV10013")
        self.assertIn("www-authenticate", headers)

    def test_token_of_another_tenant_is_rejected(self):
        other = str(uuid.uuid4())
        control("POST", "/tenants", {"tenant_id": other, "service_principals": [self.app]})
        vault_b = self.make_vault(tenant=other)
        key = self.make_key(vault=vault_b)
        token_a = self.token_for()
        status, headers, body = raw("GET", f"/{vault_b}/keys/{key['name']}?{API}",
                                    headers={"Authorization": "Bearer " + token_a})
        self.assertKvError(status, body, 401, "Unauthorized",
                           message=f"AKV10032: Invalid issuer. Expected one of https://sts.windows.net/{other}/")
        self.assertIn(f"found https://sts.windows.net/{self.tenant}/", body["error"]["message"])
        self.assertEqual(headers["www-authenticate"],
                         f'Bearer authorization="{S["base"]}/{other}", resource="https://vault.azure.net"')

    def test_sdk_refuses_to_switch_tenant_when_not_allowed(self):
        other = str(uuid.uuid4())
        control("POST", "/tenants", {"tenant_id": other, "service_principals": [self.app]})
        vault_b = self.make_vault(tenant=other)
        key = self.make_key(vault=vault_b)
        client = self.key_client(vault_b, self.credential(allowed=()))
        with self.assertRaises(ClientAuthenticationError) as cm:
            client.get_key(key["name"])
        self.assertIn(other, str(cm.exception))
        self.assertIn("additionally_allowed_tenants", str(cm.exception))
        # refused inside the SDK: no token was asked from either tenant
        self.assertEqual(self.token_entries(other), [])
        self.assertEqual(self.token_entries(), [])

    def test_sdk_switches_to_the_challenge_tenant_when_allowed(self):
        # with additionally_allowed_tenants=["*"] the Python SDK asks the *vault's* tenant for a token
        other = str(uuid.uuid4())
        control("POST", "/tenants", {"tenant_id": other, "service_principals": []})
        vault_b = self.make_vault(tenant=other)
        key = self.make_key(vault=vault_b)
        with self.assertRaises(ClientAuthenticationError) as cm:
            self.key_client(vault_b, self.credential(allowed=("*",))).get_key(key["name"])
        self.assertIn("AADSTS7000229", str(cm.exception))
        self.assertIn(other, str(cm.exception))
        self.assertEqual([e["status"] for e in self.token_entries(other)], [400])
        # once the app has a service principal there, the same code succeeds
        control("POST", "/tenants", {"tenant_id": other, "service_principals": [self.app]})
        http_challenge_cache.clear()
        got = self.key_client(vault_b, self.credential(allowed=("*",))).get_key(key["name"])
        self.assertEqual(got.id, self.host_kid(key))
        self.assertEqual(self.token_entries(), [])

    def test_path_form_vaults_share_one_challenge_cache_entry(self):
        # Observed SDK behaviour: the challenge cache is keyed by host, so two path-form vaults of
        # different tenants on one host cost an extra 401 round (AKV10032) when switching.
        other = str(uuid.uuid4())
        control("POST", "/tenants", {"tenant_id": other, "service_principals": [self.app]})
        vault_b = self.make_vault(tenant=other)
        key_a, key_b = self.make_key(), self.make_key(vault=vault_b)
        cred = self.credential(allowed=("*",))
        for vault, key in ((self.vault, key_a), (vault_b, key_b)):
            resp = self.key_client(vault, cred, form="path").send_request(
                HttpRequest("GET", f"/keys/{key['name']}?{API}"))
            self.assertEqual(resp.status_code, 200)
        self.assertEqual([(e["status"], e["authorized"]) for e in self.vault_entries(vault_b)],
                         [(401, False), (200, True)])
        self.assertEqual(len(self.token_entries(other)), 1)


class EntraTest(StandInCase):
    def assertEntraError(self, status, body, want_status, error, code):
        self.assertEqual(status, want_status, body)
        self.assertEqual(body["error"], error, body)
        self.assertEqual(body["error_codes"], [code])
        self.assertTrue(body["error_description"].startswith(f"AADSTS{code}: "), body)
        for field in ("Trace ID: ", "Correlation ID: ", "Timestamp: "):
            self.assertIn(field, body["error_description"])
        self.assertIn(body["trace_id"], body["error_description"])
        self.assertIn(body["correlation_id"], body["error_description"])
        self.assertRegex(body["timestamp"], r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ$")
        self.assertEqual(body["error_uri"], f"{S['base']}/error?code={code}")

    def good(self, **over):
        fields = dict(grant_type="client_credentials", client_id=self.app, client_secret=self.secret, scope=VAULT_SCOPE)
        fields.update(over)
        return fields

    def test_token_success_shape(self):
        status, headers, body = form_token(self.tenant, **self.good())
        self.assertEqual(status, 200)
        self.assertEqual(set(body), {"token_type", "expires_in", "ext_expires_in", "access_token"})
        self.assertEqual((body["token_type"], body["expires_in"], body["ext_expires_in"]), ("Bearer", 3599, 3599))
        log = json.dumps(request_log())
        self.assertNotIn(body["access_token"], log)
        self.assertNotIn(self.secret, log)

    def test_token_errors(self):
        status, _, body = form_token(str(uuid.uuid4()), **self.good())
        self.assertEntraError(status, body, 400, "invalid_request", 90002)
        status, _, body = form_token(self.tenant, **self.good(client_secret="wrong"))
        self.assertEntraError(status, body, 401, "invalid_client", 7000215)
        status, _, body = form_token(self.tenant, **self.good(client_id=str(uuid.uuid4())))
        self.assertEntraError(status, body, 400, "unauthorized_client", 700016)
        status, _, body = form_token(self.tenant, **self.good(grant_type="password"))
        self.assertEntraError(status, body, 400, "unsupported_grant_type", 70003)
        status, _, body = form_token(self.tenant, **self.good(scope="https://vault.azure.net/keys.read"))
        self.assertEntraError(status, body, 400, "invalid_scope", 1002012)
        status, _, body = form_token(self.tenant, **self.good(scope="https://storage.azure.com/.default"))
        self.assertEntraError(status, body, 400, "invalid_scope", 70011)
        status, _, body = raw("GET", f"/{self.tenant}/oauth2/v2.0/token")
        self.assertEntraError(status, body, 400, "invalid_request", 900561)

    def test_openid_configuration(self):
        status, _, body = raw("GET", f"/{self.tenant}/v2.0/.well-known/openid-configuration")
        self.assertEqual(status, 200)
        self.assertEqual(body["issuer"], f"https://login.microsoftonline.com/{self.tenant}/v2.0")
        self.assertEqual(body["token_endpoint"], f"{S['base']}/{self.tenant}/oauth2/v2.0/token")
        self.assertTrue(body["authorization_endpoint"].startswith(S["base"] + "/"))
        status, _, body = raw("GET", f"/{uuid.uuid4()}/v2.0/.well-known/openid-configuration")
        self.assertEqual(status, 400)
        self.assertEqual(body["error_codes"], [90002])

    def test_sdk_wrong_secret(self):
        key = self.make_key()
        with self.assertRaises(ClientAuthenticationError) as cm:
            self.key_client(credential=self.credential(secret="not-the-secret")).get_key(key["name"])
        self.assertIn("AADSTS7000215", str(cm.exception))

    def test_sdk_app_without_service_principal(self):
        lonely = str(uuid.uuid4())
        control("POST", "/apps", {"client_id": lonely, "client_secret": "s"})
        key = self.make_key()
        with self.assertRaises(ClientAuthenticationError) as cm:
            self.credential(client_id=lonely, secret="s").get_token(VAULT_SCOPE)
        self.assertIn("AADSTS7000229", str(cm.exception))
        with self.assertRaises(ClientAuthenticationError) as cm:
            self.key_client(credential=self.credential(client_id=lonely, secret="s")).get_key(key["name"])
        self.assertIn("AADSTS7000229", str(cm.exception))

    def test_sdk_unknown_tenant(self):
        # MSAL reads the tenant's OpenID configuration first; the 400 (AADSTS90002) there surfaces as a
        # ClientAuthenticationError that does not quote the AADSTS code, and no token request is made.
        missing = str(uuid.uuid4())
        with self.assertRaises(ClientAuthenticationError) as cm:
            self.credential(tenant=missing).get_token(VAULT_SCOPE)
        self.assertIn("Unable to get authority configuration", str(cm.exception))
        self.assertIn(missing, str(cm.exception))
        paths = [e["path"] for e in request_log() if missing in e["path"]]
        self.assertEqual(paths, [f"/{missing}/v2.0/.well-known/openid-configuration"])


class ControlTest(unittest.TestCase):
    def test_errors_are_json(self):
        status, _, body = raw("POST", "/_control/vaults", "{not json")
        self.assertEqual(status, 400)
        self.assertIn("error", body)
        status, _, body = raw("GET", "/_control/nothing-here")
        self.assertEqual(status, 404)
        status, headers, body = raw("GET", "/no/such/route")
        self.assertEqual(status, 404)
        self.assertEqual(headers["content-type"], "application/json; charset=utf-8")
        status, _, body = raw("GET", f"/{uniq('ghost')}/keys/k?{API}")
        self.assertEqual((status, body["error"]["code"]), (404, "VaultNotFound"))
        status, _, body = raw("POST", "/_control/vaults/" + uniq("ghost") + "/keys", {"name": "k"})
        self.assertEqual(status, 404)
        status, _, body = raw("POST", "/_control/config", {"challenge_authority": "http://plain"})
        self.assertEqual(status, 400)

    def test_key_state_and_patch(self):
        tenant = str(uuid.uuid4())
        control("POST", "/tenants", {"tenant_id": tenant, "service_principals": []})
        vault = uniq("v")
        state = control("POST", "/vaults", {"name": vault, "tenant_id": tenant, "region": "uksouth"})
        self.assertEqual(state["url"], f"{S['base']}/{vault}")
        key = control("POST", f"/vaults/{vault}/keys", {"name": "k1", "grants": ["a"], "deny_ops": ["get"]})
        self.assertRegex(key["version"], r"^[0-9a-f]{32}$")
        self.assertEqual(key["kid"], f"{S['base']}/{vault}/keys/k1/{key['version']}")
        patched = control("PATCH", f"/vaults/{vault}/keys/k1", {"enabled": False, "exp": 123, "grants": ["b"]})
        self.assertEqual((patched["versions"][-1]["enabled"], patched["versions"][-1]["exp"]), (False, 123))
        self.assertEqual((patched["grants"], patched["deny_ops"]), (["b"], ["get"]))
        patched = control("PATCH", f"/vaults/{vault}/keys/k1", {"exp": None, "deny_ops": []})
        self.assertEqual((patched["versions"][-1]["exp"], patched["deny_ops"]), (None, []))
        status, _, _ = raw("PATCH", f"/_control/vaults/{vault}/keys/k1", {"deny_ops": ["fly"]})
        self.assertEqual(status, 400)


if __name__ == "__main__":
    unittest.main()
