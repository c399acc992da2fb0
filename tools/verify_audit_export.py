#!/usr/bin/env python3
"""Verifies an audit log export of cmek-console (format cmek-console-audit/2) on its own.

    python3 verify_audit_export.py EXPORT.json --keys KEYS.json [--checkpoint CHECKPOINT.json ...]

EXPORT.json is what GET /api/v1/audit-events?format=json gives an auditor; KEYS.json is what
GET /api/v1/audit/signing-keys gives (the public keys and when each was valid); each
--checkpoint is a checkpoint you kept (an `audit.checkpoint` webhook delivery's `data`, or the
export's own `checkpoint` saved earlier). Exit status 0: every event is intact, in order,
signed by a key valid when it signed, and matches every checkpoint; 1: it says where and why
not; 2: the files could not be read.

Only the standard library and the `cryptography` package are used, and the file is read one
event at a time (memory stays the same for any length). docs/audit-export.md gives the
format; this file is meant to be read, so nobody has to trust the console's own verifier.
"""

import argparse
import base64
import hashlib
import json
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

FORMAT = "cmek-console-audit/2"
EVENT_DOMAIN = "cmek-console audit event v2\n"
SIGNATURE_DOMAIN = "cmek-console audit signature v2\n"
CHECKPOINT_DOMAIN = "cmek-console audit checkpoint v2\n"
BODY_FIELDS = ("action", "actor", "detail", "id", "occurred_at", "outcome", "signed_at", "source_ip", "target")


class Broken(Exception):
    def __init__(self, seq, reason):
        super().__init__(f"event {seq}: {reason}" if seq is not None else reason)
        self.seq = seq
        self.reason = reason


def canonical_json(value):
    # Sorted keys, no whitespace, UTF-8: the console writes it the same way.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def event_hash(event):
    body = {field: event.get(field) for field in BODY_FIELDS}
    text = f"{EVENT_DOMAIN}{event['chain']}\n{event['seq']}\n{event['prev_hash']}\n{canonical_json(body)}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Key:
    def __init__(self, published):
        raw = base64.b64decode(published["public_key"], validate=True)
        if hashlib.sha256(raw).hexdigest()[:16] != published["key_id"]:
            raise ValueError(f"key {published['key_id']}: its id is not its public key's")
        if published.get("algorithm") != "Ed25519":
            raise ValueError(f"key {published['key_id']}: not an Ed25519 key")
        self.key_id = published["key_id"]
        self.public = Ed25519PublicKey.from_public_bytes(raw)
        self.valid_from = published["valid_from"]
        self.retired_at = published.get("retired_at")

    def valid_at(self, at):
        # Times are RFC 3339, UTC, six fractional digits: they compare as text.
        return self.valid_from <= at and (self.retired_at is None or at < self.retired_at)

    def verifies(self, message, signature):
        try:
            self.public.verify(base64.b64decode(signature, validate=True), message.encode("utf-8"))
            return True
        except (InvalidSignature, ValueError):
            return False


def checkpoint_signed(cp, keys):
    message = f"{CHECKPOINT_DOMAIN}{cp['chain']}\n{cp['seq']}\n{cp['hash']}\n{cp['at']}"
    key = keys.get(cp["key_id"])
    return key is not None and key.valid_at(cp["at"]) and key.verifies(message, cp["signature"])


class ChainVerifier:
    def __init__(self, chain, keys, checkpoints):
        self.chain, self.keys = chain, keys
        self.last = None  # (seq, hash, signed_at)
        self.first_seq, self.events, self.matched = None, 0, []
        self.pending = {}
        for cp in checkpoints:
            if cp["chain"] != chain:
                raise Broken(None, f"a checkpoint is of chain {cp['chain']}, not {chain}")
            if not checkpoint_signed(cp, keys):
                raise Broken(None, f"the checkpoint of seq {cp['seq']} is not signed by a key valid at {cp['at']}")
            self.pending.setdefault(cp["seq"], set()).add(cp["hash"])

    def push(self, event):
        seq = event["seq"]
        if event["chain"] != self.chain:
            raise Broken(seq, f"belongs to chain {event['chain']}, not {self.chain}")
        if self.last is not None:
            last_seq, last_hash, last_signed = self.last
            if seq != last_seq + 1:
                raise Broken(seq, f"follows event {last_seq}: an event was removed, inserted or moved")
            if event["prev_hash"] != last_hash:
                raise Broken(seq, "its prev_hash is not the hash of the event before it")
            if event["signed_at"] < last_signed:
                raise Broken(seq, "it was signed before the event before it")
        if event_hash(event) != event["hash"]:
            raise Broken(seq, "its content does not match its hash")
        key = self.keys.get(event["key_id"])
        if key is None:
            raise Broken(seq, f"signed by {event['key_id']}, which is not a published key")
        if not key.valid_at(event["signed_at"]):
            raise Broken(seq, f"signed at {event['signed_at']} by {key.key_id}, which was not valid then")
        if not key.verifies(SIGNATURE_DOMAIN + event["hash"], event["signature"]):
            raise Broken(seq, "its signature does not verify")
        hashes = self.pending.pop(seq, None)
        if hashes is not None:
            if hashes != {event["hash"]}:
                raise Broken(seq, "a signed checkpoint names another hash here: history was rewritten")
            self.matched.append(seq)
        if self.first_seq is None:
            self.first_seq = seq
        self.events += 1
        self.last = (seq, event["hash"], event["signed_at"])

    def finish(self):
        last_seq = self.last[0] if self.last else None
        beyond = [s for s in self.pending if last_seq is None or s > last_seq]
        if beyond:
            raise Broken(None, f"a signed checkpoint covers event {max(beyond)}, but the chain ends at "
                               f"{last_seq if last_seq is not None else 'nothing'}: events were removed from its end")
        return {"events": self.events, "first_seq": self.first_seq, "last_seq": last_seq,
                "head_hash": self.last[1] if self.last else None, "checkpoints": self.matched}


class Reader:
    """Reads one JSON object from a file, handing each element of its `items` array to a
    callback as soon as it is parsed, so the file is never held whole."""

    def __init__(self, stream, chunk=1 << 16):
        self.stream, self.chunk = stream, chunk
        self.buf, self.pos, self.eof = "", 0, False
        self.decoder = json.JSONDecoder()

    def _more(self):
        data = self.stream.read(self.chunk)
        if not data:
            self.eof = True
            return False
        self.buf = self.buf[self.pos:] + data
        self.pos = 0
        return True

    def _skip_ws(self):
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in " \t\r\n":
                self.pos += 1
            if self.pos < len(self.buf) or not self._more():
                return

    def _expect(self, char):
        self._skip_ws()
        if self.pos >= len(self.buf) or self.buf[self.pos] != char:
            found = self.buf[self.pos] if self.pos < len(self.buf) else "the end"
            raise ValueError(f"expected {char!r}, found {found!r}")
        self.pos += 1

    def _peek(self):
        self._skip_ws()
        return self.buf[self.pos] if self.pos < len(self.buf) else ""

    def _value(self):
        self._skip_ws()
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buf, self.pos)
                # A number at the very end of the buffer may continue in the next chunk.
                if end == len(self.buf) and not self.eof and self._more():
                    continue
                self.pos = end
                return value
            except json.JSONDecodeError:
                if self.eof or not self._more():
                    raise

    def read(self, on_item):
        fields = {}
        self._expect("{")
        if self._peek() == "}":
            self.pos += 1
            return fields
        while True:
            name = self._value()
            self._expect(":")
            if name == "items":
                self._expect("[")
                if self._peek() == "]":
                    self.pos += 1
                else:
                    while True:
                        on_item(self._value(), fields)
                        if self._peek() == ",":
                            self.pos += 1
                            continue
                        self._expect("]")
                        break
            else:
                fields[name] = self._value()
            if self._peek() == ",":
                self.pos += 1
                continue
            self._expect("}")
            return fields


def verify(export_path, keys_path, kept_paths):
    with open(keys_path, encoding="utf-8") as f:
        published = json.load(f)
    keys = {}
    for k in published["keys"]:
        key = Key(k)
        keys[key.key_id] = key
    kept = []
    for path in kept_paths:
        with open(path, encoding="utf-8") as f:
            kept.append(json.load(f))
    state = {}

    def on_item(event, fields):
        # format, chain and checkpoint come before the items (docs/audit-export.md).
        if "verifier" not in state:
            if fields.get("format") != FORMAT:
                raise Broken(None, f"format {fields.get('format')!r} is not {FORMAT}")
            checkpoints = kept + ([fields["checkpoint"]] if fields.get("checkpoint") else [])
            state["verifier"] = ChainVerifier(fields.get("chain"), keys, checkpoints)
        state["verifier"].push(event)

    with open(export_path, encoding="utf-8") as f:
        fields = Reader(f).read(on_item)
    if "verifier" not in state:  # no events at all: the checkpoints still say what is missing
        if fields.get("format") != FORMAT:
            raise Broken(None, f"format {fields.get('format')!r} is not {FORMAT}")
        checkpoints = kept + ([fields["checkpoint"]] if fields.get("checkpoint") else [])
        state["verifier"] = ChainVerifier(fields.get("chain"), keys, checkpoints)
    return state["verifier"].finish()


def main(argv=None):
    parser = argparse.ArgumentParser(description="Verify a cmek-console audit export offline.")
    parser.add_argument("export")
    parser.add_argument("--keys", required=True, help="the published signing keys (JSON)")
    parser.add_argument("--checkpoint", action="append", default=[], help="a checkpoint you kept (JSON); repeatable")
    args = parser.parse_args(argv)
    try:
        report = verify(args.export, args.keys, args.checkpoint)
    except Broken as broken:
        print(f"NOT VERIFIED: {broken}")
        return 1
    except (OSError, ValueError, KeyError, TypeError) as error:
        print(f"could not read the files: {error}", file=sys.stderr)
        return 2
    print(f"verified: {report['events']} events, seq {report['first_seq']} to {report['last_seq']}, "
          f"head {report['head_hash']}; checkpoints matched: {report['checkpoints'] or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
