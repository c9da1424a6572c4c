//! Fuzz target `client_batches`: client frames as transaction mode reads them (LISTEN requests, the batch copy kept for a schema-change retry).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidepool::fuzzing::client_batches(data));
