//! Fuzz target `http_request`: The metrics endpoint's HTTP request-head parser.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidepool::fuzzing::http_request(data));
