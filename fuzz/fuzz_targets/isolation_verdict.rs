//! Fuzz target `isolation_verdict`: transaction-mode isolation's SQL lexer and per-request verdict.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidepool::fuzzing::isolation_verdict(data));
