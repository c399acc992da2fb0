"""Checks tests/gcp/standin.py against Google's own Python client for Cloud KMS.

Run from the repository root with the venv that has tests/gcp/requirements.txt:
    ~/.cache/cmek-console/moto-venv/bin/python -m unittest tests/gcp/test_standin.py

The suite starts the stand-in itself (subprocess, free port) and stops it at the end.
Every client is google.cloud.kms.KeyManagementServiceClient with transport="rest",
credentials from a service-account key file the control API made, and
client_options=ClientOptions(api_endpoint="http://127.0.0.1:PORT"): the REST transport
keeps an explicit http:// scheme (it only adds https:// to a bare host).

Note on exception classes: the REST transport picks the exception class from the HTTP
status alone (google.api_core.exceptions.from_http_response), so INVALID_ARGUMENT and
FAILED_PRECONDITION both arrive as BadRequest (400) and PERMISSION_DENIED as Forbidden
(403).  The canonical code is in the body's "status" field, which assertGoogleError checks.
"""

import base64
import http.client
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import uuid

import requests
from google.api_core import exceptions as gexc
from google.api_core.client_options import ClientOptions
from google.auth import crypt, jwt
from google.auth.transport.requests import Request as AuthRequest
from google.cloud import kms
from google.auth import credentials as google_credentials
from google.oauth2 import service_account

HERE = os.path.dirname(os.path.abspath(__file__))
STANDIN = os.path.join(HERE, "standin.py")
sys.path.insert(0, HERE)
import standin  # noqa: E402  (the pure helpers: crc32c)

S = {}  # filled by setUpModule: proc, port, base, dir, line

ENC_DEC = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
VIEWER = "roles/cloudkms.viewer"
P_ENC = "cloudkms.cryptoKeyVersions.useToEncrypt"
P_DEC = "cloudkms.cryptoKeyVersions.useToDecrypt"
P_GET = "cloudkms.cryptoKeys.get"
P_VGET = "cloudkms.cryptoKeyVersions.get"
DECRYPTION_FAILED = "Decryption failed: verify that 'name' refers to the correct CryptoKey."


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setUpModule():
    tmp = tempfile.mkdtemp(prefix="gcp-standin-")
    port = _free_port()
    err = open(os.path.join(tmp, "stderr.txt"), "wb")
    proc = subprocess.Popen([sys.executable, STANDIN, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL)
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
            if chunk:
                line += chunk
    S.update(line=line.decode().strip(), base=f"http://127.0.0.1:{port}")


def tearDownModule():
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
        path = os.path.join(S["dir"], "stderr.txt")
        if os.path.exists(path) and os.path.getsize(path):
            with open(path, "rb") as f:
                sys.stderr.write("stand-in stderr:\n" + f.read().decode(errors="replace"))
        shutil.rmtree(S["dir"], ignore_errors=True)


# --------------------------------------------------------------------------- helpers


def raw(method, path, body=None, headers=None, timeout=30):
    """One plain HTTP request; returns (status, lower-cased headers, parsed JSON or text or None)."""
    conn = http.client.HTTPConnection("127.0.0.1", S["port"], timeout=timeout)
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
        out_headers = {k.lower(): v for k, v in resp.getheaders()}
        status = resp.status
    finally:
        conn.close()
    try:
        parsed = json.loads(payload) if payload else None
    except ValueError:
        parsed = payload.decode(errors="replace")
    return status, out_headers, parsed


def control(method, path, body=None, expect=200):
    status, _, data = raw(method, "/_control" + path, body)
    if status != expect:
        raise AssertionError(f"control {method} {path} -> {status} {data}")
    return data


def uniq(prefix):
    return prefix + uuid.uuid4().hex[:10]


def b64(data):
    return base64.b64encode(data).decode()


def request_log():
    return control("GET", "/requests")


class StandInCase(unittest.TestCase):
    """Each test gets its own service account, project and key ring (unique names)."""

    location = "us-east1"

    def setUp(self):
        self.project = uniq("cust-")
        self.ring = uniq("ring-")
        self.key_file = control("POST", "/serviceAccounts", {"project": "platform-proj", "name": uniq("sa-")})
        self.email = self.key_file["client_email"]
        self.key_path = os.path.join(S["dir"], self.key_file["private_key_id"] + ".json")
        with open(self.key_path, "w") as f:
            json.dump(self.key_file, f)

    def make_key(self, name=None, roles=(ENC_DEC, VIEWER), members=None, **fields):
        body = {"project": self.project, "location": self.location, "keyRing": self.ring, "key": name or uniq("k-"),
                "bindings": [{"role": r, "members": members or [self.email]} for r in roles]}
        body.update(fields)
        return control("POST", "/cryptoKeys", body)

    def ring_name(self):
        return f"projects/{self.project}/locations/{self.location}/keyRings/{self.ring}"

    def client(self, credentials=None):
        creds = credentials or service_account.Credentials.from_service_account_file(self.key_path)
        return kms.KeyManagementServiceClient(transport="rest", credentials=creds,
                                              client_options=ClientOptions(api_endpoint=S["base"]))

    def version(self, key, number):
        return f"{key['name']}/cryptoKeyVersions/{number}"

    def set_state(self, key, number, verb):
        return control("POST", f"/{self.version(key, number)}:{verb}")

    def grant(self, resource, role, member=None):
        control("POST", f"/{resource}:addIamMember", {"role": role, "member": member or self.email})

    def revoke(self, resource, role, member=None):
        control("POST", f"/{resource}:removeIamMember", {"role": role, "member": member or self.email})

    def assertGoogleError(self, exc, http_status, status, message=None, contains=None):
        body = exc.response.json()
        self.assertEqual(exc.code, http_status, body)
        self.assertEqual(body["error"]["code"], http_status, body)
        self.assertEqual(body["error"]["status"], status, body)
        if message is not None:
            self.assertEqual(body["error"]["message"], message)
            self.assertIn(message, exc.message)  # api_core prefixes "METHOD URL: "
        if contains is not None:
            self.assertIn(contains, body["error"]["message"])
        return body

    def bearer(self, **claims):
        """Authorization header with a self-signed JWT, as Google's libraries make from the key file."""
        now = int(time.time())
        payload = {"iss": self.email, "sub": self.email, "aud": "https://cloudkms.googleapis.com/",
                   "iat": now, "exp": now + 3600}
        payload.update(claims)
        signer = crypt.RSASigner.from_service_account_info(self.key_file)
        return {"Authorization": "Bearer " + jwt.encode(signer, payload).decode()}

    def encrypt(self, client, name, plaintext, aad=b"", **kw):
        return client.encrypt(request={"name": name, "plaintext": plaintext, "additional_authenticated_data": aad,
                                       **kw})

    def decrypt(self, client, name, ciphertext, aad=b"", **kw):
        return client.decrypt(request={"name": name, "ciphertext": ciphertext, "additional_authenticated_data": aad,
                                       **kw})


# --------------------------------------------------------------------------- startup, CRC32C


class StartupTest(unittest.TestCase):
    def test_printed_line_and_health(self):
        self.assertEqual(S["line"], f"listening http://127.0.0.1:{S['port']}")
        self.assertEqual(control("GET", "/health"), {"ok": True})

    def test_port_zero_picks_a_free_port_and_sigterm_stops_it(self):
        proc = subprocess.Popen([sys.executable, STANDIN, "--port", "0"], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        try:
            ready, _, _ = select.select([proc.stdout], [], [], 30)
            self.assertTrue(ready)
            line = proc.stdout.readline().decode().strip()
            self.assertRegex(line, r"^listening http://127\.0\.0\.1:\d+$")
            port = int(line.rsplit(":", 1)[1])
            self.assertNotEqual(port, 0)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/_control/health")
            self.assertEqual(conn.getresponse().status, 200)
            conn.close()
        finally:
            proc.terminate()
            self.assertEqual(proc.wait(10), 0)
            proc.stdout.close()


class Crc32cTest(unittest.TestCase):
    def test_known_vectors(self):
        # RFC 3720 (iSCSI) appendix B.4 and the classic check value.
        self.assertEqual(standin.crc32c(b""), 0)
        self.assertEqual(standin.crc32c(b"123456789"), 0xE3069283)
        self.assertEqual(standin.crc32c(bytes(32)), 0x8A9136AA)
        self.assertEqual(standin.crc32c(b"\xff" * 32), 0x62A8AB43)
        self.assertEqual(standin.crc32c(bytes(range(32))), 0x46DD794E)
        self.assertEqual(standin.crc32c(bytes(range(31, -1, -1))), 0x113FDB5C)

    def test_incremental(self):
        data = os.urandom(1000)
        self.assertEqual(standin.crc32c(data[500:], standin.crc32c(data[:500])), standin.crc32c(data))


# --------------------------------------------------------------------------- get


class GetTest(StandInCase):
    def test_get_crypto_key_fields(self):
        before = time.time()
        key = self.make_key(rotationPeriod="7776000s")
        got = self.client().get_crypto_key(name=key["name"])
        self.assertEqual(got.name, key["name"])
        self.assertEqual(got.purpose, kms.CryptoKey.CryptoKeyPurpose.ENCRYPT_DECRYPT)
        self.assertEqual(got.primary.name, self.version(key, 1))
        self.assertEqual(got.primary.state, kms.CryptoKeyVersion.CryptoKeyVersionState.ENABLED)
        self.assertEqual(got.primary.protection_level, kms.ProtectionLevel.SOFTWARE)
        self.assertEqual(got.primary.algorithm,
                         kms.CryptoKeyVersion.CryptoKeyVersionAlgorithm.GOOGLE_SYMMETRIC_ENCRYPTION)
        created = got.create_time.timestamp()
        self.assertLessEqual(abs(created - before), 5)
        self.assertEqual(got.primary.create_time.timestamp(), created)
        self.assertEqual(got.rotation_period.total_seconds(), 7776000)
        self.assertAlmostEqual(got.next_rotation_time.timestamp(), created + 7776000, delta=1)
        self.assertEqual(got.version_template.protection_level, kms.ProtectionLevel.SOFTWARE)
        self.assertEqual(got.version_template.algorithm,
                         kms.CryptoKeyVersion.CryptoKeyVersionAlgorithm.GOOGLE_SYMMETRIC_ENCRYPTION)
        self.assertEqual(got.destroy_scheduled_duration.total_seconds(), 30 * 24 * 3600)

    def test_hsm_key_without_rotation_and_custom_destroy_duration(self):
        key = self.make_key(protectionLevel="HSM", destroyScheduledDuration="86400s")
        got = self.client().get_crypto_key(name=key["name"])
        self.assertEqual(got.primary.protection_level, kms.ProtectionLevel.HSM)
        self.assertEqual(got.version_template.protection_level, kms.ProtectionLevel.HSM)
        self.assertEqual(got.destroy_scheduled_duration.total_seconds(), 86400)
        self.assertNotIn("rotation_period", got)
        self.assertNotIn("next_rotation_time", got)

    def test_asymmetric_key_has_no_primary(self):
        key = self.make_key(purpose="ASYMMETRIC_SIGN")
        got = self.client().get_crypto_key(name=key["name"])
        self.assertEqual(got.purpose, kms.CryptoKey.CryptoKeyPurpose.ASYMMETRIC_SIGN)
        self.assertNotIn("primary", got)
        self.assertEqual(got.version_template.algorithm,
                         kms.CryptoKeyVersion.CryptoKeyVersionAlgorithm.EC_SIGN_P256_SHA256)

    def test_get_crypto_key_version_fields(self):
        key = self.make_key()
        got = self.client().get_crypto_key_version(name=self.version(key, 1))
        self.assertEqual(got.name, self.version(key, 1))
        self.assertEqual(got.state, kms.CryptoKeyVersion.CryptoKeyVersionState.ENABLED)
        self.assertEqual(got.protection_level, kms.ProtectionLevel.SOFTWARE)
        self.assertEqual(got.algorithm, kms.CryptoKeyVersion.CryptoKeyVersionAlgorithm.GOOGLE_SYMMETRIC_ENCRYPTION)
        self.assertNotIn("destroy_time", got)

    def test_list_versions_and_get_key_ring(self):
        key = self.make_key()
        control("POST", f"/{key['name']}:rotate")
        control("POST", f"/{key['name']}:rotate")
        self.set_state(key, 1, "disable")
        client = self.client()
        got = list(client.list_crypto_key_versions(request={"parent": key["name"], "page_size": 2}))
        self.assertEqual([v.name for v in got], [self.version(key, n) for n in (1, 2, 3)])
        self.assertEqual(got[0].state, kms.CryptoKeyVersion.CryptoKeyVersionState.DISABLED)
        enabled = client.list_crypto_key_versions(request={"parent": key["name"], "filter": "state=ENABLED"})
        self.assertEqual([v.name for v in enabled], [self.version(key, 2), self.version(key, 3)])
        # keyRings.get is checked on the ring: a role on the key alone does not reach it
        with self.assertRaises(gexc.Forbidden):
            client.get_key_ring(name=self.ring_name())
        self.grant(self.ring_name(), VIEWER)
        ring = client.get_key_ring(name=self.ring_name())
        self.assertEqual(ring.name, self.ring_name())


# --------------------------------------------------------------------------- encrypt / decrypt


class EncryptDecryptTest(StandInCase):
    def test_round_trip_with_aad_and_crc32c(self):
        key = self.make_key()
        client = self.client()
        secret, ctx = os.urandom(32), b'{"cluster":"c-1","org":"o-1"}'
        enc = self.encrypt(client, key["name"], secret, ctx, plaintext_crc32c=standin.crc32c(secret),
                           additional_authenticated_data_crc32c=standin.crc32c(ctx))
        self.assertEqual(enc.name, self.version(key, 1))
        self.assertTrue(enc.verified_plaintext_crc32c)
        self.assertTrue(enc.verified_additional_authenticated_data_crc32c)
        self.assertEqual(enc.ciphertext_crc32c, standin.crc32c(enc.ciphertext))
        self.assertEqual(enc.protection_level, kms.ProtectionLevel.SOFTWARE)
        self.assertNotIn(secret, enc.ciphertext)
        self.assertEqual(len(enc.ciphertext), len(secret) + 41)
        dec = self.decrypt(client, key["name"], enc.ciphertext, ctx, ciphertext_crc32c=standin.crc32c(enc.ciphertext),
                           additional_authenticated_data_crc32c=standin.crc32c(ctx))
        self.assertEqual(dec.plaintext, secret)
        self.assertEqual(dec.plaintext_crc32c, standin.crc32c(secret))
        self.assertTrue(dec.used_primary)
        self.assertEqual(dec.protection_level, kms.ProtectionLevel.SOFTWARE)

    def test_without_checksums_nothing_is_verified(self):
        key = self.make_key()
        enc = self.encrypt(self.client(), key["name"], b"data")
        self.assertFalse(enc.verified_plaintext_crc32c)
        self.assertFalse(enc.verified_additional_authenticated_data_crc32c)
        self.assertEqual(enc.ciphertext_crc32c, standin.crc32c(enc.ciphertext))

    def test_ciphertext_names_the_version(self):
        key = self.make_key()
        control("POST", f"/{key['name']}:rotate")
        ct = self.encrypt(self.client(), key["name"], b"x").ciphertext
        self.assertEqual(ct[0], 1)
        self.assertEqual(int.from_bytes(ct[9:13], "big"), 2)

    def test_wrong_checksums_are_invalid_argument(self):
        key = self.make_key()
        client = self.client()
        with self.assertRaises(gexc.BadRequest) as cm:
            self.encrypt(client, key["name"], b"data", plaintext_crc32c=standin.crc32c(b"datA"))
        self.assertGoogleError(cm.exception, 400, "INVALID_ARGUMENT",
                               "The checksum in field plaintext_crc32c did not match the data in field plaintext.")
        with self.assertRaises(gexc.BadRequest) as cm:
            self.encrypt(client, key["name"], b"data", b"ctx", additional_authenticated_data_crc32c=1)
        self.assertGoogleError(cm.exception, 400, "INVALID_ARGUMENT", contains="additional_authenticated_data_crc32c")
        ct = self.encrypt(client, key["name"], b"data").ciphertext
        with self.assertRaises(gexc.BadRequest) as cm:
            self.decrypt(client, key["name"], ct, ciphertext_crc32c=standin.crc32c(ct) ^ 1)
        self.assertGoogleError(cm.exception, 400, "INVALID_ARGUMENT",
                               "The checksum in field ciphertext_crc32c did not match the data in field ciphertext.")

    def test_wrong_aad_is_invalid_argument(self):
        key = self.make_key()
        client = self.client()
        ct = self.encrypt(client, key["name"], b"secret", b"context-a").ciphertext
        for aad in (b"context-b", b""):
            with self.assertRaises(gexc.BadRequest) as cm:
                self.decrypt(client, key["name"], ct, aad)
            self.assertGoogleError(cm.exception, 400, "INVALID_ARGUMENT", DECRYPTION_FAILED)

    def test_wrong_key_and_tampered_ciphertext_are_invalid_argument(self):
        key, other = self.make_key(), self.make_key()
        client = self.client()
        ct = self.encrypt(client, key["name"], b"secret").ciphertext
        tampered = ct[:-1] + bytes([ct[-1] ^ 1])
        for name, blob in ((other["name"], ct), (key["name"], tampered), (key["name"], b"not a ciphertext"),
                           (key["name"], ct[:13] + ct[13:20])):
            with self.assertRaises(gexc.BadRequest) as cm:
                self.decrypt(client, name, blob)
            self.assertGoogleError(cm.exception, 400, "INVALID_ARGUMENT", DECRYPTION_FAILED)
        # the key tag is checked before the state: another key's ciphertext is never FAILED_PRECONDITION
        self.set_state(other, 1, "disable")
        with self.assertRaises(gexc.BadRequest) as cm:
            self.decrypt(client, other["name"], ct)
        self.assertGoogleError(cm.exception, 400, "INVALID_ARGUMENT", DECRYPTION_FAILED)
        # a version number the key does not have
        forged = ct[:9] + (7).to_bytes(4, "big") + ct[13:]
        with self.assertRaises(gexc.BadRequest) as cm:
            self.decrypt(client, key["name"], forged)
        self.assertGoogleError(cm.exception, 400, "INVALID_ARGUMENT", DECRYPTION_FAILED)

    def test_encrypt_with_a_version_name(self):
        key = self.make_key()
        control("POST", f"/{key['name']}:rotate")
        client = self.client()
        enc = self.encrypt(client, self.version(key, 1), b"old")
        self.assertEqual(enc.name, self.version(key, 1))
        dec = self.decrypt(client, key["name"], enc.ciphertext)
        self.assertEqual(dec.plaintext, b"old")
        self.assertFalse(dec.used_primary)

    def test_wrong_purpose(self):
        key = self.make_key(purpose="ASYMMETRIC_DECRYPT")
        with self.assertRaises(gexc.BadRequest) as cm:
            self.encrypt(self.client(), key["name"], b"x")
        self.assertGoogleError(cm.exception, 400, "FAILED_PRECONDITION", contains="ENCRYPT_DECRYPT")

    def test_plaintext_limits(self):
        key = self.make_key()
        client = self.client()
        self.assertEqual(self.decrypt(client, key["name"], self.encrypt(client, key["name"], b"a" * 65536)
                                      .ciphertext).plaintext, b"a" * 65536)
        with self.assertRaises(gexc.BadRequest):
            self.encrypt(client, key["name"], b"a" * 65537)
        hsm = self.make_key(protectionLevel="HSM")
        with self.assertRaises(gexc.BadRequest):
            self.encrypt(client, hsm["name"], b"a" * 8000, b"b" * 193)


# --------------------------------------------------------------------------- version states


class VersionStateTest(StandInCase):
    def test_disabled_primary_fails_encrypt(self):
        key = self.make_key()
        client = self.client()
        self.set_state(key, 1, "disable")
        self.assertEqual(client.get_crypto_key(name=key["name"]).primary.state,
                         kms.CryptoKeyVersion.CryptoKeyVersionState.DISABLED)
        with self.assertRaises(gexc.BadRequest) as cm:
            self.encrypt(client, key["name"], b"x")
        body = self.assertGoogleError(cm.exception, 400, "FAILED_PRECONDITION",
                                      f"{self.version(key, 1)} is not enabled, current state is: DISABLED.")
        self.assertEqual(body["error"]["details"], [{
            "@type": "type.googleapis.com/google.rpc.PreconditionFailure",
            "violations": [{"type": "KEY_DISABLED", "subject": self.version(key, 1)}]}])
        self.set_state(key, 1, "enable")
        self.assertEqual(self.encrypt(client, key["name"], b"x").name, self.version(key, 1))

    def test_rotation_old_ciphertext_still_decrypts_and_disabled_old_version_fails(self):
        key = self.make_key()
        client = self.client()
        old = self.encrypt(client, key["name"], b"v1 data", b"ctx").ciphertext
        state = control("POST", f"/{key['name']}:rotate")
        self.assertEqual(state["primaryVersion"], 2)
        self.assertEqual(client.get_crypto_key(name=key["name"]).primary.name, self.version(key, 2))
        new = self.encrypt(client, key["name"], b"v2 data", b"ctx")
        self.assertEqual(new.name, self.version(key, 2))
        dec = self.decrypt(client, key["name"], old, b"ctx")
        self.assertEqual(dec.plaintext, b"v1 data")
        self.assertFalse(dec.used_primary)
        self.assertTrue(self.decrypt(client, key["name"], new.ciphertext, b"ctx").used_primary)

        self.set_state(key, 1, "disable")
        with self.assertRaises(gexc.BadRequest) as cm:
            self.decrypt(client, key["name"], old, b"ctx")
        self.assertGoogleError(cm.exception, 400, "FAILED_PRECONDITION",
                               f"{self.version(key, 1)} is not enabled, current state is: DISABLED.")
        self.assertEqual(self.decrypt(client, key["name"], new.ciphertext, b"ctx").plaintext, b"v2 data")

    def test_set_primary_back_to_an_old_version(self):
        key = self.make_key()
        control("POST", f"/{key['name']}:rotate")
        control("POST", f"/{key['name']}:setPrimary", {"version": 1})
        self.assertEqual(self.encrypt(self.client(), key["name"], b"x").name, self.version(key, 1))

    def test_schedule_destroy_restore_and_destroy(self):
        key = self.make_key(destroyScheduledDuration="86400s")
        client = self.client()
        ct = self.encrypt(client, key["name"], b"data").ciphertext
        before = time.time()
        self.set_state(key, 1, "scheduleDestroy")
        v = client.get_crypto_key_version(name=self.version(key, 1))
        self.assertEqual(v.state, kms.CryptoKeyVersion.CryptoKeyVersionState.DESTROY_SCHEDULED)
        self.assertAlmostEqual(v.destroy_time.timestamp(), before + 86400, delta=5)
        for call in (lambda: self.decrypt(client, key["name"], ct), lambda: self.encrypt(client, key["name"], b"x")):
            with self.assertRaises(gexc.BadRequest) as cm:
                call()
            body = self.assertGoogleError(cm.exception, 400, "FAILED_PRECONDITION",
                                          f"{self.version(key, 1)} is not enabled, current state is: "
                                          "DESTROY_SCHEDULED.")
            self.assertNotIn("details", body["error"])
        self.set_state(key, 1, "restore")
        self.assertEqual(client.get_crypto_key_version(name=self.version(key, 1)).state,
                         kms.CryptoKeyVersion.CryptoKeyVersionState.DISABLED)
        self.set_state(key, 1, "enable")
        self.assertEqual(self.decrypt(client, key["name"], ct).plaintext, b"data")

        self.set_state(key, 1, "destroy")
        v = client.get_crypto_key_version(name=self.version(key, 1))
        self.assertEqual(v.state, kms.CryptoKeyVersion.CryptoKeyVersionState.DESTROYED)
        self.assertGreater(v.destroy_event_time.timestamp(), before - 1)
        with self.assertRaises(gexc.BadRequest) as cm:
            self.decrypt(client, key["name"], ct)
        self.assertGoogleError(cm.exception, 400, "FAILED_PRECONDITION",
                               f"{self.version(key, 1)} is not enabled, current state is: DESTROYED.")
        # a destroyed version cannot come back
        control("POST", f"/{self.version(key, 1)}:enable", expect=409)
        control("POST", f"/{self.version(key, 1)}:restore", expect=409)

    def test_scheduled_destruction_happens_when_due(self):
        key = self.make_key(destroyScheduledDuration="0.5s")
        self.set_state(key, 1, "scheduleDestroy")
        time.sleep(0.7)
        v = self.client().get_crypto_key_version(name=self.version(key, 1))
        self.assertEqual(v.state, kms.CryptoKeyVersion.CryptoKeyVersionState.DESTROYED)
        self.assertEqual(v.destroy_event_time, v.destroy_time)

    def test_automatic_rotation_when_due(self):
        key = self.make_key(rotationPeriod="3600s", nextRotationTime=time.time() - 1)
        got = self.client().get_crypto_key(name=key["name"])
        self.assertEqual(got.primary.name, self.version(key, 2))
        self.assertGreater(got.next_rotation_time.timestamp(), time.time() + 3500)


# --------------------------------------------------------------------------- IAM


class IamTest(StandInCase):
    def test_no_binding_is_permission_denied_with_the_real_message(self):
        key = self.make_key(roles=())
        client = self.client()
        with self.assertRaises(gexc.Forbidden) as cm:
            self.encrypt(client, key["name"], b"x")
        self.assertGoogleError(cm.exception, 403, "PERMISSION_DENIED",
                               f"Permission '{P_ENC}' denied on resource '{key['name']}' (or it may not exist).")
        with self.assertRaises(gexc.Forbidden) as cm:
            self.decrypt(client, key["name"], b"x" * 60)
        self.assertGoogleError(cm.exception, 403, "PERMISSION_DENIED",
                               f"Permission '{P_DEC}' denied on resource '{key['name']}' (or it may not exist).")
        with self.assertRaises(gexc.Forbidden) as cm:
            client.get_crypto_key(name=key["name"])
        self.assertGoogleError(cm.exception, 403, "PERMISSION_DENIED",
                               f"Permission '{P_GET}' denied on resource '{key['name']}' (or it may not exist).")

    def test_encrypter_decrypter_without_viewer(self):
        key = self.make_key(roles=(ENC_DEC,))
        client = self.client()
        with self.assertRaises(gexc.Forbidden) as cm:
            client.get_crypto_key(name=key["name"])
        self.assertGoogleError(cm.exception, 403, "PERMISSION_DENIED", contains=f"'{P_GET}'")
        with self.assertRaises(gexc.Forbidden) as cm:
            client.get_crypto_key_version(name=self.version(key, 1))
        self.assertGoogleError(cm.exception, 403, "PERMISSION_DENIED",
                               f"Permission '{P_VGET}' denied on resource '{self.version(key, 1)}' "
                               "(or it may not exist).")
        ct = self.encrypt(client, key["name"], b"works", b"ctx").ciphertext
        self.assertEqual(self.decrypt(client, key["name"], ct, b"ctx").plaintext, b"works")

    def test_viewer_only_cannot_encrypt(self):
        key = self.make_key(roles=(VIEWER,))
        client = self.client()
        self.assertEqual(client.get_crypto_key(name=key["name"]).name, key["name"])
        with self.assertRaises(gexc.Forbidden):
            self.encrypt(client, key["name"], b"x")

    def test_test_iam_permissions_returns_the_subset(self):
        key = self.make_key(roles=(ENC_DEC,))
        client = self.client()
        asked = [P_ENC, P_DEC, P_GET, "cloudkms.cryptoKeys.update"]
        got = client.test_iam_permissions(request={"resource": key["name"], "permissions": asked})
        self.assertEqual(list(got.permissions), [P_ENC, P_DEC])
        self.grant(key["name"], VIEWER)
        got = client.test_iam_permissions(request={"resource": key["name"], "permissions": asked})
        self.assertEqual(list(got.permissions), [P_ENC, P_DEC, P_GET])
        self.revoke(key["name"], ENC_DEC)
        self.revoke(key["name"], VIEWER)
        got = client.test_iam_permissions(request={"resource": key["name"], "permissions": asked})
        self.assertEqual(list(got.permissions), [])
        status, _, body = raw("POST", f"/v1/{key['name']}:testIamPermissions", {"permissions": asked},
                              self.bearer())
        self.assertEqual((status, body), (200, {}))  # proto3 JSON leaves the empty list out

    def test_bindings_are_inherited_from_key_ring_and_project(self):
        key = self.make_key(roles=())
        client = self.client()
        self.grant(self.ring_name(), ENC_DEC)
        self.assertEqual(self.encrypt(client, key["name"], b"x").name, self.version(key, 1))
        self.revoke(self.ring_name(), ENC_DEC)
        self.grant(f"projects/{self.project}", VIEWER)
        self.assertEqual(client.get_crypto_key(name=key["name"]).name, key["name"])

    def test_deny_an_operation(self):
        key = self.make_key()
        client = self.client()
        ct = self.encrypt(client, key["name"], b"x").ciphertext
        control("POST", f"/{key['name']}:deny", {"member": self.email, "operations": ["decrypt"]})
        with self.assertRaises(gexc.Forbidden) as cm:
            self.decrypt(client, key["name"], ct)
        self.assertGoogleError(cm.exception, 403, "PERMISSION_DENIED", contains=f"'{P_DEC}'")
        self.encrypt(client, key["name"], b"x")  # other permissions unaffected
        got = client.test_iam_permissions(request={"resource": key["name"], "permissions": [P_ENC, P_DEC]})
        self.assertEqual(list(got.permissions), [P_ENC])
        control("POST", f"/{key['name']}:deny", {"member": self.email, "operations": []})
        self.assertEqual(self.decrypt(client, key["name"], ct).plaintext, b"x")

    def test_other_service_account_is_denied(self):
        key = self.make_key()
        other = control("POST", "/serviceAccounts", {"project": "other-proj", "name": uniq("sa-")})
        client = self.client(service_account.Credentials.from_service_account_info(other))
        with self.assertRaises(gexc.Forbidden):
            self.encrypt(client, key["name"], b"x")


class NotFoundTest(StandInCase):
    def test_missing_key_version_and_ring(self):
        key = self.make_key()
        self.grant(self.ring_name(), VIEWER)
        client = self.client()
        missing = f"{self.ring_name()}/cryptoKeys/nope"
        with self.assertRaises(gexc.NotFound) as cm:
            client.get_crypto_key(name=missing)
        self.assertGoogleError(cm.exception, 404, "NOT_FOUND", f"CryptoKey {missing} not found.")
        with self.assertRaises(gexc.NotFound) as cm:
            client.get_crypto_key_version(name=self.version(key, 5))
        self.assertGoogleError(cm.exception, 404, "NOT_FOUND", f"CryptoKeyVersion {self.version(key, 5)} not found.")
        self.grant(f"projects/{self.project}", ENC_DEC)
        other_ring = f"projects/{self.project}/locations/{self.location}/keyRings/nope"
        with self.assertRaises(gexc.NotFound) as cm:
            self.encrypt(client, f"{other_ring}/cryptoKeys/k", b"x")
        self.assertGoogleError(cm.exception, 404, "NOT_FOUND", f"KeyRing {other_ring} not found.")
        with self.assertRaises(gexc.NotFound):
            client.test_iam_permissions(request={"resource": missing, "permissions": [P_ENC]})

    def test_missing_key_without_access_is_permission_denied(self):
        self.make_key()
        missing = f"{self.ring_name()}/cryptoKeys/nope"
        with self.assertRaises(gexc.Forbidden) as cm:
            self.client().get_crypto_key(name=missing)
        self.assertGoogleError(cm.exception, 403, "PERMISSION_DENIED",
                               f"Permission '{P_GET}' denied on resource '{missing}' (or it may not exist).")


# --------------------------------------------------------------------------- authentication


class StaticToken(google_credentials.Credentials):
    """Sends one fixed bearer token.  (google.auth's AuthorizedSession refreshes and retries on a 401;
    here a refresh keeps the same token, so the 401 reaches the caller.)"""

    def __init__(self, token):
        super().__init__()
        self.token = token

    def refresh(self, request):
        pass


class AuthTest(StandInCase):
    def jwt_for(self, key_file=None, kid=None, **claims):
        key_file = key_file or self.key_file
        now = int(time.time())
        payload = {"iss": key_file["client_email"], "sub": key_file["client_email"],
                   "aud": "https://cloudkms.googleapis.com/", "iat": now, "exp": now + 3600}
        payload.update(claims)
        signer = crypt.RSASigner.from_service_account_info(key_file)
        return jwt.encode(signer, payload, key_id=kid).decode()

    def token_client(self, token):
        return self.client(StaticToken(token))

    def assertUnauthenticated(self, token, key, reason="ACCESS_TOKEN_TYPE_UNSUPPORTED"):
        with self.assertRaises(gexc.Unauthorized) as cm:
            self.token_client(token).get_crypto_key(name=key["name"])
        body = self.assertGoogleError(cm.exception, 401, "UNAUTHENTICATED", contains="invalid authentication")
        self.assertEqual(body["error"]["details"][0]["reason"], reason)
        self.assertEqual(cm.exception.response.headers["WWW-Authenticate"],
                         'Bearer realm="https://accounts.google.com/", error="invalid_token"')

    def test_client_sends_a_self_signed_jwt(self):
        key = self.make_key()
        control("DELETE", "/requests")
        self.client().get_crypto_key(name=key["name"])
        entry = [e for e in request_log() if e["operation"] == "getCryptoKey"][-1]
        self.assertEqual(entry["caller"], self.email)
        self.assertEqual(entry["auth"], "jwt")
        self.assertEqual(entry["jwt"], {"aud": "https://cloudkms.googleapis.com/"})
        self.assertEqual(entry["query"], "%24alt=json%3Benum-encoding%3Dint")

    def test_scope_claim_is_accepted(self):
        key = self.make_key()
        token = self.jwt_for(aud=None, scope="https://www.googleapis.com/auth/cloud-platform")
        self.assertEqual(self.token_client(token).get_crypto_key(name=key["name"]).name, key["name"])

    def test_expired_jwt(self):
        key = self.make_key()
        now = int(time.time())
        self.assertUnauthenticated(self.jwt_for(iat=now - 3700, exp=now - 100), key, "ACCESS_TOKEN_EXPIRED")

    def test_bad_jwts(self):
        key = self.make_key()
        other = control("POST", "/serviceAccounts", {"project": "other-proj", "name": uniq("sa-")})
        now = int(time.time())
        cases = {
            "garbage": "not-a-token",
            "signed by another account's key but naming ours": self.jwt_for(other, kid=self.key_file["private_key_id"]),
            "another account's key, iss = ours": self.jwt_for(other, iss=self.email, sub=self.email),
            "wrong audience": self.jwt_for(aud="https://storage.googleapis.com/"),
            "lifetime over an hour": self.jwt_for(iat=now, exp=now + 7200),
            "unknown kid": self.jwt_for(kid="0" * 40),
        }
        tampered = self.jwt_for().split(".")
        tampered[1] = base64.urlsafe_b64encode(json.dumps({
            "iss": other["client_email"], "sub": other["client_email"], "aud": "https://cloudkms.googleapis.com/",
            "iat": now, "exp": now + 3600}).encode()).rstrip(b"=").decode()
        cases["payload swapped"] = ".".join(tampered)
        for label, token in cases.items():
            with self.subTest(label):
                self.assertUnauthenticated(token, key)

    def test_deleted_key_and_disabled_account(self):
        key = self.make_key()
        second = control("POST", f"/serviceAccounts/{self.email}/keys")
        self.assertEqual(second["client_email"], self.email)
        self.assertNotEqual(second["private_key_id"], self.key_file["private_key_id"])
        client2 = self.client(service_account.Credentials.from_service_account_info(second))
        self.assertEqual(client2.get_crypto_key(name=key["name"]).name, key["name"])
        control("DELETE", f"/serviceAccounts/{self.email}/keys/{second['private_key_id']}")
        self.assertUnauthenticated(self.jwt_for(second), key)
        control("PATCH", f"/serviceAccounts/{self.email}", {"disabled": True})
        self.assertUnauthenticated(self.jwt_for(), key)
        control("PATCH", f"/serviceAccounts/{self.email}", {"disabled": False})
        self.assertEqual(self.token_client(self.jwt_for()).get_crypto_key(name=key["name"]).name, key["name"])

    def test_missing_token(self):
        key = self.make_key()
        status, headers, body = raw("GET", f"/v1/{key['name']}")
        self.assertEqual(status, 401)
        self.assertEqual(body["error"]["status"], "UNAUTHENTICATED")
        self.assertTrue(body["error"]["message"].startswith("Request is missing required authentication credential."))
        self.assertEqual(body["error"]["details"], [{
            "@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "CREDENTIALS_MISSING",
            "domain": "googleapis.com",
            "metadata": {"service": "cloudkms.googleapis.com",
                         "method": "google.cloud.kms.v1.KeyManagementService.GetCryptoKey"}}])
        self.assertEqual(headers["www-authenticate"], 'Bearer realm="https://accounts.google.com/"')

    def test_token_endpoint_jwt_bearer_grant(self):
        key = self.make_key()
        creds = service_account.Credentials.from_service_account_file(
            self.key_path, scopes=["https://www.googleapis.com/auth/cloud-platform"])
        creds.refresh(AuthRequest())  # POSTs the signed assertion to the key file's token_uri
        self.assertTrue(creds.token.startswith("ya29.standin-"))
        self.assertTrue(creds.valid)
        got = self.token_client(creds.token).get_crypto_key(name=key["name"])
        self.assertEqual(got.name, key["name"])
        entry = [e for e in request_log() if e["operation"] == "getCryptoKey"][-1]
        self.assertEqual((entry["caller"], entry["auth"]), (self.email, "access_token"))
        control("DELETE", f"/serviceAccounts/{self.email}/keys/{self.key_file['private_key_id']}")
        resp = requests.post(self.key_file["token_uri"], data={
            "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
            "assertion": self.jwt_for(aud=self.key_file["token_uri"])}, timeout=10)
        self.assertEqual(resp.status_code, 400)
        self.assertEqual(resp.json()["error"], "invalid_grant")


# --------------------------------------------------------------------------- delay, faults, log


class DelayAndFaultTest(StandInCase):
    def test_location_delay_makes_a_call_time_out(self):
        key = self.make_key()
        client = self.client()
        loc = f"projects/{self.project}/locations/{self.location}"
        control("PATCH", f"/{loc}", {"delay_seconds": 1.5})
        try:
            start = time.time()
            with self.assertRaises((requests.exceptions.Timeout, gexc.DeadlineExceeded, gexc.RetryError)):
                client.get_crypto_key(name=key["name"], timeout=0.5, retry=None)
            self.assertLess(time.time() - start, 1.4)
            start = time.time()
            self.assertEqual(client.get_crypto_key(name=key["name"], timeout=10, retry=None).name, key["name"])
            self.assertGreaterEqual(time.time() - start, 1.5)
        finally:
            control("PATCH", f"/{loc}", {"delay_seconds": 0})

    def test_key_delay(self):
        key, other = self.make_key(), self.make_key()
        control("PATCH", f"/{key['name']}", {"delay_seconds": 1.0})
        client = self.client()
        start = time.time()
        self.encrypt(client, other["name"], b"x")
        self.assertLess(time.time() - start, 0.9)
        start = time.time()
        self.encrypt(client, key["name"], b"x")
        self.assertGreaterEqual(time.time() - start, 1.0)

    def test_faults(self):
        key = self.make_key()
        client = self.client()
        control("PATCH", f"/{key['name']}", {"fault": {"status": 503}})
        with self.assertRaises(gexc.ServiceUnavailable) as cm:
            client.encrypt(request={"name": key["name"], "plaintext": b"x"}, retry=None)
        self.assertGoogleError(cm.exception, 503, "UNAVAILABLE")
        control("PATCH", f"/{key['name']}", {"fault": {"status": 502, "body": "<html>Bad Gateway</html>"}})
        with self.assertRaises(gexc.GoogleAPICallError) as cm:
            client.get_crypto_key(name=key["name"], retry=None)
        self.assertEqual(cm.exception.code, 502)
        control("PATCH", f"/{key['name']}", {"fault": None})
        self.assertEqual(client.get_crypto_key(name=key["name"]).name, key["name"])


class RequestLogTest(StandInCase):
    def test_log_and_clear(self):
        key = self.make_key(roles=(ENC_DEC,))
        control("DELETE", "/requests")
        client = self.client()
        self.encrypt(client, key["name"], b"x")
        with self.assertRaises(gexc.Forbidden):
            client.get_crypto_key(name=key["name"])
        raw("GET", f"/v1/{key['name']}")
        control("GET", "/health")
        log = request_log()
        self.assertEqual([(e["method"], e["path"], e["caller"], e["status"], e["operation"]) for e in log], [
            ("POST", f"/v1/{key['name']}:encrypt", self.email, 200, "encrypt"),
            ("GET", f"/v1/{key['name']}", self.email, 403, "getCryptoKey"),
            ("GET", f"/v1/{key['name']}", None, 401, "getCryptoKey"),
        ])
        control("DELETE", "/requests")
        self.assertEqual(request_log(), [])


# --------------------------------------------------------------------------- raw protocol


class ProtocolTest(StandInCase):
    def test_json_shapes(self):
        key = self.make_key(rotationPeriod="7776000s")
        q = "?$alt=json;enum-encoding=int"
        status, headers, body = raw("GET", f"/v1/{key['name']}{q}", headers=self.bearer())
        self.assertEqual(status, 200)
        self.assertTrue(headers["content-type"].startswith("application/json"))
        self.assertEqual(body["purpose"], "ENCRYPT_DECRYPT")           # enums as strings
        self.assertEqual(body["rotationPeriod"], "7776000s")
        self.assertRegex(body["createTime"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")
        # body "*": a client may repeat the path's name in the body (google-cloud-rust serializes the whole request)
        status, _, body = raw("POST", f"/v1/{key['name']}:encrypt{q}",
                              {"name": key["name"], "plaintext": b64(b"hi"),
                               "plaintextCrc32c": str(standin.crc32c(b"hi"))}, self.bearer())
        self.assertEqual(status, 200, body)
        self.assertIsInstance(body["ciphertextCrc32c"], str)           # int64 as a JSON string
        self.assertEqual(body["verifiedPlaintextCrc32c"], True)
        self.assertNotIn("verifiedAdditionalAuthenticatedDataCrc32c", body)  # false is left out
        # snake_case names and URL-safe base64 are accepted too, as by Google's JSON parser
        ct = base64.b64decode(body["ciphertext"])
        status, _, body = raw("POST", f"/v1/{key['name']}:decrypt",
                              {"ciphertext": base64.urlsafe_b64encode(ct).decode().rstrip("="),
                               "ciphertext_crc32c": standin.crc32c(ct)}, self.bearer())
        self.assertEqual((status, base64.b64decode(body["plaintext"])), (200, b"hi"))

    def test_request_errors(self):
        key = self.make_key()
        status, _, body = raw("POST", f"/v1/{key['name']}:encrypt", {"plaintext": b64(b"x"), "bogus": 1}, self.bearer())
        self.assertEqual((status, body["error"]["status"]), (400, "INVALID_ARGUMENT"))
        self.assertIn('Unknown name "bogus"', body["error"]["message"])
        status, _, body = raw("POST", f"/v1/{key['name']}:encrypt", {"plaintext": "***"}, self.bearer())
        self.assertEqual((status, body["error"]["status"]), (400, "INVALID_ARGUMENT"))
        status, _, body = raw("POST", f"/v1/{key['name']}:encrypt", {}, self.bearer())
        self.assertEqual((status, body["error"]["status"]), (400, "INVALID_ARGUMENT"))
        status, _, body = raw("POST", f"/v1/{key['name']}:encrypt", "{nope", self.bearer())
        self.assertEqual((status, body["error"]["status"]), (400, "INVALID_ARGUMENT"))
        status, _, body = raw("POST", f"/v1/{key['name']}:asymmetricSign", {}, self.bearer())
        self.assertEqual((status, body["error"]["status"]), (501, "UNIMPLEMENTED"))
        status, _, body = raw("GET", "/v1/projects/p/nothing", headers=self.bearer())
        self.assertEqual((status, body["error"]["status"]), (404, "NOT_FOUND"))
        status, _, body = raw("POST", f"/v1/{key['name']}:testIamPermissions", {"permissions": ["cloudkms.*"]},
                              self.bearer())
        self.assertEqual((status, body["error"]["status"]), (400, "INVALID_ARGUMENT"))

    def test_control_state(self):
        key = self.make_key(rotationPeriod="86400s")
        state = control("GET", f"/{key['name']}")
        self.assertEqual(state["primaryVersion"], 1)
        self.assertEqual([v["state"] for v in state["versions"]], ["ENABLED"])
        self.assertEqual(state["iam"], {ENC_DEC: [f"serviceAccount:{self.email}"],
                                        VIEWER: [f"serviceAccount:{self.email}"]})
        control("POST", "/cryptoKeys", {"project": self.project, "location": self.location, "keyRing": self.ring,
                                        "key": key["name"].rsplit("/", 1)[1]}, expect=409)
        control("POST", "/cryptoKeys", {"project": self.project, "location": self.location, "keyRing": self.ring,
                                        "key": "bad/name"}, expect=400)
        control("GET", f"/{self.ring_name()}/cryptoKeys/none", expect=404)


if __name__ == "__main__":
    unittest.main()
