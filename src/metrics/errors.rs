//! ErrorResponses relayed to clients, counted by SQLSTATE class without a lock: one relaxed
//! atomic per possible class (two characters from 0-9A-Z), exported at scrape time.

use std::sync::atomic::{AtomicU64, Ordering};

/// Characters a SQLSTATE class is made of.
const ALPHABET: usize = 36;

/// Counts per SQLSTATE class.
pub struct ErrorClasses {
    counts: Box<[AtomicU64]>,
}

impl Default for ErrorClasses {
    fn default() -> Self {
        ErrorClasses {
            counts: (0..ALPHABET * ALPHABET).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

fn digit(c: u8) -> Option<usize> {
    match c {
        b'0'..=b'9' => Some((c - b'0') as usize),
        b'A'..=b'Z' => Some((c - b'A') as usize + 10),
        _ => None,
    }
}

fn char_of(d: usize) -> char {
    if d < 10 {
        (b'0' + d as u8) as char
    } else {
        (b'A' + (d - 10) as u8) as char
    }
}

impl ErrorClasses {
    /// Counts one error of this class (the first two characters of its SQLSTATE); anything that
    /// is not a valid class is ignored.
    pub fn record(&self, class: [u8; 2]) {
        if let (Some(a), Some(b)) = (digit(class[0]), digit(class[1])) {
            self.counts[a * ALPHABET + b].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Every class seen so far and its count.
    pub fn nonzero(&self) -> Vec<(String, u64)> {
        self.counts
            .iter()
            .enumerate()
            .filter_map(|(i, n)| {
                let n = n.load(Ordering::Relaxed);
                (n > 0).then(|| {
                    let class: String = [char_of(i / ALPHABET), char_of(i % ALPHABET)].iter().collect();
                    (class, n)
                })
            })
            .collect()
    }
}

/// The SQLSTATE class of an ErrorResponse body (fields: type byte, NUL-terminated value).
pub fn class_of(body: &[u8]) -> Option<[u8; 2]> {
    let mut rest = body;
    while let Some((&kind, tail)) = rest.split_first() {
        if kind == 0 {
            return None;
        }
        let end = tail.iter().position(|&b| b == 0)?;
        if kind == b'C' && end >= 2 {
            return Some([tail[0], tail[1]]);
        }
        rest = &tail[end + 1..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_counted_and_junk_ignored() {
        let errors = ErrorClasses::default();
        errors.record(*b"42");
        errors.record(*b"42");
        errors.record(*b"P0");
        errors.record(*b"a\0");
        assert_eq!(
            errors.nonzero(),
            vec![("42".to_string(), 2), ("P0".to_string(), 1)]
        );
    }

    #[test]
    fn class_is_read_from_the_code_field() {
        assert_eq!(class_of(b"SERROR\0C42P01\0Mno\0\0"), Some(*b"42"));
        assert_eq!(class_of(b"SERROR\0Mno\0\0"), None);
        assert_eq!(class_of(b"C4"), None);
        assert_eq!(class_of(b""), None);
    }
}
