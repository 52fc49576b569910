//! Fuzz target: one Exim socket request line; the body and its properties are `exim_access_fuzz::protocol_line`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| exim_access_fuzz::protocol_line(data));
