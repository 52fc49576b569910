//! Fuzz target: one line of an audit trail file; the body and its properties are `exim_access_fuzz::audit_line`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| exim_access_fuzz::audit_line(data));
