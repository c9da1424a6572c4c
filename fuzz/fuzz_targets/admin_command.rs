//! Fuzz target `admin_command`: The admin console's statement splitter and command parser.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidepool::fuzzing::admin_command(data));
