//! Fuzz target `userlist`: parse_userlist (auth_file) on arbitrary UTF-8, re-encoded and re-parsed.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidepool::fuzzing::userlist(data));
