//! What verifying a user's token costs (`stampede::identity::jwt`), needing no service: a first-seen token per
//! algorithm (HS256 with `AUTH_JWT_SECRET`; EdDSA, ES256 and RS256 with keys of an `AUTH_JWT_KEYS` file), each
//! timed as a signature check plus the claims (the cache off), and a remembered token (a cache hit).
//!
//! Beside criterion's times it prints the token cache's memory per remembered token: the bytes the process
//! holds after remembering `CACHE_ENTRIES` distinct tokens, less what it held before, divided by their count,
//! counted by a global allocator wrapper in this binary.
//!
//!   cargo bench --bench identity

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use stampede::identity::Config;
use stampede::identity::jwt::Jwt;

/// Tokens remembered for the memory figure: the default `AUTH_TOKEN_CACHE`.
const CACHE_ENTRIES: usize = 100_000;

const SECRET: &str = "bench-jwt-secret-of-at-least-32-bytes";

/// Counts the bytes live on the heap, to measure the cache.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed on to the system allocator unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn claims(n: usize) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({ "sub": "42", "iat": now, "exp": now + 3_600, "jti": n })
}

/// The JWKS of the three public keys, and one token signer per algorithm.
struct Keys {
    jwks: Value,
    ed: Vec<u8>,
    es: Vec<u8>,
    rsa: aws_lc_rs::rsa::KeyPair,
}

impl Keys {
    fn new() -> Self {
        let rng = SystemRandom::new();
        let ed = Ed25519KeyPair::generate_pkcs8(&rng).unwrap().as_ref().to_vec();
        let ed_public = Ed25519KeyPair::from_pkcs8(&ed).unwrap().public_key().as_ref().to_vec();
        let es = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap().as_ref().to_vec();
        let es_public =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &es).unwrap().public_key().as_ref().to_vec();
        let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let (n, e) = (rsa.public_key().modulus(), rsa.public_key().exponent());
        let jwks = json!({ "keys": [
            { "kty": "OKP", "crv": "Ed25519", "x": b64(&ed_public), "kid": "ed" },
            { "kty": "EC", "crv": "P-256", "x": b64(&es_public[1..33]), "y": b64(&es_public[33..]), "kid": "es" },
            { "kty": "RSA", "n": b64(n.big_endian_without_leading_zero()), "e": b64(e.big_endian_without_leading_zero()), "kid": "rs" },
        ] });
        Self { jwks, ed, es, rsa }
    }

    fn token(&self, algorithm: Algorithm, n: usize) -> String {
        let claims = claims(n);
        match algorithm {
            Algorithm::HS256 => {
                jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
            }
            Algorithm::EdDSA => {
                let header = Header { kid: Some("ed".into()), ..Header::new(Algorithm::EdDSA) };
                jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(&self.ed)).unwrap()
            }
            Algorithm::ES256 => {
                let header = Header { kid: Some("es".into()), ..Header::new(Algorithm::ES256) };
                jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ec_der(&self.es)).unwrap()
            }
            _ => {
                // The RSA key is PKCS#8, which jsonwebtoken's RSA signer does not read: signed here.
                let input = format!(
                    "{}.{}",
                    b64(br#"{"alg":"RS256","typ":"JWT","kid":"rs"}"#),
                    b64(claims.to_string().as_bytes())
                );
                let mut signature = vec![0; self.rsa.public_modulus_len()];
                let rng = SystemRandom::new();
                self.rsa.sign(&signature::RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut signature).unwrap();
                format!("{input}.{}", b64(&signature))
            }
        }
    }
}

fn verifier(jwks: &std::path::Path, cache: usize) -> Jwt {
    let config = Config {
        auth_jwt_secret: Some(SECRET.into()),
        auth_jwt_keys: Some(jwks.to_owned()),
        auth_token_cache: cache,
        ..Config::default()
    };
    Jwt::new(&config).unwrap()
}

fn verify(c: &mut Criterion) {
    let keys = Keys::new();
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, keys.jwks.to_string()).unwrap();

    let uncached = verifier(&jwks, 0);
    let mut group = c.benchmark_group("verify_first_seen");
    group.measurement_time(Duration::from_secs(5));
    for (name, algorithm) in [
        ("HS256", Algorithm::HS256),
        ("EdDSA", Algorithm::EdDSA),
        ("ES256", Algorithm::ES256),
        ("RS256", Algorithm::RS256),
    ] {
        let token = keys.token(algorithm, 0);
        assert_eq!(uncached.verify(&token).map(|user| user.get()), Ok(42), "{name}");
        group.bench_function(name, |b| b.iter(|| uncached.verify(std::hint::black_box(&token)).unwrap()));
    }
    group.finish();

    let cached = verifier(&jwks, CACHE_ENTRIES);
    let token = keys.token(Algorithm::EdDSA, 0);
    cached.verify(&token).unwrap();
    c.bench_function("verify_remembered_EdDSA", |b| b.iter(|| cached.verify(std::hint::black_box(&token)).unwrap()));

    // Memory: tokens made first, so only what remembering them keeps is counted.
    let tokens: Vec<String> = (1..=CACHE_ENTRIES).map(|n| keys.token(Algorithm::HS256, n)).collect();
    let before = LIVE.load(Ordering::Relaxed);
    let full = verifier(&jwks, CACHE_ENTRIES);
    for token in &tokens {
        full.verify(token).unwrap();
    }
    let held = LIVE.load(Ordering::Relaxed) - before;
    println!(
        "token cache: {} tokens remembered, {held} bytes held, {:.0} bytes per remembered token",
        full.remembered(),
        held as f64 / full.remembered() as f64
    );
}

criterion_group!(benches, verify);
criterion_main!(benches);
