//! Fuzz target `config`: Config::from_toml on arbitrary UTF-8: parse, validate, lookups.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidepool::fuzzing::config(data));
