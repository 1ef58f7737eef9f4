#![no_main]
//! libFuzzer driver for `shop_fuzz::envelope::headers`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| shop_fuzz::envelope::headers(data));
