//! Fuzz target `patroni_response`: an HTTP response from Patroni's REST API (`GET /cluster`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidepool::fuzzing::patroni_response(data));
