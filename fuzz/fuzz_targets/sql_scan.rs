//! Fuzz target `sql_scan`: The relay's lexical scans of SQL text (session settings, pinning).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidepool::fuzzing::sql_scan(data));
