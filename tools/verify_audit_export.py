#!/usr/bin/env python3
"""Verifies an audit log export of cmek-console (format cmek-console-audit/2) on its own.

    python3 verify_audit_export.py EXPORT.json|EXPORT.csv --keys KEYS.json [--checkpoint CHECKPOINT.json ...]
                                   [--partial | --selection]

EXPORT.json is what GET /api/v1/audit-events?format=json gives an auditor; KEYS.json is what
GET /api/v1/audit/signing-keys gives (the public keys and when each was valid); each
--checkpoint is a checkpoint you kept (an `audit.checkpoint` webhook delivery's `data`, or the
export's own `checkpoint` saved earlier): the export's own checkpoint proves nothing against
whoever made the export. --partial: the export is a part of the chain (a time range) and may
start after its first event. --selection: the export holds the events a filter chose (an
action, an actor...): each is checked, but events may be missing between them. The export
may be the JSON or the CSV form. Exit status 0: every event is intact, in order, signed by a key
valid when it signed, and matches every checkpoint; 1: it says where and why not; 2: the
files could not be read, or could be read two ways (duplicate or unknown fields, fields out
of order, anything after the end).

Only the standard library and the `cryptography` package are used, and the file is read one
event at a time (memory stays the same for any length). docs/audit-export.md gives the
format; this file is meant to be read, so nobody has to trust the console's own verifier.
"""

import argparse
import base64
import binascii
import csv
import datetime
import hashlib
import json
import re
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

FORMAT = "cmek-console-audit/2"
EVENT_DOMAIN = "cmek-console audit event v2\n"
SIGNATURE_DOMAIN = "cmek-console audit signature v2\n"
CHECKPOINT_DOMAIN = "cmek-console audit checkpoint v2\n"
BODY_FIELDS = ("action", "actor", "detail", "id", "occurred_at", "outcome", "signed_at", "source_ip", "target")
EVENT_FIELDS = {"chain", "seq", "id", "occurred_at", "actor", "action", "target", "outcome", "source_ip",
                "detail", "signed_at", "prev_hash", "hash", "key_id", "signature"}
CHECKPOINT_FIELDS = {"chain", "seq", "hash", "at", "key_id", "signature"}
KEY_FIELDS = {"key_id", "algorithm", "public_key", "valid_from", "retired_at"}
EXPORT_FIELDS = ("format", "chain", "checkpoint", "items")
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", re.ASCII)
MAX_EXACT = 2 ** 53 - 1
# The longest value read, in characters: a field before the items or an item of the JSON
# form (the whitespace and separators before it counted), a row of the CSV form as written
# (its line break counted). The console writes none near it; the Rust verifier has the same.
MAX_EVENT_CHARS = 1 << 20


class Unreadable(ValueError):
    pass


def no_duplicates(pairs):
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise Unreadable(f"the key {key!r} appears twice in one object")
        seen[key] = value
    return seen


def hex_of(text, length):
    return isinstance(text, str) and len(text) == length and all(c in "0123456789abcdef" for c in text)


def is_time(text):
    """RFC 3339 in UTC with six fractional digits and Z, and a real date and time."""
    if not isinstance(text, str) or TIME.fullmatch(text) is None:
        return False
    try:
        datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")
    except ValueError:
        return False
    return True


def exact_integers(value):
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return True
    if isinstance(value, int):
        return -MAX_EXACT <= value <= MAX_EXACT
    if isinstance(value, list):
        return all(exact_integers(v) for v in value)
    if isinstance(value, dict):
        return all(exact_integers(v) for v in value.values())
    return False  # a fraction


def b64(text):
    """Standard base64, in its one form."""
    raw = base64.b64decode(text, validate=True)
    if base64.b64encode(raw).decode() != text:
        raise binascii.Error("not in base64's canonical form")
    return raw


def is_int(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_event(event):
    if not isinstance(event, dict):
        raise Unreadable("an item is not an object")
    keys = set(event)
    if not keys <= EVENT_FIELDS or not (EVENT_FIELDS - {"source_ip"}) <= keys:
        raise Unreadable(f"an event's fields are {sorted(EVENT_FIELDS)}; found {sorted(keys)}")
    seq = event["seq"]
    where = f"event {seq}"
    if not is_int(seq):
        raise Unreadable(f"{where}: seq is a non-negative integer")
    for field in ("chain", "id", "actor", "action", "target", "outcome", "key_id", "signature"):
        if not isinstance(event[field], str):
            raise Unreadable(f"{where}: {field} is a string")
    if event.get("source_ip") is not None and not isinstance(event["source_ip"], str):
        raise Unreadable(f"{where}: source_ip is a string or null")
    if not (hex_of(event["prev_hash"], 64) and hex_of(event["hash"], 64) and hex_of(event["key_id"], 16)):
        raise Unreadable(f"{where}: hashes are 64 and key ids 16 lowercase hex digits")
    if not (is_time(event["occurred_at"]) and is_time(event["signed_at"])):
        raise Unreadable(f"{where}: times are RFC 3339 UTC with six fractional digits and Z")
    if not exact_integers(event["detail"]):
        raise Unreadable(f"{where}: detail holds a number that is not an integer within +-(2^53 - 1)")


def check_checkpoint(cp):
    if not isinstance(cp, dict) or set(cp) != CHECKPOINT_FIELDS or not is_int(cp["seq"]) \
            or not hex_of(cp["hash"], 64) or not is_time(cp["at"]) or not hex_of(cp["key_id"], 16):
        raise Unreadable(f"not a checkpoint: {cp!r:.200}")


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
        if not isinstance(published, dict) or set(published) - {"signed"} != KEY_FIELDS:
            raise Unreadable(f"a key's fields are {sorted(KEY_FIELDS)}, and \"signed\" if known")
        signed = published.get("signed")
        if signed is not None and (not isinstance(signed, dict) or set(signed) != {"chain", "first_seq", "last_seq"}
                                   or not isinstance(signed["chain"], str)
                                   or not is_int(signed["first_seq"]) or not is_int(signed["last_seq"])):
            raise Unreadable(f"key {published.get('key_id')}: \"signed\" is {{chain, first_seq, last_seq}}")
        # The places of one chain the key signed (both 0 for none), if the keys say.
        self.signed = signed
        if not is_time(published["valid_from"]) or (published["retired_at"] is not None and not is_time(published["retired_at"])):
            raise Unreadable(f"key {published['key_id']}: its times are not in the format's form")
        raw = b64(published["public_key"])
        if hashlib.sha256(raw).hexdigest()[:16] != published["key_id"]:
            raise ValueError(f"key {published['key_id']}: its id is not its public key's")
        if published.get("algorithm") != "Ed25519":
            raise ValueError(f"key {published['key_id']}: not an Ed25519 key")
        self.key_id = published["key_id"]
        self.public = Ed25519PublicKey.from_public_bytes(raw)
        self.valid_from = published["valid_from"]
        self.retired_at = published.get("retired_at")

    def may_sign(self, chain, seq):
        """A retired key signed only the places of a chain its keys say it did."""
        if self.retired_at is None or self.signed is None or self.signed["chain"] != chain:
            return True
        return 1 <= self.signed["first_seq"] <= seq <= self.signed["last_seq"]

    def valid_at(self, at):
        # Times are RFC 3339, UTC, six fractional digits: they compare as text.
        return self.valid_from <= at and (self.retired_at is None or at < self.retired_at)

    def verifies(self, message, signature):
        try:
            self.public.verify(b64(signature), message.encode("utf-8"))
            return True
        except (InvalidSignature, ValueError, TypeError):
            return False


def checkpoint_signed(cp, keys):
    message = f"{CHECKPOINT_DOMAIN}{cp['chain']}\n{cp['seq']}\n{cp['hash']}\n{cp['at']}"
    key = keys.get(cp["key_id"])
    return key is not None and key.valid_at(cp["at"]) and key.verifies(message, cp["signature"])


class ChainVerifier:
    def __init__(self, chain, keys, checkpoints, extent="whole"):
        self.chain, self.keys, self.extent = chain, keys, extent
        self.last = None  # (seq, hash, signed_at)
        self.first_seq, self.events, self.matched, self.unchecked = None, 0, [], []
        self.pending = {}  # seq -> [(hash, at)]
        for cp in checkpoints:
            check_checkpoint(cp)
            if cp["chain"] != chain:
                raise Broken(None, f"a checkpoint is of chain {cp['chain']}, not {chain}")
            if not checkpoint_signed(cp, keys):
                raise Broken(None, f"the checkpoint of seq {cp['seq']} is not signed by a key valid at {cp['at']}")
            self.pending.setdefault(cp["seq"], []).append((cp["hash"], cp["at"]))

    def _first(self, event):
        seq = event["seq"]
        if seq == 0 or (self.extent == "whole" and seq != 1):
            raise Broken(seq, "the export starts here, not at the chain's first event (1): events were removed "
                              "from its start, or it is a part of the chain (verify a part with --partial)")
        self._before(event, range(0, seq))

    def _before(self, event, missing):
        """Events missing before this one: a checkpoint of the one just before names its prev_hash."""
        seq = event["seq"]
        named = self.pending.pop(seq - 1, None)
        if named is not None:
            if any(h != event["prev_hash"] for h, _ in named):
                raise Broken(seq, "a signed checkpoint of the event before it names another hash: history was rewritten")
            self.matched.append(seq - 1)
        skipped = sorted(s for s in self.pending if s in missing)
        for s in skipped:
            del self.pending[s]
        self.unchecked.extend(skipped)

    def push(self, event):
        check_event(event)
        seq = event["seq"]
        if event["chain"] != self.chain:
            raise Broken(seq, f"belongs to chain {event['chain']}, not {self.chain}")
        if self.last is not None:
            last_seq, last_hash, last_signed = self.last
            gap = self.extent == "selection" and seq > last_seq + 1
            if seq != last_seq + 1 and not gap:
                raise Broken(seq, f"follows event {last_seq}: an event was removed, inserted or moved"
                             + ("" if self.extent == "selection" else
                                " (an export of some events only verifies with --selection)"))
            if event["signed_at"] < last_signed:
                raise Broken(seq, "it was signed before the event before it")
            if gap:
                self._before(event, range(last_seq + 1, seq))
            elif event["prev_hash"] != last_hash:
                raise Broken(seq, "its prev_hash is not the hash of the event before it")
        else:
            self._first(event)
        if event_hash(event) != event["hash"]:
            raise Broken(seq, "its content does not match its hash")
        key = self.keys.get(event["key_id"])
        if key is None:
            raise Broken(seq, f"signed by {event['key_id']}, which is not a published key")
        if not key.valid_at(event["signed_at"]):
            raise Broken(seq, f"signed at {event['signed_at']} by {key.key_id}, which was not valid then")
        if not key.verifies(SIGNATURE_DOMAIN + event["hash"], event["signature"]):
            raise Broken(seq, "its signature does not verify")
        if not key.may_sign(self.chain, seq):
            r = key.signed
            raise Broken(seq, f"signed by {key.key_id}, which retired having signed events {r['first_seq']} to "
                              f"{r['last_seq']} of this chain only: someone holding the retired key made it")
        named = self.pending.pop(seq, None)
        if named is not None:
            for h, at in named:
                if h != event["hash"]:
                    raise Broken(seq, "a signed checkpoint names another hash here: history was rewritten")
                if at < event["signed_at"]:
                    raise Broken(seq, "a checkpoint of it was signed before it was")
            self.matched.append(seq)
        if self.first_seq is None:
            self.first_seq = seq
        self.events += 1
        self.last = (seq, event["hash"], event["signed_at"])

    def finish(self):
        last_seq = self.last[0] if self.last else None
        if self.extent != "whole":
            # A part or a selection cannot tell a removed event from one outside it.
            self.unchecked.extend(sorted(self.pending))
            self.pending = {}
        if self.pending:
            raise Broken(None, f"a signed checkpoint covers event {max(self.pending)}, but the chain ends at "
                               f"{last_seq if last_seq is not None else 'nothing'}: events were removed from its end")
        return {"events": self.events, "first_seq": self.first_seq, "last_seq": last_seq,
                "head_hash": self.last[1] if self.last else None, "checkpoints": self.matched,
                "unchecked": self.unchecked}


class Reader:
    """Reads the export object from a file, handing each element of its `items` array to a
    callback as soon as it is parsed, so the file is never held whole. The object must have
    exactly the fields format, chain, checkpoint, items, in that order, and nothing may
    follow it."""

    def __init__(self, stream, chunk=1 << 16):
        self.stream, self.chunk = stream, chunk
        self.buf, self.pos, self.eof = "", 0, False
        # Where the value being read started counting (see MAX_EVENT_CHARS); below 0 once the
        # buffer dropped its start.
        self.mark = 0
        self.decoder = json.JSONDecoder(object_pairs_hook=no_duplicates)

    def _more(self, size=None):
        data = self.stream.read(size or self.chunk)
        if not data:
            self.eof = True
            return False
        self.buf = self.buf[self.pos:] + data
        self.mark -= self.pos
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
            raise Unreadable(f"expected {char!r}, found {found!r}")
        self.pos += 1

    def _peek(self):
        self._skip_ws()
        return self.buf[self.pos] if self.pos < len(self.buf) else ""

    def _begin(self):
        """The next value's characters count from here."""
        self.mark = self.pos

    def _value(self):
        self._skip_ws()
        size = self.chunk
        too_long = Unreadable(f"a value is longer than {MAX_EVENT_CHARS} characters")
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buf, self.pos)
                # A number at the very end of the buffer may continue in the next chunk.
                if end == len(self.buf) and not self.eof and self._more(size):
                    continue
                if end - self.mark > MAX_EVENT_CHARS:
                    raise too_long
                self.pos = end
                return value
            except json.JSONDecodeError:
                if len(self.buf) - self.mark > MAX_EVENT_CHARS:
                    raise too_long
                # Read twice as much each time, so a long value is parsed a few times, not once
                # per chunk.
                size *= 2
                if self.eof or not self._more(size):
                    raise

    def read(self, on_fields, on_item):
        self._expect("{")
        fields = {}
        for n, name in enumerate(EXPORT_FIELDS):
            self._begin()
            if n:
                self._expect(",")
            got = self._value()
            if got != name:
                raise Unreadable(f"the export's fields are {', '.join(EXPORT_FIELDS)} in this order, once each; "
                                 f"found {got!r} where {name!r} belongs")
            self._begin()
            self._expect(":")
            if name != "items":
                fields[name] = self._value()
                continue
            on_fields(fields)
            self._expect("[")
            self._begin()
            if self._peek() == "]":
                self.pos += 1
            else:
                while True:
                    on_item(self._value())
                    self._begin()
                    if self._peek() == ",":
                        self.pos += 1
                        continue
                    self._expect("]")
                    break
        self._expect("}")
        if self._peek() != "":
            raise Unreadable("something follows the export")
        return fields


CSV_COLUMNS = ["record", "chain", "seq", "id", "occurred_at", "actor", "action", "target", "outcome", "source_ip",
               "detail", "signed_at", "prev_hash", "hash", "key_id", "signature"]


def csv_rows(f):
    """The CSV's rows, each refused once its text (line breaks included) passes
    MAX_EVENT_CHARS, before it is held whole."""
    csv.field_size_limit(MAX_EVENT_CHARS)
    taken = 0  # characters of the lines the row being read took

    def lines():
        nonlocal taken
        while line := f.readline(MAX_EVENT_CHARS + 1):
            taken += len(line)
            if taken > MAX_EVENT_CHARS:
                raise Unreadable(f"a row is longer than {MAX_EVENT_CHARS} characters")
            yield line

    for row in csv.reader(lines(), strict=True):
        yield row
        taken = 0


def csv_records(f):
    """The CSV form, a row at a time: (kind, record). A field starting with ' had one put in
    front of it (so no spreadsheet runs it as a formula); it is taken off."""
    rows = csv_rows(f)
    header = next(rows, None)
    if header != CSV_COLUMNS:
        raise Unreadable(f"the CSV's columns are {','.join(CSV_COLUMNS)}")
    for row in rows:
        if len(row) != len(CSV_COLUMNS):
            raise Unreadable(f"a CSV row has {len(row)} fields, not {len(CSV_COLUMNS)}")
        row = [v[1:] if v.startswith("'") else v for v in row]
        r = dict(zip(CSV_COLUMNS, row))
        seq = r["seq"]
        if not (seq.isdigit() and seq.isascii() and str(int(seq)) == seq):
            raise Unreadable(f"a CSV row's seq {seq!r} is not a whole number")
        if r["record"] == "checkpoint":
            if any(r[c] for c in CSV_COLUMNS[3:11] + ["prev_hash"]):
                raise Unreadable("a checkpoint row has only chain, seq, signed_at (its time), hash, key_id, signature")
            yield "checkpoint", {"chain": r["chain"], "seq": int(seq), "hash": r["hash"], "at": r["signed_at"],
                                 "key_id": r["key_id"], "signature": r["signature"]}
        elif r["record"] == "event":
            event = {c: r[c] for c in CSV_COLUMNS[1:]}
            event["seq"] = int(seq)
            event["source_ip"] = r["source_ip"] or None
            event["detail"] = json.loads(r["detail"], object_pairs_hook=no_duplicates)
            yield "event", event
        else:
            raise Unreadable(f"a CSV row's record is checkpoint or event, not {r['record']!r}")


def read_csv(f, on_fields, on_item):
    started = False
    for kind, record in csv_records(f):
        if kind == "checkpoint":
            if started:
                raise Unreadable("the checkpoint row comes first, and only once")
            on_fields({"format": FORMAT, "chain": record["chain"], "checkpoint": record})
        else:
            if not started:
                on_fields({"format": FORMAT, "chain": record["chain"], "checkpoint": None})
            on_item(record)
        started = True
    if not started:
        raise Unreadable("the CSV holds no record: nothing says which chain it is")


def verify(export_path, keys_path, kept_paths, extent="whole"):
    with open(keys_path, encoding="utf-8") as f:
        published = json.load(f, object_pairs_hook=no_duplicates)
    if not isinstance(published, dict) or set(published) != {"keys"}:
        raise Unreadable("the keys file is {\"keys\": [...]}")
    keys = {}
    for k in published["keys"]:
        key = Key(k)
        if key.key_id in keys:
            raise Broken(None, f"the keys list {key.key_id} twice")
        keys[key.key_id] = key
    kept = []
    for path in kept_paths:
        with open(path, encoding="utf-8") as f:
            kept.append(json.load(f, object_pairs_hook=no_duplicates))
    state = {}

    def on_fields(fields):
        if "verifier" in state:
            raise Unreadable("the export starts twice")
        if fields.get("format") != FORMAT:
            raise Broken(None, f"format {fields.get('format')!r} is not {FORMAT}")
        if not isinstance(fields.get("chain"), str):
            raise Unreadable("chain is a string")
        own = [fields["checkpoint"]] if fields.get("checkpoint") is not None else []
        state["verifier"] = ChainVerifier(fields["chain"], keys, kept + own, extent)

    with open(export_path, encoding="utf-8", newline="") as f:
        if f.read(7) == "record,":
            f.seek(0)
            read_csv(f, on_fields, lambda event: state["verifier"].push(event))
        else:
            f.seek(0)
            Reader(f).read(on_fields, lambda event: state["verifier"].push(event))
    return state["verifier"].finish()


def main(argv=None):
    parser = argparse.ArgumentParser(description="Verify a cmek-console audit export offline.")
    parser.add_argument("export")
    parser.add_argument("--keys", required=True, help="the published signing keys (JSON)")
    parser.add_argument("--checkpoint", action="append", default=[], help="a checkpoint you kept (JSON); repeatable")
    extent = parser.add_mutually_exclusive_group()
    extent.add_argument("--partial", action="store_true", help="the export is a part of the chain (a time range)")
    extent.add_argument("--selection", action="store_true",
                        help="the export holds the events a filter chose: events may be missing between them")
    args = parser.parse_args(argv)
    if not args.checkpoint:
        print("note: no --checkpoint given: the export's own checkpoint proves nothing against whoever made "
              "the export; pass the checkpoints you kept", file=sys.stderr)
    try:
        extent = "selection" if args.selection else "part" if args.partial else "whole"
        report = verify(args.export, args.keys, args.checkpoint, extent)
    except Broken as broken:
        print(f"NOT VERIFIED: {broken}")
        return 1
    except (OSError, ValueError, KeyError, TypeError, csv.Error, RecursionError) as error:
        print(f"could not read the files: {error}", file=sys.stderr)
        return 2
    # An export with no event has no places and no head.
    shown = {k: "-" if report[k] is None else report[k] for k in ("first_seq", "last_seq", "head_hash")}
    print(f"verified: {report['events']} events, seq {shown['first_seq']} to {shown['last_seq']}, "
          f"head {shown['head_hash']}; checkpoints matched: {report['checkpoints'] or 'none'}"
          + (f"; not checked (their events are not in this export): {report['unchecked']}"
             if report["unchecked"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
