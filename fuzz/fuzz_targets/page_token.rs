#![no_main]
//! libFuzzer driver for `shop_fuzz::page_token::decode`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| shop_fuzz::page_token::decode(data));
