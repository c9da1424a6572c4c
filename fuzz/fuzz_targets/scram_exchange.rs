//! Fuzz target `scram_exchange`: A whole server-side SCRAM-SHA-256 exchange (client-first NUL client-final).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidepool::fuzzing::scram_exchange(data));
