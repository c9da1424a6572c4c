//! Fuzz target `frame_decoder`: Tagged-frame decoding fed a few bytes per read, with a small length limit.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidepool::fuzzing::frame_decoder(data));
