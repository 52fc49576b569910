//! Fuzz target: the bytes of a state journal file and of a state snapshot; the body and its properties are `exim_access_fuzz::state_files`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| exim_access_fuzz::state_files(data));
