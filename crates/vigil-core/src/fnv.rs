//! FNV-1a, 64 bits: the same value for the same bytes in every build of vigil (ids written to
//! disk, kept files found again after an upgrade, a spread that does not move), and cheap. Not
//! collision-resistant: never for anything an attacker could gain by colliding.

/// The hash of `bytes`.
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// The hash of several strings, each followed by `separator` (so `("ab", "c")` and
/// `("a", "bc")` differ).
pub fn fnv1a_parts<'a>(parts: impl IntoIterator<Item = &'a str>, separator: u8) -> u64 {
    fnv1a(parts.into_iter().flat_map(|p| p.bytes().chain([separator])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_is_fnv_1a() {
        // The published test vectors: what is on disk keeps its name across versions.
        assert_eq!(fnv1a(*b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(*b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_parts(["a"], 0), fnv1a(*b"a\0"));
        assert_ne!(fnv1a_parts(["ab", "c"], 0), fnv1a_parts(["a", "bc"], 0));
    }
}
