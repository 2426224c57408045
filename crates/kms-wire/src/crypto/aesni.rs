//! The Rijndael rounds on the CPU's AES instructions (x86-64 AES-NI), used when the CPU has
//! them (checked at run time; the tables of [`super::rijndael`] otherwise).
//!
//! An AES instruction does one whole round of the 128-bit-block cipher with any round key, so
//! it runs the v6 modified schedule and the 160-bit-key v4 cipher as well as standard AES: the
//! round keys come from the same expansion as the tables use (`aesdec` takes the equivalent
//! inverse cipher's keys, which is what `Aes128` keeps for decryption). CBC decryption works
//! on four blocks at a time, since their rounds are independent and the instruction is
//! pipelined.
//!
//! This is the one module of the workspace that uses `unsafe`: calling a function compiled
//! for the AES instructions is only sound on a CPU that has them, and every such call below
//! sits right after the run-time check. The intrinsics inside take and return values (no
//! pointers), so nothing else here needs `unsafe`.
#![allow(unsafe_code)]

use std::arch::x86_64::{
    __m128i, _mm_aesdec_si128, _mm_aesdeclast_si128, _mm_aesenc_si128, _mm_aesenclast_si128,
    _mm_cvtsi128_si64, _mm_set_epi64x, _mm_unpackhi_epi64, _mm_xor_si128,
};

use super::rijndael::Block;

/// Whether the CPU has the AES instructions (std caches the answer after the first call).
#[inline]
pub(super) fn available() -> bool {
    std::arch::is_x86_feature_detected!("aes")
}

/// A block in the register layout the instructions use (byte 0 lowest).
#[inline]
#[target_feature(enable = "aes")]
fn load(b: &Block) -> __m128i {
    let (lo, hi) = b.split_at(8);
    let half = |h: &[u8]| {
        let mut x = [0u8; 8];
        x.copy_from_slice(h);
        i64::from_le_bytes(x)
    };
    let (lo, hi) = (half(lo), half(hi));
    // Value-only intrinsic of SSE2, part of every x86-64 CPU.
    _mm_set_epi64x(hi, lo)
}

#[inline]
#[target_feature(enable = "aes")]
fn store(x: __m128i, b: &mut Block) {
    b[..8].copy_from_slice(&_mm_cvtsi128_si64(x).to_le_bytes());
    b[8..].copy_from_slice(&_mm_cvtsi128_si64(_mm_unpackhi_epi64(x, x)).to_le_bytes());
}

/// A round key given as four big-endian column words (the tables' form).
#[inline]
#[target_feature(enable = "aes")]
fn key(k: &[u32; 4]) -> __m128i {
    let mut b = [0u8; 16];
    for (chunk, w) in b.chunks_exact_mut(4).zip(k) {
        chunk.copy_from_slice(&w.to_be_bytes());
    }
    load(&b)
}

#[inline]
#[target_feature(enable = "aes")]
fn keys<const N: usize>(ks: &[[u32; 4]; N]) -> [__m128i; N] {
    let mut out = [_mm_set_epi64x(0, 0); N];
    for (o, k) in out.iter_mut().zip(ks) {
        *o = key(k);
    }
    out
}

#[inline]
#[target_feature(enable = "aes")]
fn encrypt<const N: usize>(k: &[__m128i; N], x: __m128i) -> __m128i {
    let mut x = _mm_xor_si128(x, k[0]);
    for rk in &k[1..N - 1] {
        x = _mm_aesenc_si128(x, *rk);
    }
    _mm_aesenclast_si128(x, k[N - 1])
}

#[inline]
#[target_feature(enable = "aes")]
fn decrypt<const N: usize>(k: &[__m128i; N], x: __m128i) -> __m128i {
    let mut x = _mm_xor_si128(x, k[0]);
    for rk in &k[1..N - 1] {
        x = _mm_aesdec_si128(x, *rk);
    }
    _mm_aesdeclast_si128(x, k[N - 1])
}

#[target_feature(enable = "aes")]
fn cbc_encrypt_ni<const N: usize>(ek: &[[u32; 4]; N], iv: &Block, blocks: &mut [Block]) {
    let k = keys(ek);
    let mut chain = load(iv);
    for b in blocks {
        chain = encrypt(&k, _mm_xor_si128(chain, load(b)));
        store(chain, b);
    }
}

#[target_feature(enable = "aes")]
fn cbc_decrypt_ni<const N: usize>(dk: &[[u32; 4]; N], iv: &Block, blocks: &mut [Block]) {
    let k = keys(dk);
    let mut prev = load(iv);
    let (quads, rest) = blocks.as_chunks_mut::<4>();
    for q in quads {
        let c = [load(&q[0]), load(&q[1]), load(&q[2]), load(&q[3])];
        let (mut x0, mut x1, mut x2, mut x3) = (
            _mm_xor_si128(c[0], k[0]),
            _mm_xor_si128(c[1], k[0]),
            _mm_xor_si128(c[2], k[0]),
            _mm_xor_si128(c[3], k[0]),
        );
        for rk in &k[1..N - 1] {
            x0 = _mm_aesdec_si128(x0, *rk);
            x1 = _mm_aesdec_si128(x1, *rk);
            x2 = _mm_aesdec_si128(x2, *rk);
            x3 = _mm_aesdec_si128(x3, *rk);
        }
        let last = k[N - 1];
        store(
            _mm_xor_si128(_mm_aesdeclast_si128(x0, last), prev),
            &mut q[0],
        );
        store(
            _mm_xor_si128(_mm_aesdeclast_si128(x1, last), c[0]),
            &mut q[1],
        );
        store(
            _mm_xor_si128(_mm_aesdeclast_si128(x2, last), c[1]),
            &mut q[2],
        );
        store(
            _mm_xor_si128(_mm_aesdeclast_si128(x3, last), c[2]),
            &mut q[3],
        );
        prev = c[3];
    }
    for b in rest {
        let c = load(b);
        store(_mm_xor_si128(decrypt(&k, c), prev), b);
        prev = c;
    }
}

#[target_feature(enable = "aes")]
fn cbc_mac_ni<const N: usize>(ek: &[[u32; 4]; N], blocks: &[Block], last: &Block) -> Block {
    let k = keys(ek);
    let mut x = _mm_set_epi64x(0, 0);
    for b in blocks.iter().chain(std::iter::once(last)) {
        x = encrypt(&k, _mm_xor_si128(x, load(b)));
    }
    let mut out = [0u8; 16];
    store(x, &mut out);
    out
}

#[target_feature(enable = "aes")]
fn decrypt_block_ni<const N: usize>(dk: &[[u32; 4]; N], b: &mut Block) {
    let k = keys(dk);
    store(decrypt(&k, load(b)), b);
}

/// CBC-encrypt `blocks` with the encryption round keys `ek`; `false` (nothing done) when the
/// CPU lacks the instructions.
pub(super) fn cbc_encrypt<const N: usize>(
    ek: &[[u32; 4]; N],
    iv: &Block,
    blocks: &mut [Block],
) -> bool {
    if !available() {
        return false;
    }
    // SAFETY: the CPU has the AES instructions (checked just above), the only target feature
    // the function is compiled with beyond the x86-64 baseline.
    unsafe { cbc_encrypt_ni(ek, iv, blocks) };
    true
}

/// CBC-decrypt `blocks` with the equivalent-inverse-cipher round keys `dk`; `false` (nothing
/// done) when the CPU lacks the instructions.
pub(super) fn cbc_decrypt<const N: usize>(
    dk: &[[u32; 4]; N],
    iv: &Block,
    blocks: &mut [Block],
) -> bool {
    if !available() {
        return false;
    }
    // SAFETY: as in `cbc_encrypt`.
    unsafe { cbc_decrypt_ni(dk, iv, blocks) };
    true
}

/// The CBC-MAC (zero IV) of `blocks` then `last` under the round keys `ek`; `None` when the
/// CPU lacks the instructions.
pub(super) fn cbc_mac<const N: usize>(
    ek: &[[u32; 4]; N],
    blocks: &[Block],
    last: &Block,
) -> Option<Block> {
    if !available() {
        return None;
    }
    // SAFETY: as in `cbc_encrypt`.
    Some(unsafe { cbc_mac_ni(ek, blocks, last) })
}

/// Decrypt one block in place; `false` (nothing done) when the CPU lacks the instructions.
pub(super) fn decrypt_block<const N: usize>(dk: &[[u32; 4]; N], b: &mut Block) -> bool {
    if !available() {
        return false;
    }
    // SAFETY: as in `cbc_encrypt`.
    unsafe { decrypt_block_ni(dk, b) };
    true
}
