//! Deterministic names for new EndpointSlices.
//!
//! Upstream creates slices with `generateName: <service>-`, so the apiserver picks a random
//! suffix. If the controller acts on an informer cache that has not yet seen its own create, it
//! plans the create again and the apiserver happily makes a **duplicate** slice; upstream guards
//! against that with a generation tracker and a "stale cache" check (issues #92928, #93374).
//!
//! We name new slices ourselves instead: `<service name, truncated>-<suffix>`, where the suffix
//! is a short lowercase base-36 hash of (Service UID, address type, ordinal) and the planner uses
//! the first ordinal whose name no slice in the snapshot uses. A stale cache then re-plans the
//! *same* name and the apiserver answers `409 AlreadyExists` instead of creating a duplicate; the
//! shell treats that as "cache is stale, retry later". Slices that already exist keep their names
//! (including slices written by kube-controller-manager).
//!
//! The UID makes names of a recreated Service (same name, new UID) differ from the old
//! Service's, whose slices the garbage collector may still be deleting.

use std::collections::BTreeSet;

/// Maximum length of a generated slice name. Slice names may be DNS subdomains (253), but we
/// keep them to a DNS label so they read well and fit everywhere a label fits.
pub const MAX_SLICE_NAME_LEN: usize = 63;

/// Length of the base-36 suffix.
pub const SUFFIX_LEN: usize = 8;

/// FNV-1a, 64 bit.
fn fnv1a64(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            // Separator, so ("ab","c") and ("a","bc") hash differently.
            h ^= 0xff;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The suffix for (Service UID, address type, ordinal): [`SUFFIX_LEN`] lowercase base-36 digits.
pub fn slice_name_suffix(service_uid: &str, address_type: &str, ordinal: u64) -> String {
    let mut v = fnv1a64(&[service_uid.as_bytes(), address_type.as_bytes(), ordinal.to_string().as_bytes()]);
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = [b'0'; SUFFIX_LEN];
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(v % 36) as usize];
        v /= 36;
    }
    out.iter().map(|b| char::from(*b)).collect()
}

/// `<service name truncated>-<suffix>`, at most [`MAX_SLICE_NAME_LEN`] bytes. Truncation is by
/// whole characters, so it never splits a multi-byte character.
pub fn slice_name(service_name: &str, service_uid: &str, address_type: &str, ordinal: u64) -> String {
    let budget = MAX_SLICE_NAME_LEN - 1 - SUFFIX_LEN;
    let mut prefix = String::new();
    for c in service_name.chars() {
        if prefix.len() + c.len_utf8() > budget {
            break;
        }
        prefix.push(c);
    }
    format!("{prefix}-{}", slice_name_suffix(service_uid, address_type, ordinal))
}

/// The names `slice_name(service, uid, address_type, n)` for n = 0, 1, … in order.
pub fn slice_names<'a>(
    service_name: &'a str,
    service_uid: &'a str,
    address_type: &'a str,
) -> impl Iterator<Item = String> + 'a {
    (0u64..).map(move |n| slice_name(service_name, service_uid, address_type, n))
}

/// The first of [`slice_names`] that is not in `used`. Terminates because `used` is finite.
pub fn first_free_slice_name(
    service_name: &str,
    service_uid: &str,
    address_type: &str,
    used: &BTreeSet<String>,
) -> String {
    slice_names(service_name, service_uid, address_type).find(|n| !used.contains(n)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_deterministic_short_and_distinct() {
        let a = slice_name("foo", "uid-1", "IPv4", 0);
        assert_eq!(a, slice_name("foo", "uid-1", "IPv4", 0));
        assert!(a.starts_with("foo-"));
        assert_eq!(a.len(), 4 + SUFFIX_LEN);
        assert!(a[4..].bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()));
        assert_ne!(a, slice_name("foo", "uid-1", "IPv4", 1));
        assert_ne!(a, slice_name("foo", "uid-1", "IPv6", 0));
        assert_ne!(a, slice_name("foo", "uid-2", "IPv4", 0));
    }

    #[test]
    fn long_service_names_are_truncated_to_63() {
        let long = "a".repeat(63);
        let name = slice_name(&long, "uid", "IPv4", 0);
        assert_eq!(name.len(), MAX_SLICE_NAME_LEN);
        assert!(name.starts_with(&"a".repeat(MAX_SLICE_NAME_LEN - 1 - SUFFIX_LEN)));
        // Multi-byte characters are never split (the apiserver would reject such a name, but we
        // must not panic on it).
        let weird = "é".repeat(40);
        let name = slice_name(&weird, "uid", "IPv4", 0);
        assert!(name.len() <= MAX_SLICE_NAME_LEN);
    }

    #[test]
    fn first_free_name_skips_used_names() {
        let mut used = BTreeSet::new();
        let n0 = first_free_slice_name("svc", "u", "IPv4", &used);
        assert_eq!(n0, slice_name("svc", "u", "IPv4", 0));
        used.insert(n0.clone());
        let n1 = first_free_slice_name("svc", "u", "IPv4", &used);
        assert_eq!(n1, slice_name("svc", "u", "IPv4", 1));
        used.insert(n1);
        used.remove(&n0);
        assert_eq!(first_free_slice_name("svc", "u", "IPv4", &used), n0);
    }
}
