#![no_main]
//! libFuzzer driver for `shop_fuzz::jwt::verify`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| shop_fuzz::jwt::verify(data));
