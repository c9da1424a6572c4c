//! Fuzz target `statements`: Transaction-mode statement renaming driven by interleaved client and server frames.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidepool::fuzzing::statements(data));
