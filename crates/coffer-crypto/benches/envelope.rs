//! Envelope seal/open through coffer-crypto against bare aws-lc-rs AES-256-GCM.
//!
//! The baseline is the least work any correct envelope has to do: a key schedule prepared
//! beforehand, a fresh random nonce per seal (a fixed nonce would not be a valid use of GCM),
//! an AAD of the same 84 bytes Coffer binds, and in-place encryption into a buffer reused across
//! iterations (so it pays no allocation). Coffer additionally allocates the output, builds the
//! AAD from the context and, on open, wipes the plaintext when it is dropped.
//!
//! "raw open out of place" is a second open baseline: Coffer decrypts out of place (straight into
//! the wiping `Plaintext`), and on some CPUs aws-lc's out-of-place GCM is markedly faster than
//! in place, which would otherwise make Coffer look faster than its own baseline.

use std::hint::black_box;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use coffer_crypto::{DataKey, Plaintext, ValueContext, open, seal};
use coffer_types::{AccountId, DekId, SecretId, StoreId, Version};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const AAD_LEN: usize = 84;

fn random_nonce() -> Nonce {
    let mut nonce = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut nonce).expect("system CSPRNG");
    Nonce::assume_unique_for_key(nonce)
}

fn envelope(c: &mut Criterion) {
    let key = DataKey::generate();
    let raw_key =
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key.expose_secret()).expect("32-byte key"));
    let ctx = ValueContext {
        account: AccountId::from_bytes([1; 16]),
        store: StoreId::from_bytes([2; 16]),
        secret: SecretId::from_bytes([3; 16]),
        version: Version(4),
        dek: DekId::from_bytes([5; 16]),
    };
    let aad = [7u8; AAD_LEN];

    for size in [64usize, 4096] {
        let label = if size < 1024 {
            format!("{size} B")
        } else {
            format!("{} KiB", size / 1024)
        };
        let mut group = c.benchmark_group(format!("envelope {label}"));
        group.throughput(Throughput::Bytes(size as u64));

        let bytes = vec![0x5a; size];
        let plaintext = Plaintext::new(bytes.clone());
        let sealed = seal(&key, &ctx, &plaintext).expect("seal");
        group.bench_function("coffer seal", |b| {
            b.iter(|| seal(&key, &ctx, black_box(&plaintext)).expect("seal"))
        });
        group.bench_function("coffer open", |b| {
            b.iter(|| open(&key, &ctx, black_box(&sealed)).expect("open"))
        });

        let mut buf = Vec::with_capacity(size + AES_256_GCM.tag_len());
        group.bench_function("raw seal", |b| {
            b.iter(|| {
                buf.clear();
                buf.extend_from_slice(black_box(&bytes));
                raw_key
                    .seal_in_place_append_tag(random_nonce(), Aad::from(&aad), &mut buf)
                    .expect("seal");
                black_box(&buf);
            })
        });

        let nonce = [9u8; NONCE_LEN];
        let mut raw_sealed = bytes.clone();
        raw_key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad),
                &mut raw_sealed,
            )
            .expect("seal");
        group.bench_function("raw open", |b| {
            b.iter(|| {
                buf.clear();
                buf.extend_from_slice(black_box(&raw_sealed));
                let opened = raw_key
                    .open_in_place(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(&aad),
                        &mut buf,
                    )
                    .expect("open");
                black_box(opened.len());
            })
        });
        let mut out = vec![0u8; size];
        group.bench_function("raw open out of place", |b| {
            b.iter(|| {
                let (ciphertext, tag) = black_box(&raw_sealed).split_at(size);
                raw_key
                    .open_separate_gather(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(&aad),
                        ciphertext,
                        tag,
                        &mut out,
                    )
                    .expect("open");
                black_box(&out);
            })
        });
        group.finish();
    }
}

criterion_group!(benches, envelope);
criterion_main!(benches);
