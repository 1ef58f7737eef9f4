#![no_main]
//! libFuzzer driver for `shop_fuzz::validation::structured`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| shop_fuzz::validation::structured(data));
