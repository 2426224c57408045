//! AES lookup tables, computed at compile time by `const fn`s: the S-box and its inverse, and
//! the four encryption and four decryption T-tables (round function lookups that combine
//! SubBytes/InvSubBytes with MixColumns/InvMixColumns).
//!
//! Words are big-endian: the byte of row 0 of a state column is the most significant byte.

/// Multiply by x (i.e. 2) in GF(2^8) modulo x^8 + x^4 + x^3 + x + 1.
pub(crate) const fn xtime(a: u8) -> u8 {
    (a << 1) ^ if a & 0x80 != 0 { 0x1b } else { 0 }
}

/// Multiply two elements of GF(2^8).
pub(crate) const fn gmul(mut a: u8, mut b: u8) -> u8 {
    let mut p = 0u8;
    while b != 0 {
        if b & 1 != 0 {
            p ^= a;
        }
        a = xtime(a);
        b >>= 1;
    }
    p
}

/// The AES S-box, built from the multiplicative inverse and the affine map of FIPS-197 §5.1.1.
const fn make_sbox() -> [u8; 256] {
    let mut s = [0u8; 256];
    // p walks the multiplicative group by repeated multiplication by 3 (a generator); q walks
    // it in the opposite direction (division by 3), so q = p^-1 at every step.
    let mut p: u8 = 1;
    let mut q: u8 = 1;
    loop {
        p = p ^ xtime(p);
        q ^= q << 1;
        q ^= q << 2;
        q ^= q << 4;
        if q & 0x80 != 0 {
            q ^= 0x09;
        }
        let affine = q ^ q.rotate_left(1) ^ q.rotate_left(2) ^ q.rotate_left(3) ^ q.rotate_left(4);
        s[p as usize] = affine ^ 0x63;
        if p == 1 {
            break;
        }
    }
    s[0] = 0x63;
    s
}

const fn invert(s: &[u8; 256]) -> [u8; 256] {
    let mut inv = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        inv[s[i] as usize] = i as u8;
        i += 1;
    }
    inv
}

const fn word(b0: u8, b1: u8, b2: u8, b3: u8) -> u32 {
    u32::from_be_bytes([b0, b1, b2, b3])
}

/// Te0[x] = (2·S[x], S[x], S[x], 3·S[x]); Te1..Te3 are byte rotations of it.
const fn make_te(s: &[u8; 256]) -> [[u32; 256]; 4] {
    let mut t = [[0u32; 256]; 4];
    let mut i = 0;
    while i < 256 {
        let v = s[i];
        let w = word(gmul(v, 2), v, v, gmul(v, 3));
        t[0][i] = w;
        t[1][i] = w.rotate_right(8);
        t[2][i] = w.rotate_right(16);
        t[3][i] = w.rotate_right(24);
        i += 1;
    }
    t
}

/// Td0[x] = (14·S⁻¹[x], 9·S⁻¹[x], 13·S⁻¹[x], 11·S⁻¹[x]); Td1..Td3 are byte rotations of it.
const fn make_td(inv: &[u8; 256]) -> [[u32; 256]; 4] {
    let mut t = [[0u32; 256]; 4];
    let mut i = 0;
    while i < 256 {
        let v = inv[i];
        let w = word(gmul(v, 14), gmul(v, 9), gmul(v, 13), gmul(v, 11));
        t[0][i] = w;
        t[1][i] = w.rotate_right(8);
        t[2][i] = w.rotate_right(16);
        t[3][i] = w.rotate_right(24);
        i += 1;
    }
    t
}

/// InvMixColumns applied to one column word (used to build the decryption key schedule of
/// the equivalent inverse cipher, FIPS-197 §5.3.5).
pub(crate) const fn inv_mix_column(w: u32) -> u32 {
    let [a0, a1, a2, a3] = w.to_be_bytes();
    word(
        gmul(a0, 14) ^ gmul(a1, 11) ^ gmul(a2, 13) ^ gmul(a3, 9),
        gmul(a0, 9) ^ gmul(a1, 14) ^ gmul(a2, 11) ^ gmul(a3, 13),
        gmul(a0, 13) ^ gmul(a1, 9) ^ gmul(a2, 14) ^ gmul(a3, 11),
        gmul(a0, 11) ^ gmul(a1, 13) ^ gmul(a2, 9) ^ gmul(a3, 14),
    )
}

/// Compile-time S-box (usable from `const fn` key expansion).
pub(crate) const SBOX_CONST: [u8; 256] = make_sbox();
/// The S-box.
pub(crate) static SBOX: [u8; 256] = SBOX_CONST;
/// The inverse S-box.
pub(crate) static INV_SBOX: [u8; 256] = invert(&SBOX_CONST);
/// Encryption T-tables.
pub(crate) static TE: [[u32; 256]; 4] = make_te(&SBOX_CONST);
/// Decryption T-tables.
pub(crate) static TD: [[u32; 256]; 4] = make_td(&invert(&SBOX_CONST));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sbox_spot_values() {
        // FIPS-197 Figure 7.
        assert_eq!(SBOX[0x00], 0x63);
        assert_eq!(SBOX[0x01], 0x7c);
        assert_eq!(SBOX[0x53], 0xed);
        assert_eq!(SBOX[0xff], 0x16);
        assert_eq!(INV_SBOX[0x63], 0x00);
        assert_eq!(INV_SBOX[0xed], 0x53);
        // A permutation.
        let mut seen = [false; 256];
        for &v in SBOX.iter() {
            seen[v as usize] = true;
        }
        assert!(seen.iter().all(|&b| b));
    }

    #[test]
    fn inv_mix_column_inverts_mix_column() {
        // FIPS-197 §5.1.3 example column: db 13 53 45 -> 8e 4d a1 bc.
        assert_eq!(inv_mix_column(0x8e4d_a1bc), 0xdb13_5345);
    }
}
