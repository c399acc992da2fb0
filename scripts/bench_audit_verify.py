"""Makes signed audit events in format 2 for scripts/bench-audit-verify: an export file, or rows
appended to a console's SQLite database, signed with the console's own signing key.

    python bench_audit_verify.py export N OUT_DIR
        OUT_DIR/export.json (one chain of N events) and OUT_DIR/keys.json (its published key)
    python bench_audit_verify.py append N DATA_DIR
        N events appended to the first organization's chain in DATA_DIR/cmek-console.sqlite3,
        signed with the newest key of DATA_DIR/audit-signing.keys

Needs Python's `cryptography` package. The events follow docs/audit-export.md.
"""

import base64
import datetime
import hashlib
import json
import sqlite3
import sys
import uuid

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

GENESIS = "0" * 64


def time_text(at):
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Signer:
    def __init__(self, seed):
        self.key = Ed25519PrivateKey.from_private_bytes(seed)
        self.public = self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.key_id = hashlib.sha256(self.public).hexdigest()[:16]

    def sign(self, text):
        return base64.b64encode(self.key.sign(text.encode())).decode()


def events(chain, n, start_seq, prev, start_at, signer):
    for i in range(n):
        seq = start_seq + i
        at = time_text(start_at + datetime.timedelta(microseconds=1000 * i))
        body = {
            "action": ("project.created", "project.updated", "cluster.paused")[i % 3],
            "actor": "api_key:bench",
            "detail": {"name": f"project {i}", "n": i},
            "id": str(uuid.uuid4()),
            "occurred_at": at,
            "outcome": "success",
            "signed_at": at,
            "source_ip": "203.0.113.7",
            "target": f"project/{i}",
        }
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        digest = hashlib.sha256(
            f"cmek-console audit event v2\n{chain}\n{seq}\n{prev}\n{canonical}".encode()).hexdigest()
        yield {
            "chain": chain, "seq": seq, "id": body["id"], "occurred_at": at, "actor": body["actor"],
            "action": body["action"], "target": body["target"], "outcome": "success",
            "source_ip": body["source_ip"], "detail": body["detail"], "signed_at": at,
            "prev_hash": prev, "hash": digest, "key_id": signer.key_id,
            "signature": signer.sign(f"cmek-console audit signature v2\n{digest}"),
        }
        prev = digest


def export(n, out):
    signer = Signer(bytes([7]) * 32)
    start = datetime.datetime(2026, 12, 1, tzinfo=datetime.timezone.utc)
    chain = str(uuid.uuid4())
    with open(f"{out}/keys.json", "w") as f:
        json.dump({"keys": [{"key_id": signer.key_id, "algorithm": "Ed25519",
                             "public_key": base64.b64encode(signer.public).decode(),
                             "valid_from": time_text(start - datetime.timedelta(days=1)),
                             "retired_at": None}]}, f)
    with open(f"{out}/export.json", "w", encoding="utf-8") as f:
        f.write(json.dumps({"format": "cmek-console-audit/2", "chain": chain})[:-1])
        f.write(',"checkpoint":null,"items":[')
        for i, event in enumerate(events(chain, n, 1, GENESIS, start, signer)):
            if i:
                f.write(",")
            f.write(json.dumps(event, ensure_ascii=False, separators=(",", ":")))
        f.write("]}")


def append(n, data_dir):
    with open(f"{data_dir}/audit-signing.keys") as f:
        valid_from, seed = f.read().split()[-2:]
    signer = Signer(bytes.fromhex(seed))
    db = sqlite3.connect(f"{data_dir}/cmek-console.sqlite3")
    chain, head_seq, head_hash, signed_at = db.execute(
        "SELECT chain, seq, hash, signed_at FROM audit_chains WHERE chain != 'platform' ORDER BY seq DESC LIMIT 1"
    ).fetchone()
    (ordinal,) = db.execute("SELECT COALESCE(MAX(seq), 0) FROM audit_events").fetchone()
    start = datetime.datetime.strptime(signed_at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc) + datetime.timedelta(seconds=1)
    org = uuid.UUID(chain).bytes
    rows, last = [], None
    for event in events(chain, n, head_seq + 1, head_hash, start, signer):
        ordinal += 1
        rows.append((
            ordinal, uuid.UUID(event["id"]).bytes, org,
            event["occurred_at"].replace("Z", "+00:00"), event["actor"], event["action"], event["target"],
            event["outcome"], event["source_ip"], json.dumps(event["detail"]), event["prev_hash"], event["hash"],
            chain, event["seq"], event["prev_hash"], event["hash"], event["signed_at"], event["key_id"],
            event["signature"]))
        last = event
        if len(rows) == 10000:
            insert(db, rows)
            rows = []
    insert(db, rows)
    db.execute("UPDATE audit_chains SET seq = ?, hash = ?, signed_at = ? WHERE chain = ?",
               (last["seq"], last["hash"], last["signed_at"], chain))
    db.commit()
    db.close()


def insert(db, rows):
    db.executemany(
        "INSERT INTO audit_events (seq, id, organization_id, occurred_at, actor, action, target, outcome, "
        "source_ip, detail, prev_hash, hash, chain, chain_seq, chain_prev_hash, chain_hash, signed_at, "
        "signing_key_id, signature) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)


if __name__ == "__main__":
    mode, n, where = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    (export if mode == "export" else append)(n, where)
