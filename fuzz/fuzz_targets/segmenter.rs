//! libFuzzer driver of the `segmenter` target defined in `tests/fuzz_support`.
#![no_main]

#[path = "../../tests/fuzz_support/mod.rs"]
mod fuzz_support;

libfuzzer_sys::fuzz_target!(|data: &[u8]| (fuzz_support::target("segmenter").run)(data));
