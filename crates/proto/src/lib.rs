//! Rust bindings for the shop mesh contracts in `proto/`.
//!
//! Generated at build time from `proto/shop/**` by protox and tonic-prost-build (no `protoc`
//! needed). Each protobuf package is a module under [`pb`], re-exported by context for short
//! paths (`shop_proto::catalog::CatalogServiceClient`). [`FILE_DESCRIPTOR_SET`] holds every
//! contract with its imports, for server reflection and the request validation layer.

/// The generated code, fenced off with the lint allowances generated code needs.
#[allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    rust_2018_idioms,
    unreachable_pub
)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/_includes.rs"));
}

/// The encoded `google.protobuf.FileDescriptorSet` of every contract and its imports.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/shop_descriptor_set.bin"));

pub use pb::shop::catalog::v1 as catalog;
pub use pb::shop::common::v1 as common;
pub use pb::shop::identity::v1 as identity;
pub use pb::shop::inventory::v1 as inventory;
pub use pb::shop::notifications::v1 as notifications;
pub use pb::shop::orders::v1 as orders;
pub use pb::shop::payments::v1 as payments;
pub use pb::shop::processor::v1 as processor;
pub use pb::shop::shipping::v1 as shipping;
