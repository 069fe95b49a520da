#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| rollcall_tests::fuzz::manifest(data));
