#![no_main]
//! libFuzzer driver for `shop_fuzz::validation::raw`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| shop_fuzz::validation::raw(data));
