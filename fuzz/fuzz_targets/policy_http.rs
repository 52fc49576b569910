//! Fuzz target: bytes on a connection of the Dovecot policy endpoint, read by its HTTP/1.1 parser; the body and its properties are `exim_access_fuzz::policy_http`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| exim_access_fuzz::policy_http(data));
