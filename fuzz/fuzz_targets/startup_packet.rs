//! Fuzz target `startup_packet`: StartupMessage / SSLRequest / CancelRequest decoding, then the client's parameters.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidepool::fuzzing::startup_packet(data));
