//! Fuzz target: libexim_access.so's exports through their C ABI; the body and its properties are `exim_access_fuzz::dlfunc_abi`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| exim_access_fuzz::dlfunc_abi(data));
