//! Fuzz target: the JSON body of a Dovecot auth policy request; the body and its properties are `exim_access_fuzz::policy_json`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| exim_access_fuzz::policy_json(data));
