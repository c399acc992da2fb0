//! Fixed vectors (a fixed key and events give fixed hashes and signatures, checked in under
//! tests/fixtures/audit-v2, which the Python verifier's tests read too) and every kind of
//! tampering.

use super::*;
use chrono::TimeZone;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/audit-v2");

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_796_650_000 + seconds, 123_456_000)
        .unwrap()
}

fn key(byte: u8) -> SigningKey {
    SigningKey::from_seed(&[byte; 32]).unwrap()
}

const ORG: &str = "0193a5b2-7c1d-7e3f-8a9b-0c1d2e3f4a5b";

fn body(n: u64) -> EventBody {
    EventBody {
        id: format!("0193a5b2-0000-7000-8000-{n:012}"),
        occurred_at: time_text(at(n as i64)),
        actor: if n.is_multiple_of(2) {
            "user:ada@example.com".into()
        } else {
            "api_key:ci \"deploy\"".into()
        },
        action: [
            "project.created",
            "encryption_key.created",
            "cluster.paused",
        ][(n % 3) as usize]
            .into(),
        target: format!("project/{n}"),
        outcome: "success".into(),
        source_ip: n.is_multiple_of(2).then(|| "203.0.113.7".into()),
        detail: serde_json::json!({
            "name": format!("payments \u{e9}\u{4e2d} {n}"),
            "z": [1, {"b": true, "a": null}],
            "ratio": 0.5,
            "tab\tnew\nline": "\u{1}",
        }),
    }
}

/// Three events signed by key A, a rotation, two by key B, and a checkpoint by B.
fn fixture() -> (Export, Vec<PublishedKey>) {
    let (a, b) = (key(7), key(8));
    let mut items = Vec::new();
    let mut prev = GENESIS.to_owned();
    for n in 1..=5u64 {
        let signer = if n <= 3 { &a } else { &b };
        let event = ChainEvent::seal(ORG, n, &prev, body(n), at(n as i64), signer);
        prev = event.hash.clone();
        items.push(event);
    }
    let checkpoint = Checkpoint::sign(ORG, 5, &prev, at(10), &b);
    let keys = vec![
        PublishedKey::of(&a, at(0), Some(at(4))),
        PublishedKey::of(&b, at(4), None),
    ];
    (
        Export {
            format: FORMAT.into(),
            chain: ORG.into(),
            items,
            checkpoint: Some(checkpoint),
        },
        keys,
    )
}

fn pretty(value: &impl Serialize) -> String {
    serde_json::to_string_pretty(value).unwrap() + "\n"
}

#[test]
fn a_fixed_key_and_events_give_the_checked_in_hashes_and_signatures() {
    let (export, keys) = fixture();
    let files = [
        ("export.json", pretty(&export)),
        ("keys.json", pretty(&serde_json::json!({ "keys": keys }))),
    ];
    for (name, text) in files {
        let path = format!("{FIXTURES}/{name}");
        if std::env::var_os("UPDATE_AUDIT_VECTORS").is_some() {
            std::fs::write(&path, &text).unwrap();
        }
        let stored = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(
            stored, text,
            "{name} changed: the format changed (UPDATE_AUDIT_VECTORS=1 rewrites it, but exports already given out would no longer verify)"
        );
    }
    // Ed25519 is deterministic: the signing key's public half and the first signature are
    // fixed too.
    assert_eq!(
        keys[0].key_id,
        key_id(&B64.decode(&keys[0].public_key).unwrap())
    );
    let verified = verify_export(&export, &keys, &[], Extent::Whole).unwrap();
    assert_eq!(verified.events, 5);
    assert_eq!(verified.checkpoints, [5]);
    assert_eq!(
        export.items[0].body.detail["ratio"], "0.5",
        "fractions become strings"
    );
}

#[test]
fn the_canonical_form_sorts_keys_and_escapes_as_json_does() {
    let (export, _) = fixture();
    let text = String::from_utf8(export.items[0].canonical()).unwrap();
    let mut lines = text.splitn(5, '\n');
    assert_eq!(lines.next(), Some("cmek-console audit event v2"));
    assert_eq!(lines.next(), Some(ORG));
    assert_eq!(lines.next(), Some("1"));
    assert_eq!(lines.next(), Some(GENESIS));
    let body = lines.next().unwrap();
    assert!(body.starts_with(r#"{"action":"encryption_key.created","actor":"api_key:ci \"deploy\"","detail":{"name":"payments é中 1","ratio":"0.5","tab\tnew\nline":"\u0001","z":[1,{"a":null,"b":true}]},"id":"#), "{body}");
}

fn tampered(change: impl FnOnce(&mut Export)) -> Broken {
    let (mut export, keys) = fixture();
    change(&mut export);
    verify_export(&export, &keys, &[], Extent::Whole).unwrap_err()
}

#[test]
fn every_kind_of_tampering_is_detected() {
    let (_, keys) = fixture();
    let modified = tampered(|e| e.items[1].body.target = "project/other".into());
    assert_eq!(modified.seq, Some(2));
    assert!(modified.reason.contains("hash"), "{modified}");

    let rehashed = tampered(|e| {
        e.items[1].body.outcome = "denied".into();
        e.items[1].hash = e.items[1].compute_hash();
    });
    assert_eq!(rehashed.seq, Some(2), "{rehashed}");

    let deleted = tampered(|e| {
        e.items.remove(2);
    });
    assert_eq!(deleted.seq, Some(4), "{deleted}");

    let reordered = tampered(|e| e.items.swap(1, 2));
    assert!(
        reordered.reason.contains("removed, inserted or moved"),
        "{reordered}"
    );

    // Inserted: a new event 3 with the later ones renumbered; the renumbered ones no longer
    // match their hashes or signatures.
    let inserted = tampered(|e| {
        let mut extra = e.items[2].clone();
        extra.body.id = "0193a5b2-0000-7000-8000-999999999999".into();
        e.items.insert(3, extra);
        for (i, item) in e.items.iter_mut().enumerate() {
            item.seq = i as u64 + 1;
        }
    });
    assert_eq!(inserted.seq, Some(4), "{inserted}");

    // The whole chain rewritten and signed with a key the console does not publish.
    let forged = tampered(|e| {
        let mut prev = GENESIS.to_owned();
        for item in &mut e.items {
            let mut b = item.body.clone();
            b.actor = "someone else".into();
            *item = ChainEvent::seal(ORG, item.seq, &prev, b, at(item.seq as i64), &key(9));
            prev = item.hash.clone();
        }
    });
    assert!(
        forged.reason.contains("not signed") || forged.reason.contains("not a published key"),
        "{forged}"
    );

    // Truncated: the export's own checkpoint covers event 5.
    let truncated = tampered(|e| {
        e.items.pop();
    });
    assert!(
        truncated.reason.contains("removed from its end"),
        "{truncated}"
    );

    // A retired key signing after its retirement: key A retired at 4.
    let late = tampered(|e| {
        let mut b = e.items[4].body.clone();
        b.target = "project/late".into();
        let prev = e.items[3].hash.clone();
        e.items[4] = ChainEvent::seal(ORG, 5, &prev, b, at(6), &key(7));
        e.checkpoint = None;
    });
    assert!(late.reason.contains("not valid then"), "{late}");
    // ...and backdating its signing time is caught too: it goes back along the chain.
    let backdated = tampered(|e| {
        let b = e.items[4].body.clone();
        let prev = e.items[3].hash.clone();
        e.items[4] = ChainEvent::seal(ORG, 5, &prev, b, at(3), &key(7));
        e.checkpoint = None;
    });
    assert!(backdated.reason.contains("signed before"), "{backdated}");

    // A checkpoint the customer kept catches a rewrite made after it, though the export's
    // own checkpoint was re-made by whoever rewrote it (with the signing key).
    let (export, _) = fixture();
    let kept = export.checkpoint.clone().unwrap();
    let mut rewritten = export.clone();
    let mut prev = rewritten.items[2].hash.clone();
    for n in 4..=5 {
        let mut b = rewritten.items[n - 1].body.clone();
        b.outcome = "failure".into();
        rewritten.items[n - 1] = ChainEvent::seal(ORG, n as u64, &prev, b, at(n as i64), &key(8));
        prev = rewritten.items[n - 1].hash.clone();
    }
    rewritten.checkpoint = Some(Checkpoint::sign(ORG, 5, &prev, at(11), &key(8)));
    assert!(
        verify_export(&rewritten, &keys, &[], Extent::Whole).is_ok(),
        "the signing key's holder can rewrite"
    );
    let caught = verify_export(&rewritten, &keys, &[kept], Extent::Whole).unwrap_err();
    assert!(caught.reason.contains("rewritten"), "{caught}");
}

#[test]
fn an_export_of_part_of_a_chain_verifies_from_its_first_event() {
    let (mut export, keys) = fixture();
    let dropped = export.items.drain(..2).collect::<Vec<_>>();
    // Unless it is said to be a part, an export must start at the chain's first event:
    // dropping the oldest events is caught.
    let err = verify_export(&export, &keys, &[], Extent::Whole).unwrap_err();
    assert!(err.reason.contains("first event"), "{err}");
    let verified = verify_export(&export, &keys, &[], Extent::Part).unwrap();
    assert_eq!((verified.first_seq, verified.last_seq), (Some(3), Some(5)));
    // A kept checkpoint of the event just before the part is checked against its prev_hash;
    // one further back cannot be, and is reported.
    let a = key(7);
    let just_before = Checkpoint::sign(ORG, 2, &dropped[1].hash, at(2), &a);
    let further = Checkpoint::sign(ORG, 1, &dropped[0].hash, at(2), &a);
    let verified = verify_export(
        &export,
        &keys,
        &[just_before.clone(), further],
        Extent::Part,
    )
    .unwrap();
    assert_eq!(verified.unchecked, [1]);
    assert!(verified.checkpoints.contains(&2));
    let forged_before = Checkpoint::sign(ORG, 2, &"ab".repeat(32), at(2), &a);
    assert!(verify_export(&export, &keys, &[forged_before], Extent::Part).is_err());
}

#[test]
fn a_selection_checks_each_event_but_not_what_lies_between() {
    let (mut export, keys) = fixture();
    // Events 1 and 5: what a filter on an action could choose.
    let all = export.items.clone();
    export.items.retain(|e| e.seq == 1 || e.seq == 5);
    for extent in [Extent::Whole, Extent::Part] {
        let err = verify_export(&export, &keys, &[], extent).unwrap_err();
        assert!(err.reason.contains("--selection"), "{err}");
    }
    let (a, b) = (key(7), key(8));
    // A checkpoint of the event before a chosen one is checked against its prev_hash; one of
    // a missing event further back, or beyond the last, cannot be.
    let before_fifth = Checkpoint::sign(ORG, 4, &all[3].hash, at(4), &b);
    let of_second = Checkpoint::sign(ORG, 2, &"cd".repeat(32), at(2), &a);
    let beyond = Checkpoint::sign(ORG, 9, &"ef".repeat(32), at(20), &b);
    let kept = [before_fifth, of_second, beyond];
    let verified = verify_export(&export, &keys, &kept, Extent::Selection).unwrap();
    assert_eq!(verified.events, 2);
    assert!(verified.checkpoints.contains(&4) && verified.checkpoints.contains(&5));
    assert_eq!(verified.unchecked, [2, 9]);
    // Each chosen event is still checked: its content, its order, its signature.
    let mut edited = export.clone();
    edited.items[1].body.target = "project/other".into();
    assert!(verify_export(&edited, &keys, &[], Extent::Selection).is_err());
    let mut swapped = export.clone();
    swapped.items.swap(0, 1);
    assert!(verify_export(&swapped, &keys, &[], Extent::Selection).is_err());
    let forged = Checkpoint::sign(ORG, 4, &"ab".repeat(32), at(4), &b);
    assert!(verify_export(&export, &keys, &[forged], Extent::Selection).is_err());
}

#[test]
fn an_export_read_as_a_stream_verifies_as_the_whole_does() {
    let (export, keys) = fixture();
    let text = serde_json::to_vec(&export).unwrap();
    let verified = verify_export_reader(text.as_slice(), &keys, &[], Extent::Whole).unwrap();
    assert_eq!(
        verified,
        verify_export(&export, &keys, &[], Extent::Whole).unwrap()
    );
    let mut cut = export.clone();
    cut.items.pop();
    let err = verify_export_reader(
        serde_json::to_vec(&cut).unwrap().as_slice(),
        &keys,
        &[],
        Extent::Whole,
    )
    .unwrap_err();
    assert!(
        matches!(&err, ExportError::Broken(b) if b.reason.contains("removed from its end")),
        "{err}"
    );
    let err = verify_export_reader(&b"{\"format\": 1"[..], &keys, &[], Extent::Whole).unwrap_err();
    assert!(matches!(err, ExportError::Unreadable(_)), "{err}");
}

#[test]
fn a_file_two_readers_could_read_differently_is_refused() {
    let (export, keys) = fixture();
    let text = serde_json::to_string(&export).unwrap();
    let unreadable = |text: String| {
        matches!(
            verify_export_reader(text.as_bytes(), &keys, &[], Extent::Whole),
            Err(ExportError::Unreadable(_))
        )
    };
    let items_at = text.find(",\"items\"").unwrap();
    // A second items list, an unknown field, fields out of order, anything after the end.
    assert!(unreadable(format!(
        "{},\"items\":[]}}",
        &text[..text.len() - 1]
    )));
    assert!(unreadable(format!(
        "{},\"note\":1}}",
        &text[..text.len() - 1]
    )));
    let moved = format!(
        "{{\"format\":\"{FORMAT}\",\"chain\":\"{ORG}\"{},\"checkpoint\":null}}",
        &text[items_at..text.len() - 1]
    );
    assert!(unreadable(moved));
    assert!(unreadable(format!("{text}{{}}")));
    // An event with a field its hash does not cover, a number no other reader keeps exactly.
    let mut extra = serde_json::to_value(&export).unwrap();
    extra["items"][0]["approved_by"] = "CISO".into();
    assert!(unreadable(extra.to_string()));
    let first_detail = text.find("\"detail\":{").unwrap() + "\"detail\":{".len();
    let twice = format!(
        "{}\"name\":\"other\",{}",
        &text[..first_detail],
        &text[first_detail..]
    );
    assert!(unreadable(twice), "a key twice inside detail");
    let mut float = serde_json::to_value(&export).unwrap();
    float["items"][0]["detail"]["ratio"] = serde_json::json!(0.5);
    assert!(unreadable(float.to_string()));
    // What the console writes: huge integers and fractions as strings.
    let big = integers_only(
        serde_json::json!({"n": 9_007_199_254_740_993u64, "ok": 9_007_199_254_740_991u64}),
    );
    assert_eq!(
        big,
        serde_json::json!({"n": "9007199254740993", "ok": 9_007_199_254_740_991u64})
    );
}

#[test]
fn a_retired_key_signs_only_the_places_its_keys_say() {
    let (export, mut keys) = fixture();
    // Key A (retired) signed events 1 to 3 of this chain, B the rest.
    keys[0].signed = Some(SignedRange {
        chain: ORG.into(),
        first_seq: 1,
        last_seq: 3,
    });
    assert!(verify_export(&export, &keys, &[], Extent::Whole).is_ok());
    // Said to have stopped at 2, event 3 by A is refused; said of another chain, not.
    keys[0].signed = Some(SignedRange {
        chain: ORG.into(),
        first_seq: 1,
        last_seq: 2,
    });
    let err = verify_export(&export, &keys, &[], Extent::Whole).unwrap_err();
    assert_eq!(err.seq, Some(3));
    assert!(err.reason.contains("retired having signed"), "{err}");
    keys[0].signed = Some(SignedRange {
        chain: "another".into(),
        first_seq: 0,
        last_seq: 0,
    });
    assert!(verify_export(&export, &keys, &[], Extent::Whole).is_ok());
    // The current key is never held to its range: it goes on signing.
    keys[0].signed = None;
    keys[1].signed = Some(SignedRange {
        chain: ORG.into(),
        first_seq: 4,
        last_seq: 4,
    });
    assert!(verify_export(&export, &keys, &[], Extent::Whole).is_ok());
}

/// The fixture with its last event's detail holding `chars` characters of `é` (two bytes
/// each), signed again; the checkpoint dropped, since it covered the old event.
fn with_long_last_event(chars: usize) -> (String, Vec<PublishedKey>) {
    let (mut export, keys) = fixture();
    let last = export.items.pop().unwrap();
    let mut long = body(5);
    long.detail = serde_json::json!({ "note": "\u{e9}".repeat(chars) });
    export.items.push(ChainEvent::seal(
        ORG,
        5,
        &last.prev_hash,
        long,
        at(5),
        &key(8),
    ));
    export.checkpoint = None;
    (serde_json::to_string(&export).unwrap(), keys)
}

#[test]
fn an_event_longer_than_the_limit_is_refused_in_both_forms_counted_in_characters() {
    // Under the limit in characters, over it in bytes: read, and verified.
    let (text, keys) = with_long_last_event(MAX_EVENT_CHARS - 1_000);
    assert!(text.len() > MAX_EVENT_CHARS + MAX_EVENT_CHARS / 2);
    let verified = verify_export_reader(text.as_bytes(), &keys, &[], Extent::Whole).unwrap();
    assert_eq!(verified.events, 5);
    // Over it: refused as unreadable, before the value is held whole.
    let (text, keys) = with_long_last_event(MAX_EVENT_CHARS + 1);
    let err = verify_export_reader(text.as_bytes(), &keys, &[], Extent::Whole).unwrap_err();
    assert!(
        matches!(&err, ExportError::Unreadable(why) if why.contains("longer than 1048576 characters")),
        "{err}"
    );
    // A field before the items is held to the same limit.
    let chain = format!(
        "{{\"format\":\"{FORMAT}\",\"chain\":\"{}\",\"checkpoint\":null,\"items\":[]}}",
        "a".repeat(MAX_EVENT_CHARS + 1)
    );
    let err = verify_export_reader(chain.as_bytes(), &keys, &[], Extent::Whole).unwrap_err();
    assert!(
        matches!(&err, ExportError::Unreadable(why) if why.contains("longer than")),
        "{err}"
    );

    // The CSV form: a row is counted as written, its line break included.
    let header = format!("{}\n", CSV_COLUMNS.join(","));
    let row = |chars: usize| {
        let line = |detail: &str| format!("event,c,1,,,,,,,,{detail},,,,,\n");
        let fixed = line("").chars().count();
        format!("{header}{}", line(&"\u{e9}".repeat(chars - fixed)))
    };
    let csv_error =
        |text: String| match verify_csv_reader(text.as_bytes(), &keys, &[], Extent::Whole)
            .unwrap_err()
        {
            ExportError::Unreadable(why) => why,
            ExportError::Broken(b) => b.to_string(),
        };
    assert!(!csv_error(row(MAX_EVENT_CHARS)).contains("longer than"));
    assert!(
        csv_error(row(MAX_EVENT_CHARS + 1)).contains("a row is longer than 1048576 characters")
    );
    let many = format!("{header}event{}\n", ",".repeat(CSV_COLUMNS.len()));
    assert!(csv_error(many).contains("more than 16 fields"));
}

#[test]
fn a_published_key_without_retired_at_is_refused() {
    let (_, keys) = fixture();
    let mut value = serde_json::to_value(&keys[1]).unwrap();
    assert_eq!(value["retired_at"], serde_json::Value::Null);
    assert!(serde_json::from_value::<PublishedKey>(value.clone()).is_ok());
    value.as_object_mut().unwrap().remove("retired_at");
    let err = serde_json::from_value::<PublishedKey>(value).unwrap_err();
    assert!(err.to_string().contains("retired_at"), "{err}");
}
