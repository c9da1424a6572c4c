//! Fuzz target `client_messages`: Password, SASLInitialResponse, ErrorResponse and ParameterStatus body readers.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidepool::fuzzing::client_messages(data));
