#![no_main]
//! libFuzzer driver for `shop_fuzz::grpc_timeout::parse`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| shop_fuzz::grpc_timeout::parse(data));
