//! Fuzz target `hba_file`: HbaRules::parse_file (auth_hba_file) on arbitrary UTF-8, then decisions.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidepool::fuzzing::hba_file(data));
