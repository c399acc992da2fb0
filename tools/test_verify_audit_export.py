"""Tests of tools/verify_audit_export.py against the console's own fixed vectors
(tests/fixtures/audit-v2, written by the Rust tests of backend/src/crypto/audit_chain.rs):
the vectors verify, and each kind of tampering is caught. The fixtures' signing keys are
Ed25519 keys from the seeds 32 x 0x07 (retired) and 32 x 0x08, so these tests can sign
forgeries as someone holding a key would.

    ~/.cache/cmek-console/moto-venv/bin/python -m unittest tools/test_verify_audit_export.py
"""

import copy
import io
import json
import os
import sys
import tempfile
import tracemalloc
import unittest

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import verify_audit_export as v  # noqa: E402
FIXTURES = os.path.join(HERE, "..", "tests", "fixtures", "audit-v2")


def load(name):
    with open(os.path.join(FIXTURES, name), encoding="utf-8") as f:
        return json.load(f)


def signer(byte):
    return Ed25519PrivateKey.from_private_bytes(bytes([byte]) * 32)


def sign(key, message):
    import base64
    return base64.b64encode(key.sign(message.encode("utf-8"))).decode()


def reseal(event, key_byte, key_id, signed_at=None):
    if signed_at is not None:
        event["signed_at"] = signed_at
    event["hash"] = v.event_hash(event)
    event["key_id"] = key_id
    event["signature"] = sign(signer(key_byte), v.SIGNATURE_DOMAIN + event["hash"])
    return event


class VerifierTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.export = load("export.json")
        self.keys_path = os.path.join(FIXTURES, "keys.json")
        self.keys = load("keys.json")["keys"]

    def tearDown(self):
        self.dir.cleanup()

    def run_on(self, export, kept=()):
        path = os.path.join(self.dir.name, "export.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(export, f, ensure_ascii=False)
        kept_paths = []
        for i, cp in enumerate(kept):
            p = os.path.join(self.dir.name, f"cp{i}.json")
            with open(p, "w", encoding="utf-8") as f:
                json.dump(cp, f)
            kept_paths.append(p)
        return v.verify(path, self.keys_path, kept_paths)

    def broken(self, export, kept=()):
        with self.assertRaises(v.Broken) as caught:
            self.run_on(export, kept)
        return caught.exception

    def test_the_consoles_fixed_vectors_verify(self):
        report = v.verify(os.path.join(FIXTURES, "export.json"), self.keys_path, [])
        self.assertEqual(report["events"], 5)
        self.assertEqual(report["checkpoints"], [5])
        self.assertEqual(report["head_hash"], self.export["items"][-1]["hash"])
        # The same hash as the console computed, byte for byte, unicode and escapes included.
        for event in self.export["items"]:
            self.assertEqual(v.event_hash(event), event["hash"])

    def test_the_command_line_says_verified_or_where_it_broke(self):
        out = io.StringIO()
        import contextlib
        with contextlib.redirect_stdout(out):
            self.assertEqual(v.main([os.path.join(FIXTURES, "export.json"), "--keys", self.keys_path]), 0)
        self.assertIn("verified: 5 events", out.getvalue())
        bad = copy.deepcopy(self.export)
        bad["items"][1]["target"] = "project/other"
        path = os.path.join(self.dir.name, "bad.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(bad, f)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            self.assertEqual(v.main([path, "--keys", self.keys_path]), 1)
        self.assertIn("NOT VERIFIED: event 2", out.getvalue())

    def test_a_modified_event_is_caught_even_with_its_hash_recomputed(self):
        e = copy.deepcopy(self.export)
        e["items"][1]["outcome"] = "denied"
        self.assertEqual(self.broken(e).seq, 2)
        e["items"][1]["hash"] = v.event_hash(e["items"][1])
        self.assertIn(self.broken(e).seq, (2, 3))

    def test_deleted_inserted_and_reordered_events_are_caught(self):
        e = copy.deepcopy(self.export)
        del e["items"][2]
        self.assertIn("removed, inserted or moved", self.broken(e).reason)
        e = copy.deepcopy(self.export)
        e["items"][1], e["items"][2] = e["items"][2], e["items"][1]
        self.assertIn("removed, inserted or moved", self.broken(e).reason)
        e = copy.deepcopy(self.export)
        extra = copy.deepcopy(e["items"][2])
        extra["id"] = "0193a5b2-0000-7000-8000-999999999999"
        e["items"].insert(3, extra)
        for i, item in enumerate(e["items"]):
            item["seq"] = i + 1
        self.assertEqual(self.broken(e).seq, 4)

    def test_dropping_the_oldest_events_is_caught_unless_the_export_is_a_part(self):
        e = copy.deepcopy(self.export)
        dropped = e["items"][:2]
        del e["items"][:2]
        self.assertIn("first event", self.broken(e).reason)
        path = os.path.join(self.dir.name, "part.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(e, f, ensure_ascii=False)
        self.assertEqual(v.verify(path, self.keys_path, [], extent="part")["first_seq"], 3)
        # A kept checkpoint of event 2 is checked against event 3's prev_hash.
        retired = self.keys[0]
        cp = {"chain": e["chain"], "seq": 2, "hash": "ab" * 32, "at": retired["valid_from"], "key_id": retired["key_id"]}
        cp["signature"] = sign(signer(7), f"{v.CHECKPOINT_DOMAIN}{cp['chain']}\n2\n{cp['hash']}\n{cp['at']}")
        cp_path = os.path.join(self.dir.name, "cp-before.json")
        with open(cp_path, "w", encoding="utf-8") as f:
            json.dump(cp, f)
        with self.assertRaises(v.Broken):
            v.verify(path, self.keys_path, [cp_path], extent="part")
        cp["hash"] = dropped[1]["hash"]
        cp["signature"] = sign(signer(7), f"{v.CHECKPOINT_DOMAIN}{cp['chain']}\n2\n{cp['hash']}\n{cp['at']}")
        with open(cp_path, "w", encoding="utf-8") as f:
            json.dump(cp, f)
        self.assertIn(2, v.verify(path, self.keys_path, [cp_path], extent="part")["checkpoints"])

    def test_a_file_two_readers_could_read_differently_is_refused(self):
        text = json.dumps(self.export, ensure_ascii=False)
        variants = {
            "second items": text[:-1] + ',"items":[]}',
            "unknown field": text[:-1] + ',"note":1}',
            "trailing object": text + "{}",
        }
        extra = copy.deepcopy(self.export)
        extra["items"][0]["approved_by"] = "CISO"
        variants["unsigned field"] = json.dumps(extra)
        floaty = copy.deepcopy(self.export)
        floaty["items"][0]["detail"]["ratio"] = 0.5
        variants["fraction"] = json.dumps(floaty)
        stringy = copy.deepcopy(self.export)
        stringy["items"][0]["seq"] = "1"
        variants["seq as a string"] = json.dumps(stringy)
        for name, body in variants.items():
            path = os.path.join(self.dir.name, "variant.json")
            with open(path, "w", encoding="utf-8") as f:
                f.write(body)
            with self.assertRaises(v.Unreadable, msg=name):
                v.verify(path, self.keys_path, [])

    def test_a_truncated_chain_is_caught_by_the_checkpoint(self):
        e = copy.deepcopy(self.export)
        e["items"].pop()
        self.assertIn("removed from its end", self.broken(e).reason)

    def test_a_retired_key_cannot_sign_after_its_retirement_nor_backdate(self):
        retired, current = self.keys[0], self.keys[1]
        e = copy.deepcopy(self.export)
        e["checkpoint"] = None
        last = e["items"][4]
        last["target"] = "project/late"
        # Signed with the retired key, at a time after its retirement.
        reseal(last, 7, retired["key_id"], signed_at=current["valid_from"])
        self.assertIn("not valid then", self.broken(e).reason)
        # Signed with the retired key, backdated before its retirement: earlier than the
        # event before it, which the chain does not allow.
        reseal(last, 7, retired["key_id"], signed_at=retired["valid_from"])
        self.assertIn("signed before", self.broken(e).reason)

    def test_a_checkpoint_kept_by_the_customer_catches_a_later_rewrite(self):
        kept = copy.deepcopy(self.export["checkpoint"])
        current = self.keys[1]
        e = copy.deepcopy(self.export)
        prev = e["items"][2]["hash"]
        for item in e["items"][3:]:
            item["outcome"] = "failure"
            item["prev_hash"] = prev
            reseal(item, 8, current["key_id"])
            prev = item["hash"]
        cp = {"chain": e["chain"], "seq": 5, "hash": prev, "at": e["checkpoint"]["at"], "key_id": current["key_id"]}
        cp["signature"] = sign(signer(8), f"{v.CHECKPOINT_DOMAIN}{cp['chain']}\n5\n{prev}\n{cp['at']}")
        e["checkpoint"] = cp
        self.run_on(e)  # whoever holds the signing key can rewrite the export on its own...
        self.assertIn("rewritten", self.broken(e, kept=[kept]).reason)  # ...but not the past

    def test_a_forged_chain_with_an_unpublished_key_is_caught(self):
        e = copy.deepcopy(self.export)
        e["checkpoint"] = None
        prev = "0" * 64
        for item in e["items"]:
            item["actor"] = "someone else"
            item["prev_hash"] = prev
            reseal(item, 9, "0123456789abcdef")
            prev = item["hash"]
        self.assertIn("not a published key", self.broken(e).reason)

    def test_memory_stays_flat_for_a_long_export(self):
        # 20,000 events (re-signed copies of the fixture's last one) read as a stream.
        base = self.export["items"][4]
        current = self.keys[1]
        path = os.path.join(self.dir.name, "long.json")
        with open(path, "w", encoding="utf-8") as f:
            f.write('{"format":"%s","chain":"%s","checkpoint":null,"items":[' % (v.FORMAT, self.export["chain"]))
            prev = self.export["items"][3]["hash"]
            for n in range(20000):
                item = dict(base, seq=5 + n, prev_hash=prev)
                reseal(item, 8, current["key_id"])
                prev = item["hash"]
                f.write(("," if n else "") + json.dumps(item, ensure_ascii=False))
            f.write("]}")
        tracemalloc.start()
        report = v.verify(path, self.keys_path, [], extent="part")
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        self.assertEqual(report["events"], 20000)
        self.assertLess(peak, 2 * 1024 * 1024, f"peak {peak} bytes")

    def write_csv(self, export, name="export.csv"):
        """The export in the CSV form, as docs/audit-export.md gives it (formulas defused)."""
        import csv

        def defuse(value):
            return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r", "'") else value

        path = os.path.join(self.dir.name, name)
        with open(path, "w", encoding="utf-8", newline="") as f:
            out = csv.writer(f, lineterminator="\n")
            out.writerow(v.CSV_COLUMNS)
            cp = export["checkpoint"]
            if cp is not None:
                out.writerow(["checkpoint", cp["chain"], cp["seq"], "", "", "", "", "", "", "", "", cp["at"], "",
                              cp["hash"], cp["key_id"], cp["signature"]])
            for e in export["items"]:
                row = ["event", e["chain"], str(e["seq"]), e["id"], e["occurred_at"], e["actor"], e["action"],
                       e["target"], e["outcome"], e.get("source_ip") or "", v.canonical_json(e["detail"]),
                       e["signed_at"], e["prev_hash"], e["hash"], e["key_id"], e["signature"]]
                out.writerow([defuse(x) for x in row])
        return path

    def test_the_csv_form_verifies_as_the_json_does_and_tampering_is_caught(self):
        report = v.verify(self.write_csv(self.export), self.keys_path, [])
        self.assertEqual(report["events"], 5)
        self.assertEqual(report["checkpoints"], [5])
        # A field starting like a formula is defused, and verifies once the quote is taken off.
        e = copy.deepcopy(self.export)
        e["items"][4]["target"] = "=cmd()"
        reseal(e["items"][4], 8, e["items"][4]["key_id"])
        e["checkpoint"] = None
        path = self.write_csv(e, "formula.csv")
        with open(path, encoding="utf-8") as f:
            self.assertIn("'=cmd()", f.read())
        self.assertEqual(v.verify(path, self.keys_path, [])["events"], 5)
        bad = copy.deepcopy(self.export)
        bad["items"][2]["actor"] = "someone else"
        with self.assertRaises(v.Broken) as caught:
            v.verify(self.write_csv(bad, "bad.csv"), self.keys_path, [])
        self.assertEqual(caught.exception.seq, 3)

    def test_a_selection_checks_each_event_and_reports_what_it_cannot_check(self):
        e = copy.deepcopy(self.export)
        e["items"] = [i for i in e["items"] if i["seq"] in (1, 5)]
        e["checkpoint"] = None
        for extent in ("whole", "part"):
            with self.assertRaises(v.Broken) as caught:
                self.run_on_extent(e, extent)
            self.assertIn("--selection", str(caught.exception))
        report = self.run_on_extent(e, "selection")
        self.assertEqual(report["events"], 2)
        forged = copy.deepcopy(e)
        forged["items"][1]["target"] = "project/other"
        with self.assertRaises(v.Broken):
            self.run_on_extent(forged, "selection")

    def run_on_extent(self, export, extent):
        path = os.path.join(self.dir.name, f"export-{extent}.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(export, f, ensure_ascii=False)
        return v.verify(path, self.keys_path, [], extent=extent)

    def test_a_retired_key_signs_only_the_places_its_keys_say(self):
        keys = copy.deepcopy(self.keys)
        keys[0]["signed"] = {"chain": self.export["chain"], "first_seq": 1, "last_seq": 2}
        path = os.path.join(self.dir.name, "keys-ranges.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"keys": keys}, f)
        with self.assertRaises(v.Broken) as caught:
            v.verify(os.path.join(FIXTURES, "export.json"), path, [])
        self.assertEqual(caught.exception.seq, 3)
        keys[0]["signed"]["last_seq"] = 3
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"keys": keys}, f)
        self.assertEqual(v.verify(os.path.join(FIXTURES, "export.json"), path, [])["events"], 5)


if __name__ == "__main__":
    unittest.main()

    def long_last_event(self, chars):
        """The fixture with its last event's detail holding `chars` characters of é (two
        bytes each), signed again; the checkpoint dropped, since it covered the old event."""
        e = copy.deepcopy(self.export)
        e["items"][4]["detail"] = {"note": "\u00e9" * chars}
        reseal(e["items"][4], 8, e["items"][4]["key_id"])
        e["checkpoint"] = None
        return e

    def test_an_event_longer_than_the_limit_is_refused_in_both_forms_counted_in_characters(self):
        limit = v.MAX_EVENT_CHARS
        self.assertEqual(limit, 1 << 20)  # the Rust verifier's MAX_EVENT_CHARS
        under = self.long_last_event(limit - 1000)
        self.assertEqual(self.run_on(under)["events"], 5)
        self.assertEqual(v.verify(self.write_csv(under, "under.csv"), self.keys_path, [])["events"], 5)
        over = self.long_last_event(limit + 1)
        for verify in (lambda: self.run_on(over), lambda: v.verify(self.write_csv(over, "over.csv"), self.keys_path, [])):
            with self.assertRaises(v.Unreadable) as caught:
                verify()
            self.assertIn(f"longer than {limit} characters", str(caught.exception))

    def test_a_key_without_retired_at_is_refused(self):
        keys = copy.deepcopy(self.keys)
        del keys[-1]["retired_at"]
        path = os.path.join(self.dir.name, "keys.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"keys": keys}, f)
        with self.assertRaises(v.Unreadable):
            v.verify(os.path.join(FIXTURES, "export.json"), path, [])
