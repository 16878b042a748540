//! CRC-32C (Castagnoli), the checksum of `PP2_TYPE_CRC32C`, as RFC 4960 appendix B
//! defines it: reflected polynomial 0x82F63B78, initial value and final XOR all ones.

/// The reflected Castagnoli polynomial.
const POLYNOMIAL: u32 = 0x82F6_3B78;

/// One entry per byte value: the CRC update for that byte, built at compile time.
const TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut byte = 0;
    while byte < 256 {
        let mut crc = byte as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ POLYNOMIAL
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[byte] = crc;
        byte += 1;
    }
    table
};

/// A running CRC-32C over bytes given in pieces.
#[derive(Debug, Clone, Copy)]
pub(super) struct Crc32c(u32);

impl Crc32c {
    pub(super) const fn new() -> Self {
        Self(!0)
    }

    pub(super) fn update(mut self, bytes: &[u8]) -> Self {
        for &b in bytes {
            // The low byte of (crc ^ b) picks the entry; `as u8` keeps the index below 256.
            self.0 = (self.0 >> 8) ^ TABLE[usize::from((self.0 as u8) ^ b)];
        }
        self
    }

    pub(super) const fn finish(self) -> u32 {
        !self.0
    }
}

/// The CRC-32C of `bytes`.
pub(super) fn crc32c(bytes: &[u8]) -> u32 {
    Crc32c::new().update(bytes).finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_value_of_the_standard_test_string() {
        // The "check" value of CRC-32C (iSCSI), as catalogued for every CRC.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn rfc3720_test_vectors() {
        // RFC 3720 (iSCSI) appendix B.4 gives these CRCs in wire order (little-endian).
        assert_eq!(crc32c(&[0u8; 32]).to_le_bytes(), [0xaa, 0x36, 0x91, 0x8a]);
        assert_eq!(
            crc32c(&[0xffu8; 32]).to_le_bytes(),
            [0x43, 0xab, 0xa8, 0x62]
        );
        let ascending: Vec<u8> = (0u8..32).collect();
        assert_eq!(crc32c(&ascending).to_le_bytes(), [0x4e, 0x79, 0xdd, 0x46]);
    }

    #[test]
    fn pieces_give_the_same_crc_as_the_whole() {
        let whole = b"The quick brown fox jumps over the lazy dog";
        let (a, b) = whole.split_at(17);
        assert_eq!(Crc32c::new().update(a).update(b).finish(), crc32c(whole));
        assert_eq!(crc32c(b""), 0);
    }
}
