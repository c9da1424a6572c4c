//! Trigger-word search in SQL text: runs on every Query and Parse in transaction mode, so it is
//! one pass that looks closer only at letters some word starts with.

/// True if any of `words` (ASCII letters) occurs anywhere in `sql`, in any case, also inside
/// longer words: callers use it as a cheap filter, where a false positive costs a closer look.
pub fn contains_any(sql: &[u8], words: &[&[u8]]) -> bool {
    let mut first_letters = 0u32;
    for word in words {
        debug_assert!(!word.is_empty() && word.iter().all(u8::is_ascii_alphabetic));
        first_letters |= 1 << (word[0].to_ascii_lowercase() - b'a');
    }
    for (i, &byte) in sql.iter().enumerate() {
        // ASCII letters only: `| 0x20` lower-cases them and maps nothing else into a..=z.
        let lower = byte | 0x20;
        if !lower.is_ascii_lowercase() || first_letters & (1 << (lower - b'a')) == 0 {
            continue;
        }
        let rest = &sql[i..];
        if words
            .iter()
            .any(|w| rest.len() >= w.len() && rest[..w.len()].eq_ignore_ascii_case(w))
        {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::contains_any;

    #[test]
    fn finds_words_in_any_case_and_inside_identifiers() {
        let words: &[&[u8]] = &[b"SET", b"DISCARD"];
        assert!(contains_any(b"set search_path = x", words));
        assert!(contains_any(b"SELECT set_config('a', 'b', false)", words));
        assert!(contains_any(b"select 1; DiScArD all", words));
        assert!(contains_any(b"SELECT 1 OFFSET 2", words), "inside a word counts");
        assert!(!contains_any(
            b"SELECT abalance FROM pgbench_accounts WHERE aid = 1",
            words
        ));
        assert!(!contains_any(b"", words));
        assert!(!contains_any(b"SE", words), "a prefix at the end is not a match");
        assert!(!contains_any("SÉT \u{0}\u{ff}".as_bytes(), words));
    }
}
