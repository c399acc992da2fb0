//! Throughput of the sealed-object format alone (issue 7's yardstick for the encryption
//! layer): seals OBJECTS objects of OBJECT_MIB MiB each (1024 x 1 MiB by default), pushed in
//! 1 MiB pieces the way request bodies arrive, on this one thread; then opens as many. Prints
//! MB/s (10^6 bytes of plaintext per second) for each, one figure a line.
//!
//! `cargo bench --bench sealed_object`; `scripts/bench-objects` runs it beside
//! `openssl speed` and the HTTP path.

use std::hint::black_box;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use cmek_console::crypto::sealed_object::{ObjectId, Opener, SEGMENT, SealError, Sealer};
use uuid::Uuid;

const MIB: usize = 1024 * 1024;
const DATA_KEY: [u8; 32] = [0x5a; 32];

fn count(var: &str, default: usize) -> Result<usize, String> {
    match std::env::var(var) {
        Err(_) => Ok(default),
        Ok(text) => match text.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!(
                "{var} must be a whole number above 0, not {text:?}"
            )),
        },
    }
}

/// One MiB of bytes that do not compress or repeat within a segment (xorshift).
fn piece() -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..MIB)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

fn name(i: usize) -> String {
    format!("bench/object-{i:06}")
}

/// Seals one object of `mib` pieces; the ciphertext comes back as written, piece by piece.
fn seal(cluster: Uuid, name: &str, plain: &[u8], mib: usize) -> Result<Sealed, SealError> {
    let id = ObjectId { cluster, name };
    let (mut sealer, header) = Sealer::new(&DATA_KEY, id);
    let mut body = Vec::with_capacity(mib);
    for _ in 0..mib {
        body.push(sealer.push(plain)?);
    }
    body.push(sealer.finish()?);
    Ok(Sealed { header, body })
}

struct Sealed {
    header: Vec<u8>,
    body: Vec<Vec<u8>>,
}

/// Opens one object, its ciphertext read back in 1 MiB pieces; returns the plaintext length.
fn open(cluster: Uuid, name: &str, sealed: &Sealed, ciphertext: &[u8]) -> Result<usize, SealError> {
    let id = ObjectId { cluster, name };
    let mut opener = Opener::new(&DATA_KEY, id, &sealed.header)?;
    let mut len = 0;
    for read in ciphertext.chunks(MIB) {
        len += black_box(opener.push(read)?).len();
    }
    Ok(len + black_box(opener.finish()?).len())
}

/// The AEAD the format is built on, sealing segments in place with no copies: what the
/// format's own work (buffering, allocation, zeroizing) is measured against.
fn primitive(plain: &[u8], total: usize) -> Result<Duration, String> {
    let cipher = Aes256Gcm::new_from_slice(&DATA_KEY).map_err(|e| e.to_string())?;
    let mut segment = plain[..SEGMENT].to_vec();
    let started = Instant::now();
    for i in 0..total / SEGMENT {
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&(i as u64).to_be_bytes());
        let tag = cipher
            .encrypt_in_place_detached(&Nonce::from(nonce), b"", &mut segment)
            .map_err(|e| e.to_string())?;
        black_box(tag);
    }
    Ok(started.elapsed())
}

fn mb_per_s(bytes: usize, took: Duration) -> f64 {
    bytes as f64 / 1e6 / took.as_secs_f64()
}

fn run() -> Result<(), String> {
    let objects = count("OBJECTS", 1024)?;
    let mib = count("OBJECT_MIB", 1)?;
    let total = objects * mib * MIB;
    let cluster = Uuid::from_u128(7);
    let plain = piece();
    let failed = |what: &str, e: SealError| format!("{what}: {e}");

    // The round trip is checked once (and warms the allocator) before anything is timed.
    let reference = seal(cluster, &name(0), &plain, mib).map_err(|e| failed("seal", e))?;
    let ciphertext: Vec<u8> = reference.body.concat();
    let mut opener = Opener::new(
        &DATA_KEY,
        ObjectId {
            cluster,
            name: &name(0),
        },
        &reference.header,
    )
    .map_err(|e| failed("open", e))?;
    let mut opened = opener
        .push(&ciphertext)
        .map_err(|e| failed("open", e))?
        .to_vec();
    opened.extend_from_slice(&opener.finish().map_err(|e| failed("open", e))?);
    if opened.len() != mib * MIB || opened.chunks(MIB).any(|c| c != plain.as_slice()) {
        return Err("an opened object differs from what was sealed".into());
    }

    let started = Instant::now();
    let mut sealed_bytes = 0;
    for i in 0..objects {
        let sealed = seal(cluster, &name(i), &plain, mib).map_err(|e| failed("seal", e))?;
        sealed_bytes += black_box(sealed).body.iter().map(Vec::len).sum::<usize>();
    }
    let seal_took = started.elapsed();

    let started = Instant::now();
    let mut opened_bytes = 0;
    for _ in 0..objects {
        opened_bytes +=
            open(cluster, &name(0), &reference, &ciphertext).map_err(|e| failed("open", e))?;
    }
    let open_took = started.elapsed();
    if opened_bytes != total || sealed_bytes < total {
        return Err(format!(
            "sealed {sealed_bytes} and opened {opened_bytes} bytes, expected {total}"
        ));
    }

    let primitive_took = primitive(&plain, total)?;

    println!("sealed_object: {objects} objects x {mib} MiB, 1 MiB pushes, one thread");
    println!("seal MB/s {:.0}", mb_per_s(total, seal_took));
    println!("open MB/s {:.0}", mb_per_s(total, open_took));
    println!(
        "rustcrypto aes-gcm in place MB/s {:.0}",
        mb_per_s(total, primitive_took)
    );
    Ok(())
}

fn main() -> ExitCode {
    // `cargo bench` passes `--bench` (and any filter); this binary has nothing to filter.
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("sealed_object: {message}");
            ExitCode::FAILURE
        }
    }
}
