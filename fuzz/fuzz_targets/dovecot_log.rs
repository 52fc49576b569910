//! Fuzz target: Dovecot log lines; the body and its properties are `exim_access_fuzz::dovecot_log`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| exim_access_fuzz::dovecot_log(data));
