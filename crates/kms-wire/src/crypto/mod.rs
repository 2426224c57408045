//! Cryptography of the KMS protocol (PROTOCOL.md §6).
//!
//! * [`Rijndael160`] and [`v4_mac`] — the v4 CBC-MAC with a 160-bit-key Rijndael (§6.2);
//! * [`Aes128`] — AES-128 with the standard key schedule (v5, §6.3) or the v6 modified schedule
//!   (§6.4), single blocks plus [`Aes128::cbc_encrypt`] / [`Aes128::cbc_decrypt`];
//! * [`pkcs7_pad`] / [`pkcs7_unpad`];
//! * [`v6_hmac_key`] / [`v6_hmac`] — the v6 time-slot HMAC key and the truncated
//!   HMAC-SHA256 (§6.6).
//!
//! The three protocol keys are expanded at compile time into [`V4_CIPHER`], [`V5_CIPHER`] and
//! [`V6_CIPHER`]. Nothing here allocates except [`pkcs7_pad`] growing its `Vec`.
//!
//! On x86-64 CPUs with the AES instructions the block functions run on them (`aesni.rs`);
//! elsewhere on the tables (`rijndael.rs`). Both give the same bytes (tested against each other
//! and against the captured vectors).

#[cfg(target_arch = "x86_64")]
mod aesni;
mod rijndael;
mod tables;

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

pub use rijndael::{Aes128, Block, Rijndael160};
use rijndael::{load, store};

/// K4: the 160-bit v4 MAC key.
pub const KEY_V4: [u8; 20] = [
    0x05, 0x3D, 0x83, 0x07, 0xF9, 0xE5, 0xF0, 0x88, 0xEB, 0x5E, 0xA6, 0x68, 0x6C, 0xF0, 0x37, 0xC7,
    0xE4, 0xEF, 0xD2, 0xD6,
];
/// K5: the v5 AES-128 key (standard schedule).
pub const KEY_V5: [u8; 16] = [
    0xCD, 0x7E, 0x79, 0x6F, 0x2A, 0xB2, 0x5D, 0xCB, 0x55, 0xFF, 0xC8, 0xEF, 0x83, 0x64, 0xC4, 0x70,
];
/// K6: the v6 AES-128 key (used with the modified schedule).
pub const KEY_V6: [u8; 16] = [
    0xA9, 0x4A, 0x41, 0x95, 0xE2, 0x01, 0x43, 0x2D, 0x9B, 0xCB, 0x46, 0x04, 0x05, 0xD8, 0x4A, 0x21,
];
/// C1: the v6 HMAC time-slot length in FILETIME ticks (≈ 4.1166 h).
pub const HMAC_C1: u64 = 0x0000_0022_8168_89BD;
/// C2: the v6 HMAC slot multiplier.
pub const HMAC_C2: u64 = 0x0000_0020_8CBA_B5ED;
/// C3: the v6 HMAC slot addend.
pub const HMAC_C3: u64 = 0x3156_CD5A_C628_477A;

/// Rijndael-160 keyed with [`KEY_V4`], expanded at compile time.
pub static V4_CIPHER: Rijndael160 = Rijndael160::new(&KEY_V4);
/// AES-128 keyed with [`KEY_V5`], expanded at compile time.
pub static V5_CIPHER: Aes128 = Aes128::new(&KEY_V5);
/// The v6 modified AES-128 keyed with [`KEY_V6`], expanded at compile time.
pub static V6_CIPHER: Aes128 = Aes128::new_kms_v6(&KEY_V6);

/// Errors of the block-mode helpers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The buffer length is not a multiple of the 16-byte block size.
    #[error("length {0} is not a multiple of 16")]
    NotBlockAligned(usize),
    /// PKCS#7 padding is missing or malformed.
    #[error("invalid PKCS#7 padding")]
    BadPadding,
}

#[inline(always)]
fn xor_words(a: [u32; 4], b: [u32; 4]) -> [u32; 4] {
    [a[0] ^ b[0], a[1] ^ b[1], a[2] ^ b[2], a[3] ^ b[3]]
}

/// `buf` as 16-byte blocks; an error unless its length is a multiple of 16.
fn whole_blocks(buf: &mut [u8]) -> Result<&mut [Block], CryptoError> {
    let len = buf.len();
    match buf.as_chunks_mut::<16>() {
        (blocks, []) => Ok(blocks),
        _ => Err(CryptoError::NotBlockAligned(len)),
    }
}

impl Aes128 {
    /// CBC-encrypt `buf` in place with `iv`. `buf.len()` must be a multiple of 16 (pad first).
    pub fn cbc_encrypt(&self, iv: &Block, buf: &mut [u8]) -> Result<(), CryptoError> {
        let blocks = whole_blocks(buf)?;
        #[cfg(target_arch = "x86_64")]
        if aesni::cbc_encrypt(self.enc_keys(), iv, blocks) {
            return Ok(());
        }
        self.cbc_encrypt_tables(iv, blocks);
        Ok(())
    }

    fn cbc_encrypt_tables(&self, iv: &Block, blocks: &mut [Block]) {
        let mut chain = load(iv);
        for block in blocks {
            chain = self.encrypt_words(xor_words(chain, load(block)));
            store(chain, block);
        }
    }

    /// CBC-decrypt `buf` in place with `iv`. `buf.len()` must be a multiple of 16; the padding
    /// is left in place (see [`pkcs7_unpad`]).
    pub fn cbc_decrypt(&self, iv: &Block, buf: &mut [u8]) -> Result<(), CryptoError> {
        let blocks = whole_blocks(buf)?;
        #[cfg(target_arch = "x86_64")]
        if aesni::cbc_decrypt(self.dec_keys(), iv, blocks) {
            return Ok(());
        }
        self.cbc_decrypt_tables(iv, blocks);
        Ok(())
    }

    fn cbc_decrypt_tables(&self, iv: &Block, blocks: &mut [Block]) {
        let mut prev = load(iv);
        for block in blocks {
            let cipher = load(block);
            store(xor_words(self.decrypt_words(cipher), prev), block);
            prev = cipher;
        }
    }

    /// D_K(x): a single raw block decryption (no chaining), as used for `D_K(IV)` in §5.9.
    #[inline]
    pub fn decrypt_copy(&self, block: &Block) -> Block {
        let mut b = *block;
        #[cfg(target_arch = "x86_64")]
        if aesni::decrypt_block(self.dec_keys(), &mut b) {
            return b;
        }
        self.decrypt_block(&mut b);
        b
    }
}

/// Append PKCS#7 padding (1 … 16 bytes, each equal to the pad length) to `buf`.
pub fn pkcs7_pad(buf: &mut Vec<u8>) {
    let n = 16 - buf.len() % 16;
    // n is in 1..=16, so the cast is exact.
    buf.resize(buf.len() + n, n as u8);
}

/// The number of PKCS#7 pad bytes that [`pkcs7_pad`] appends to `len` bytes.
pub const fn pkcs7_pad_len(len: usize) -> usize {
    16 - len % 16
}

/// Validate and strip PKCS#7 padding. `data` must be a non-empty multiple of 16 bytes; the pad
/// length must be 1 … 16 and every pad byte must equal it. The last 16 bytes are always all
/// examined, so the work done does not depend on where a bad byte is.
pub fn pkcs7_unpad(data: &[u8]) -> Result<&[u8], CryptoError> {
    if data.is_empty() || !data.len().is_multiple_of(16) {
        return Err(CryptoError::BadPadding);
    }
    let start = data.len() - 16;
    let last_block = data.get(start..).ok_or(CryptoError::BadPadding)?;
    let n = *last_block.last().ok_or(CryptoError::BadPadding)?;
    let mut bad = u8::from(n == 0 || n > 16);
    for (i, &b) in last_block.iter().enumerate() {
        // Byte i of the last block is a pad byte iff i >= 16 - n.
        let is_pad = u8::from(i + usize::from(n) >= 16);
        bad |= is_pad & u8::from(b != n);
    }
    if bad != 0 {
        return Err(CryptoError::BadPadding);
    }
    data.get(..data.len() - usize::from(n))
        .ok_or(CryptoError::BadPadding)
}

/// V4MAC (§6.2): CBC-MAC with zero IV under [`V4_CIPHER`] over `msg ‖ 80 00…` padded to a
/// multiple of 16 (at least one byte is always appended). Not CMAC.
pub fn v4_mac(msg: &[u8]) -> Block {
    let (blocks, rest) = msg.as_chunks::<16>();
    let mut last = [0u8; 16];
    if let Some(dst) = last.get_mut(..rest.len()) {
        dst.copy_from_slice(rest);
    }
    if let Some(b) = last.get_mut(rest.len()) {
        *b = 0x80;
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(mac) = aesni::cbc_mac(V4_CIPHER.enc_keys(), blocks, &last) {
        return mac;
    }
    v4_mac_tables(blocks, &last)
}

fn v4_mac_tables(blocks: &[Block], last: &Block) -> Block {
    let mut x = [0u32; 4];
    for block in blocks.iter().chain(std::iter::once(last)) {
        x = V4_CIPHER.encrypt_words(xor_words(x, load(block)));
    }
    let mut out = [0u8; 16];
    store(x, &mut out);
    out
}

/// The v6 HMAC time slot (§6.6): `(t div C1) × C2 + C3` (wrapping 64-bit arithmetic), with
/// `offset` slots added the way vlmcs does for its −1/0/+1 tolerance: `offset × C1` is added
/// after the multiplication. A host always uses offset 0.
pub const fn v6_hmac_slot(t: u64, offset: i64) -> u64 {
    (t / HMAC_C1)
        .wrapping_mul(HMAC_C2)
        .wrapping_add((offset as u64).wrapping_mul(HMAC_C1))
        .wrapping_add(HMAC_C3)
}

/// HK(T) for an already computed slot: the last 16 bytes of SHA-256(slot as 8 LE bytes).
pub fn v6_hmac_key_for_slot(slot: u64) -> [u8; 16] {
    let digest = Sha256::digest(slot.to_le_bytes());
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[16..32]);
    key
}

/// HK(T) (§6.6): the v6 HMAC key for response time `t` (a FILETIME), slot offset 0.
pub fn v6_hmac_key(t: u64) -> [u8; 16] {
    v6_hmac_key_for_slot(v6_hmac_slot(t, 0))
}

/// The transmitted v6 HMAC field: bytes 16..32 of HMAC-SHA256(`key`, concatenation of
/// `parts`).
pub fn v6_hmac(key: &[u8; 16], parts: &[&[u8]]) -> [u8; 16] {
    let full = v6_hmac_full(key, parts);
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[16..]);
    out
}

/// The full 32-byte HMAC-SHA256(`key`, concatenation of `parts`).
pub fn v6_hmac_full(key: &[u8; 16], parts: &[&[u8]]) -> [u8; 32] {
    // A key shorter than the 64-byte SHA-256 block is zero-padded by HMAC, so passing the
    // zero-padded block-sized key is identical and infallible.
    let mut block_key = [0u8; 64];
    block_key[..16].copy_from_slice(key);
    let mut mac = <Hmac<Sha256> as KeyInit>::new(&block_key.into());
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkcs7_round_trip_all_lengths() {
        for len in 0..64 {
            let mut v: Vec<u8> = (0..len as u8).collect();
            pkcs7_pad(&mut v);
            assert_eq!(v.len() % 16, 0);
            assert_eq!(v.len() - len, pkcs7_pad_len(len));
            assert_eq!(
                pkcs7_unpad(&v).unwrap(),
                &(0..len as u8).collect::<Vec<_>>()[..]
            );
        }
    }

    #[test]
    fn pkcs7_rejects_bad() {
        assert_eq!(pkcs7_unpad(&[]), Err(CryptoError::BadPadding));
        assert_eq!(pkcs7_unpad(&[1u8; 15]), Err(CryptoError::BadPadding));
        assert_eq!(pkcs7_unpad(&[0u8; 16]), Err(CryptoError::BadPadding));
        assert_eq!(pkcs7_unpad(&[17u8; 16]), Err(CryptoError::BadPadding));
        let mut b = [4u8; 16];
        b[12] = 3;
        assert_eq!(pkcs7_unpad(&b), Err(CryptoError::BadPadding));
        b[12] = 4;
        b[11] = 3;
        assert_eq!(pkcs7_unpad(&b).unwrap().len(), 12);
        assert_eq!(pkcs7_unpad(&[16u8; 16]).unwrap().len(), 0);
    }

    #[test]
    fn protocol_example_hmac_key() {
        assert_eq!(
            v6_hmac_slot(133_486_382_450_000_000, 0),
            0x3316_2924_81b6_a363
        );
        assert_eq!(
            v6_hmac_key(133_486_382_450_000_000),
            [
                0x5e, 0x19, 0xe2, 0x5a, 0x26, 0xc8, 0x48, 0x43, 0x4a, 0xbc, 0xc3, 0x54, 0x1b, 0xcb,
                0x92, 0xe9
            ]
        );
    }

    /// The AES instructions and the tables give the same bytes, for the three protocol
    /// ciphers and for random keys (standard and v6-modified schedules), every block count up
    /// to 9 (the four-block decryption groups and their tails) and random data.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn aes_instructions_match_the_tables() {
        use proptest::prelude::*;
        use proptest::test_runner::TestRunner;

        if !aesni::available() {
            // Nothing to compare: this CPU only ever uses the tables.
            return;
        }
        let check = |c: &Aes128, iv: &Block, data: &[u8]| {
            let mut blocks: Vec<Block> = data.as_chunks::<16>().0.to_vec();
            let mut ni = blocks.clone();
            c.cbc_encrypt_tables(iv, &mut blocks);
            assert!(aesni::cbc_encrypt(c.enc_keys(), iv, &mut ni));
            assert_eq!(ni, blocks, "CBC encryption");
            let mut back = ni.clone();
            c.cbc_decrypt_tables(iv, &mut blocks);
            assert!(aesni::cbc_decrypt(c.dec_keys(), iv, &mut back));
            assert_eq!(back, blocks, "CBC decryption");
            assert_eq!(back.concat(), data, "round trip");
            let mut one = *iv;
            assert!(aesni::decrypt_block(c.dec_keys(), &mut one));
            assert_eq!(one, {
                let mut t = *iv;
                c.decrypt_block(&mut t);
                t
            });
        };
        let mut runner = TestRunner::default();
        runner
            .run(
                &(
                    any::<[u8; 16]>(),
                    any::<bool>(),
                    any::<[u8; 16]>(),
                    0usize..=9,
                    proptest::collection::vec(any::<u8>(), 160),
                ),
                |(key, v6, iv, n, data)| {
                    let c = if v6 {
                        Aes128::new_kms_v6(&key)
                    } else {
                        Aes128::new(&key)
                    };
                    check(&c, &iv, &data[..16 * n]);
                    for fixed in [&V5_CIPHER, &V6_CIPHER] {
                        check(fixed, &iv, &data[..16 * n]);
                    }
                    let (blocks, rest) = data[..16 * n + n].as_chunks::<16>();
                    let mut last = [0u8; 16];
                    last[..rest.len()].copy_from_slice(rest);
                    last[rest.len()] = 0x80;
                    prop_assert_eq!(
                        aesni::cbc_mac(V4_CIPHER.enc_keys(), blocks, &last),
                        Some(v4_mac_tables(blocks, &last))
                    );
                    Ok(())
                },
            )
            .unwrap();
    }

    #[test]
    fn cbc_round_trip_and_alignment() {
        let mut buf: Vec<u8> = (0..48u8).collect();
        let iv = [7u8; 16];
        V6_CIPHER.cbc_encrypt(&iv, &mut buf).unwrap();
        assert_ne!(buf, (0..48u8).collect::<Vec<_>>());
        V6_CIPHER.cbc_decrypt(&iv, &mut buf).unwrap();
        assert_eq!(buf, (0..48u8).collect::<Vec<_>>());
        assert_eq!(
            V5_CIPHER.cbc_encrypt(&iv, &mut [0u8; 17]),
            Err(CryptoError::NotBlockAligned(17))
        );
        assert_eq!(
            V5_CIPHER.cbc_decrypt(&iv, &mut [0u8; 1]),
            Err(CryptoError::NotBlockAligned(1))
        );
    }
}
