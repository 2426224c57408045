//! Table-driven Rijndael with a 128-bit block: AES-128 (standard and the KMS v6 modified key
//! schedule) and the 160-bit-key variant used by the KMS v4 MAC (PROTOCOL.md §6.2–§6.4).
//!
//! Key expansion is a `const fn`, so the three fixed KMS keys are expanded at compile time
//! (see [`super::V4_CIPHER`], [`super::V5_CIPHER`], [`super::V6_CIPHER`]).
//!
//! Timing: T-table lookups are not constant-time. That is irrelevant here: every KMS key is a
//! published constant, so there is no secret to leak through the cache.

use super::tables::{INV_SBOX, SBOX, SBOX_CONST, TD, TE, inv_mix_column};

/// A 16-byte cipher block.
pub type Block = [u8; 16];

/// Round constants Rcon[1..=10] (the byte in the most significant position of the word).
const RCON: [u8; 10] = [0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0x1b, 0x36];

const fn sub_word(w: u32) -> u32 {
    let b = w.to_be_bytes();
    u32::from_be_bytes([
        SBOX_CONST[b[0] as usize],
        SBOX_CONST[b[1] as usize],
        SBOX_CONST[b[2] as usize],
        SBOX_CONST[b[3] as usize],
    ])
}

/// FIPS-197 key expansion for `NK` key words producing `N` round keys (N = Nr + 1), for
/// Nk ≤ 6 (no extra SubWord step). Round key r = words 4r..4r+3, big-endian.
const fn expand<const NK: usize, const N: usize>(key: &[u8]) -> [[u32; 4]; N] {
    let mut w = [[0u32; 4]; N];
    let total = 4 * N;
    let mut i = 0;
    while i < total {
        let v = if i < NK {
            u32::from_be_bytes([key[4 * i], key[4 * i + 1], key[4 * i + 2], key[4 * i + 3]])
        } else {
            let prev = w[(i - 1) / 4][(i - 1) % 4];
            let t = if i % NK == 0 {
                sub_word(prev.rotate_left(8)) ^ ((RCON[i / NK - 1] as u32) << 24)
            } else {
                prev
            };
            w[(i - NK) / 4][(i - NK) % 4] ^ t
        };
        w[i / 4][i % 4] = v;
        i += 1;
    }
    w
}

/// Decryption round keys of the equivalent inverse cipher (FIPS-197 §5.3.5).
const fn inverse_schedule<const N: usize>(ek: &[[u32; 4]; N]) -> [[u32; 4]; N] {
    let mut dk = [[0u32; 4]; N];
    let nr = N - 1;
    dk[0] = ek[nr];
    dk[nr] = ek[0];
    let mut r = 1;
    while r < nr {
        let k = ek[nr - r];
        dk[r] = [
            inv_mix_column(k[0]),
            inv_mix_column(k[1]),
            inv_mix_column(k[2]),
            inv_mix_column(k[3]),
        ];
        r += 1;
    }
    dk
}

fn round_key_bytes<const N: usize>(ek: &[[u32; 4]; N]) -> [Block; N] {
    let mut out = [[0u8; 16]; N];
    for (o, k) in out.iter_mut().zip(ek.iter()) {
        for (chunk, w) in o.chunks_exact_mut(4).zip(k.iter()) {
            chunk.copy_from_slice(&w.to_be_bytes());
        }
    }
    out
}

/// A block as four big-endian column words.
#[inline(always)]
pub(crate) fn load(b: &Block) -> [u32; 4] {
    [
        u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        u32::from_be_bytes([b[12], b[13], b[14], b[15]]),
    ]
}

/// Store four big-endian column words as a block.
#[inline(always)]
pub(crate) fn store(s: [u32; 4], b: &mut Block) {
    b[0..4].copy_from_slice(&s[0].to_be_bytes());
    b[4..8].copy_from_slice(&s[1].to_be_bytes());
    b[8..12].copy_from_slice(&s[2].to_be_bytes());
    b[12..16].copy_from_slice(&s[3].to_be_bytes());
}

#[inline(always)]
fn b0(w: u32) -> usize {
    (w >> 24) as usize
}
#[inline(always)]
fn b1(w: u32) -> usize {
    ((w >> 16) & 0xff) as usize
}
#[inline(always)]
fn b2(w: u32) -> usize {
    ((w >> 8) & 0xff) as usize
}
#[inline(always)]
fn b3(w: u32) -> usize {
    (w & 0xff) as usize
}

/// Encrypt one block (as column words) with `N` round keys (Nr = N − 1 rounds).
#[inline(always)]
fn encrypt_with<const N: usize>(ek: &[[u32; 4]; N], mut s: [u32; 4]) -> [u32; 4] {
    let [t0, t1, t2, t3] = &TE;
    for (x, k) in s.iter_mut().zip(ek[0].iter()) {
        *x ^= k;
    }
    for k in &ek[1..N - 1] {
        let [s0, s1, s2, s3] = s;
        s = [
            t0[b0(s0)] ^ t1[b1(s1)] ^ t2[b2(s2)] ^ t3[b3(s3)] ^ k[0],
            t0[b0(s1)] ^ t1[b1(s2)] ^ t2[b2(s3)] ^ t3[b3(s0)] ^ k[1],
            t0[b0(s2)] ^ t1[b1(s3)] ^ t2[b2(s0)] ^ t3[b3(s1)] ^ k[2],
            t0[b0(s3)] ^ t1[b1(s0)] ^ t2[b2(s1)] ^ t3[b3(s2)] ^ k[3],
        ];
    }
    let k = &ek[N - 1];
    let sb = |w: u32, sh: u32| u32::from(SBOX[((w >> sh) & 0xff) as usize]) << sh;
    let [s0, s1, s2, s3] = s;
    [
        (sb(s0, 24) | sb(s1, 16) | sb(s2, 8) | sb(s3, 0)) ^ k[0],
        (sb(s1, 24) | sb(s2, 16) | sb(s3, 8) | sb(s0, 0)) ^ k[1],
        (sb(s2, 24) | sb(s3, 16) | sb(s0, 8) | sb(s1, 0)) ^ k[2],
        (sb(s3, 24) | sb(s0, 16) | sb(s1, 8) | sb(s2, 0)) ^ k[3],
    ]
}

/// Decrypt one block (as column words) with the equivalent-inverse-cipher round keys `dk`.
#[inline(always)]
fn decrypt_with<const N: usize>(dk: &[[u32; 4]; N], mut s: [u32; 4]) -> [u32; 4] {
    let [t0, t1, t2, t3] = &TD;
    for (x, k) in s.iter_mut().zip(dk[0].iter()) {
        *x ^= k;
    }
    for k in &dk[1..N - 1] {
        let [s0, s1, s2, s3] = s;
        s = [
            t0[b0(s0)] ^ t1[b1(s3)] ^ t2[b2(s2)] ^ t3[b3(s1)] ^ k[0],
            t0[b0(s1)] ^ t1[b1(s0)] ^ t2[b2(s3)] ^ t3[b3(s2)] ^ k[1],
            t0[b0(s2)] ^ t1[b1(s1)] ^ t2[b2(s0)] ^ t3[b3(s3)] ^ k[2],
            t0[b0(s3)] ^ t1[b1(s2)] ^ t2[b2(s1)] ^ t3[b3(s0)] ^ k[3],
        ];
    }
    let k = &dk[N - 1];
    let ib = |w: u32, sh: u32| u32::from(INV_SBOX[((w >> sh) & 0xff) as usize]) << sh;
    let [s0, s1, s2, s3] = s;
    [
        (ib(s0, 24) | ib(s3, 16) | ib(s2, 8) | ib(s1, 0)) ^ k[0],
        (ib(s1, 24) | ib(s0, 16) | ib(s3, 8) | ib(s2, 0)) ^ k[1],
        (ib(s2, 24) | ib(s1, 16) | ib(s0, 8) | ib(s3, 0)) ^ k[2],
        (ib(s3, 24) | ib(s2, 16) | ib(s1, 8) | ib(s0, 0)) ^ k[3],
    ]
}

/// AES-128 (10 rounds) with precomputed encryption and decryption key schedules; either the
/// standard FIPS-197 schedule ([`Aes128::new`]) or the KMS v6 modified one
/// ([`Aes128::new_kms_v6`]).
#[derive(Clone)]
pub struct Aes128 {
    ek: [[u32; 4]; 11],
    dk: [[u32; 4]; 11],
}

impl std::fmt::Debug for Aes128 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Aes128").finish_non_exhaustive()
    }
}

impl Aes128 {
    /// Standard AES-128 key expansion.
    pub const fn new(key: &[u8; 16]) -> Aes128 {
        Aes128::from_schedule(expand::<4, 11>(key))
    }

    /// The KMS v6 variant (§6.4): the standard expansion, then bytes 64, 96 and 128 of the
    /// 176-byte schedule (byte 0 of round keys 4, 6 and 8) XORed with 0x73, 0x09 and 0xE4.
    /// Used for both encryption and decryption.
    pub const fn new_kms_v6(key: &[u8; 16]) -> Aes128 {
        let mut ek = expand::<4, 11>(key);
        ek[4][0] ^= 0x73 << 24;
        ek[6][0] ^= 0x09 << 24;
        ek[8][0] ^= 0xE4 << 24;
        Aes128::from_schedule(ek)
    }

    const fn from_schedule(ek: [[u32; 4]; 11]) -> Aes128 {
        Aes128 {
            dk: inverse_schedule(&ek),
            ek,
        }
    }

    /// The 11 encryption round keys (round 0 first), as bytes.
    pub fn round_keys(&self) -> [Block; 11] {
        round_key_bytes(&self.ek)
    }

    /// Encrypt one block in place.
    #[inline]
    pub fn encrypt_block(&self, block: &mut Block) {
        store(encrypt_with(&self.ek, load(block)), block);
    }

    /// Decrypt one block in place.
    #[inline]
    pub fn decrypt_block(&self, block: &mut Block) {
        store(decrypt_with(&self.dk, load(block)), block);
    }

    /// Encrypt one block given as big-endian column words (see [`load`]).
    #[inline]
    pub(crate) fn encrypt_words(&self, s: [u32; 4]) -> [u32; 4] {
        encrypt_with(&self.ek, s)
    }

    /// The encryption round keys as big-endian column words.
    pub(crate) fn enc_keys(&self) -> &[[u32; 4]; 11] {
        &self.ek
    }

    /// The equivalent inverse cipher's round keys as big-endian column words.
    pub(crate) fn dec_keys(&self) -> &[[u32; 4]; 11] {
        &self.dk
    }

    /// Decrypt one block given as big-endian column words.
    #[inline]
    pub(crate) fn decrypt_words(&self, s: [u32; 4]) -> [u32; 4] {
        decrypt_with(&self.dk, s)
    }
}

/// Rijndael with a 128-bit block and a 160-bit key (Nk = 5, 11 rounds, 12 round keys), as
/// used by the KMS v4 MAC (§6.2). Only encryption is needed.
#[derive(Clone)]
pub struct Rijndael160 {
    ek: [[u32; 4]; 12],
}

impl std::fmt::Debug for Rijndael160 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rijndael160").finish_non_exhaustive()
    }
}

impl Rijndael160 {
    /// Key expansion for the 160-bit key.
    pub const fn new(key: &[u8; 20]) -> Rijndael160 {
        Rijndael160 {
            ek: expand::<5, 12>(key),
        }
    }

    /// The 12 round keys (round 0 first), as bytes.
    pub fn round_keys(&self) -> [Block; 12] {
        round_key_bytes(&self.ek)
    }

    /// Encrypt one block in place.
    #[inline]
    pub fn encrypt_block(&self, block: &mut Block) {
        store(encrypt_with(&self.ek, load(block)), block);
    }

    /// Encrypt one block given as big-endian column words.
    #[inline]
    pub(crate) fn encrypt_words(&self, s: [u32; 4]) -> [u32; 4] {
        encrypt_with(&self.ek, s)
    }

    /// The round keys as big-endian column words.
    pub(crate) fn enc_keys(&self) -> &[[u32; 4]; 12] {
        &self.ek
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h16(s: &str) -> Block {
        let mut b = [0u8; 16];
        for (i, o) in b.iter_mut().enumerate() {
            *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        b
    }

    #[test]
    fn fips197_appendix_c1() {
        let aes = Aes128::new(&h16("000102030405060708090a0b0c0d0e0f"));
        let mut b = h16("00112233445566778899aabbccddeeff");
        aes.encrypt_block(&mut b);
        assert_eq!(b, h16("69c4e0d86a7b0430d8cdb78070b4c55a"));
        aes.decrypt_block(&mut b);
        assert_eq!(b, h16("00112233445566778899aabbccddeeff"));
    }

    #[test]
    fn fips197_key_expansion_last_round_key() {
        // FIPS-197 Appendix A.1.
        let aes = Aes128::new(&h16("2b7e151628aed2a6abf7158809cf4f3c"));
        assert_eq!(
            aes.round_keys()[10],
            h16("d014f9a8c9ee2589e13f0cc8b6630ca6")
        );
    }
}
