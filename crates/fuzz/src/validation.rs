//! Request validation, the layer every call passes before a handler: any request of any method
//! is accepted or answered `INVALID_ARGUMENT`, with a status any gRPC client can read.

use std::sync::LazyLock;

use arbitrary::Unstructured;
use prost::Message as _;
use prost_reflect::{DescriptorPool, MessageDescriptor};
use shop_runtime::validation::RequestValidator;
use tonic::{Code, Status};

/// What a gRPC client accepts in response headers by default (grpc-go, grpcio: 8 KiB).
pub const MAX_STATUS_HEADER_BYTES: usize = 8 * 1024;

/// The largest request the servers accept by default (`MAX_MESSAGE_BYTES`).
const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

struct Contracts {
    validator: RequestValidator,
    /// Every method the validator checks, by path, sorted so an input picks the same one on
    /// every run.
    methods: Vec<(String, MessageDescriptor)>,
}

static CONTRACTS: LazyLock<Option<Contracts>> = LazyLock::new(|| {
    let validator =
        RequestValidator::from_descriptor_set(shop_proto::FILE_DESCRIPTOR_SET, MAX_MESSAGE_BYTES)
            .ok()?;
    let pool = DescriptorPool::decode(shop_proto::FILE_DESCRIPTOR_SET).ok()?;
    let mut methods: Vec<_> = pool
        .services()
        .flat_map(|service| service.methods().collect::<Vec<_>>())
        .filter(|method| !method.is_client_streaming())
        .map(|method| {
            let path = format!("/{}/{}", method.parent_service().full_name(), method.name());
            (path, method.input())
        })
        .collect();
    methods.sort_by(|a, b| a.0.cmp(&b.0));
    Some(Contracts { validator, methods })
});

fn contracts() -> &'static Contracts {
    match CONTRACTS.as_ref() {
        Some(contracts) => contracts,
        None => panic!("the contracts' descriptor set must load and validate"),
    }
}

/// How many methods the targets choose from (for tests that want to cover them all).
pub fn method_count() -> usize {
    contracts().methods.len()
}

/// Arbitrary bytes as the request of the method the first two bytes pick.
pub fn raw(data: &[u8]) {
    let contracts = contracts();
    let (pick, body) = data.split_at(data.len().min(2));
    let index = pick
        .iter()
        .fold(0usize, |acc, b| acc * 256 + usize::from(*b));
    let (path, _) = &contracts.methods[index % contracts.methods.len()];
    check(path, body);
}

/// A well-formed request of the method `data` picks, with fields chosen near the edges.
pub fn structured(data: &[u8]) {
    let contracts = contracts();
    let mut input = Unstructured::new(data);
    let index = input.choose_index(contracts.methods.len()).unwrap_or(0);
    structured_for(index, &mut input);
}

/// A well-formed request of method number `index` (in path order) built from `data`.
pub fn structured_method(index: usize, data: &[u8]) {
    structured_for(index, &mut Unstructured::new(data));
}

fn structured_for(index: usize, input: &mut Unstructured<'_>) {
    let contracts = contracts();
    let (path, descriptor) = &contracts.methods[index % contracts.methods.len()];
    let request = crate::message::message(input, descriptor);
    check(path, &request.encode_to_vec());
}

fn check(path: &str, body: &[u8]) {
    let Err(status) = contracts().validator.check(path, body) else {
        return;
    };
    assert_eq!(
        status.code(),
        Code::InvalidArgument,
        "{path}: a refused request must be INVALID_ARGUMENT: {status:?}"
    );
    let size = header_bytes(&status);
    assert!(
        size < MAX_STATUS_HEADER_BYTES,
        "{path}: the status takes {size} bytes of headers, over {MAX_STATUS_HEADER_BYTES}"
    );
}

/// Bytes the status takes on the wire as trailers: names and values of `grpc-status`,
/// `grpc-message` (percent-encoded) and `grpc-status-details-bin` (base64).
pub fn header_bytes(status: &Status) -> usize {
    let mut headers = http::HeaderMap::new();
    if status.add_header(&mut headers).is_err() {
        panic!("a validation status must encode as headers: {status:?}");
    }
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum()
}
