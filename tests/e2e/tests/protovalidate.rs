//! Our request validation against the reference: protovalidate from PyPI.
//!
//! For every request message of every contract in `proto/shop/**` this test builds a valid
//! baseline and then requests near each rule's edges (lengths and counts one either side of
//! their bounds, numbers around `gt`/`gte`/`lt`/`lte`, undefined enum numbers, malformed
//! uuids and e-mails, unset required fields and oneofs, duplicates, 1,000-item lists...). One
//! Python process running protovalidate gives its verdict on all of them; ours must agree:
//! the same requests rejected, naming the same field paths. Every rejected request is then
//! sent to the real catalog and identity services (and checked by the validation layer
//! in-process for the contracts of services not started here): INVALID_ARGUMENT naming a
//! field, a status under 8 KiB, never INTERNAL, UNKNOWN or a hang; and sent once more from
//! a standard grpcio client, which must see INVALID_ARGUMENT too (it turns response metadata
//! over 8 KiB into RESOURCE_EXHAUSTED).
//!
//! Deliberate deviations of ours, allowed here and nowhere else:
//! - a NUL character in any string is rejected (`string.no_nul`), which protovalidate has no
//!   rule for (PostgreSQL `text` cannot hold one; see `shop_validate`);
//! - a list over `max_items` is reported only for its count, where protovalidate also checks
//!   each item; and at most `MAX_VIOLATIONS` violations are kept.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::{
    collections::{BTreeSet, HashMap},
    io::Write as _,
    time::Duration,
};

use base64::Engine as _;
use bytes::{Buf as _, BufMut as _, Bytes};
use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DynamicMessage, ExtensionDescriptor, FieldDescriptor, Kind, MessageDescriptor,
    ReflectMessage as _, Value,
};
use shop_e2e::{python, start_catalog, start_identity, workspace_root};
use shop_runtime::validation::RequestValidator;
use shop_testkit::{Nats, Postgres};
use shop_validate::{MAX_VIOLATIONS, Validator};
use tonic::{
    Code, Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
};
use tonic_types::StatusExt as _;

/// How deep nested messages get their own mutations.
const DEPTH: usize = 3;
/// The size of the big lists every repeated field is tried with.
const BIG: usize = 1_000;

/// One generated request.
struct Case {
    /// `/package.Service/Method`.
    path: String,
    /// What was changed from the baseline, for failure messages.
    label: String,
    message: DynamicMessage,
}

/// The typed rules (`string`, `int32`, ...) and `repeated` rules of one field.
struct FieldRules {
    typed: Option<DynamicMessage>,
    repeated: Option<DynamicMessage>,
}

fn sub(message: &DynamicMessage, name: &str) -> Option<DynamicMessage> {
    let field = message.descriptor().get_field_by_name(name)?;
    if !message.has_field(&field) {
        return None;
    }
    match message.get_field(&field).into_owned() {
        Value::Message(m) => Some(m),
        _ => None,
    }
}

fn set_values(message: &DynamicMessage) -> Vec<(String, Value)> {
    message
        .fields()
        .map(|(f, v)| (f.name().to_owned(), v.clone()))
        .collect()
}

fn rules_of(field: &FieldDescriptor, ext: &ExtensionDescriptor) -> FieldRules {
    let options = field.options();
    if !options.has_extension(ext) {
        return FieldRules {
            typed: None,
            repeated: None,
        };
    }
    let Value::Message(rules) = options.get_extension(ext).into_owned() else {
        return FieldRules {
            typed: None,
            repeated: None,
        };
    };
    let repeated = sub(&rules, "repeated");
    let typed_of = |rules: &DynamicMessage| {
        rules
            .fields()
            .find(|(f, _)| f.containing_oneof().is_some_and(|o| o.name() == "type"))
            .and_then(|(_, v)| v.as_message().cloned())
    };
    let typed = match &repeated {
        Some(repeated) => sub(repeated, "items").and_then(|items| typed_of(&items)),
        None => typed_of(&rules),
    };
    FieldRules { typed, repeated }
}

fn numbers_in(rules: &Option<DynamicMessage>) -> Vec<i128> {
    let mut out = Vec::new();
    let Some(rules) = rules else { return out };
    for (_, value) in set_values(rules) {
        let mut push = |v: &Value| match v {
            Value::I32(n) => out.push(i128::from(*n)),
            Value::I64(n) => out.push(i128::from(*n)),
            Value::U32(n) => out.push(i128::from(*n)),
            Value::U64(n) => out.push(i128::from(*n)),
            _ => {}
        };
        match &value {
            Value::List(items) => items.iter().for_each(&mut push),
            other => push(other),
        }
    }
    out
}

fn strings_in(rules: &Option<DynamicMessage>) -> Vec<String> {
    let mut out = Vec::new();
    let Some(rules) = rules else { return out };
    for (name, value) in set_values(rules) {
        if name == "pattern" {
            continue;
        }
        match &value {
            Value::String(s) => out.push(s.clone()),
            Value::List(items) => {
                out.extend(items.iter().filter_map(|v| v.as_str().map(String::from)));
            }
            _ => {}
        }
    }
    out
}

const UUID: &str = "0190f3a4-6b7c-7d8e-9f00-112233445566";

/// Strings near the edges of `rules`, and a generic set of awkward ones.
fn string_candidates(rules: &Option<DynamicMessage>) -> Vec<String> {
    let mut out: Vec<String> = [
        "",
        "a",
        "ab",
        "abc",
        "A",
        "AAA",
        "USD",
        "EUR",
        "usd",
        "a-b",
        "a_b",
        "-a",
        "a-",
        "a--b",
        "a.b",
        "a b",
        " a",
        "é",
        "日本",
        "🙂",
        "a\u{0}b",
        "\u{0}",
        UUID,
        "0190F3A4-6B7C-7D8E-9F00-112233445566",
        "0190f3a46b7c7d8e9f00112233445566",
        "{0190f3a4-6b7c-7d8e-9f00-112233445566}",
        "0190f3a4-6b7c-7d8e-9f00-11223344556g",
        "0190f3a4-6b7c-7d8e-9f00-11223344556",
        "00000000-0000-0000-0000-000000000000",
        "a@b.co",
        "ada@example.com",
        "a@b",
        "@b.com",
        "a@",
        "a@-b.com",
        "a@b-.com",
        ".a@b.com",
        "a..b@c.com",
        "a@b..com",
        "a@b_c.com",
        "ü@b.com",
        "a@ü.com",
        "a b@c.com",
        "a+tag@sub.example.org",
        "correct horse battery",
        "aGVsbG8",
        "AAAA",
        "_w",
        "%%%",
    ]
    .map(String::from)
    .to_vec();
    let numbers = numbers_in(rules);
    for n in numbers.iter().filter_map(|&n| usize::try_from(n).ok()) {
        for len in [n.saturating_sub(1), n, n + 1] {
            out.push("a".repeat(len));
            out.push("A".repeat(len));
            out.push("é".repeat(len));
            // An e-mail of exactly this length, where one fits.
            if len > 8 {
                let local = "a".repeat((len - 6).min(64));
                let rest = len - 6 - local.len();
                let domain = if rest == 0 {
                    "b".to_owned()
                } else {
                    format!("{}.b", "c".repeat(rest.saturating_sub(2).max(1)))
                };
                out.push(format!("{local}@{domain}.com"));
            }
        }
    }
    for s in strings_in(rules) {
        out.push(format!("{s}x"));
        out.push(format!("x{s}"));
        out.push(s.to_lowercase());
        out.push(s);
    }
    // Past RFC 5321's lengths (64 for the local part, 253 for the domain), within HTML5's.
    out.push(format!("{}@b.com", "a".repeat(65)));
    out.push(format!("a@{}com", "b.".repeat(130)));
    out.push(format!("a@{}.com", "b".repeat(63)));
    out.push(format!("a@{}.com", "b".repeat(64)));
    out.sort();
    out.dedup();
    out
}

fn int_candidates(kind: &Kind, rules: &Option<DynamicMessage>) -> Vec<Value> {
    let (lo, hi): (i128, i128) = match kind {
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => (i32::MIN.into(), i32::MAX.into()),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => (i64::MIN.into(), i64::MAX.into()),
        Kind::Uint32 | Kind::Fixed32 => (0, u32::MAX.into()),
        _ => (0, u64::MAX.into()),
    };
    let mut numbers: BTreeSet<i128> = [lo, hi, -1, 0, 1, 2].into_iter().collect();
    for n in numbers_in(rules) {
        numbers.extend([n - 1, n, n + 1]);
    }
    numbers
        .into_iter()
        .filter(|n| (lo..=hi).contains(n))
        .filter_map(|n| match kind {
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => i32::try_from(n).ok().map(Value::I32),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => i64::try_from(n).ok().map(Value::I64),
            Kind::Uint32 | Kind::Fixed32 => u32::try_from(n).ok().map(Value::U32),
            _ => u64::try_from(n).ok().map(Value::U64),
        })
        .collect()
}

/// Values near the edges of `rules` for one (non-repeated) value of `kind`.
fn scalar_candidates(kind: &Kind, rules: &Option<DynamicMessage>) -> Vec<Value> {
    match kind {
        Kind::String => string_candidates(rules)
            .into_iter()
            .map(Value::String)
            .collect(),
        Kind::Bytes => [&b""[..], b"\0", b"a", &[0xff; 300]]
            .iter()
            .map(|b| Value::Bytes(Bytes::copy_from_slice(b)))
            .collect(),
        Kind::Bool => vec![Value::Bool(false), Value::Bool(true)],
        Kind::Float => [0.0, -0.0, 1.0, -1.0, f32::NAN, f32::INFINITY]
            .map(Value::F32)
            .to_vec(),
        Kind::Double => [0.0, -0.0, 1.0, -1.0, f64::NAN, f64::INFINITY]
            .map(Value::F64)
            .to_vec(),
        Kind::Enum(e) => {
            let mut numbers: BTreeSet<i32> = e.values().map(|v| v.number()).collect();
            let max = numbers.last().copied().unwrap_or(0);
            numbers.extend([-1, 0, max.saturating_add(1)]);
            numbers.into_iter().map(Value::EnumNumber).collect()
        }
        Kind::Message(_) => Vec::new(),
        int => int_candidates(int, rules),
    }
}

/// Builds baselines and mutations, deciding "valid" with our validator (the cross-check then
/// holds the baselines to the reference too).
struct Generator<'a> {
    validator: &'a Validator,
    ext: ExtensionDescriptor,
    baselines: HashMap<String, DynamicMessage>,
}

/// Whether `message` has no violation at `name` or below it.
fn clean_at(validator: &Validator, message: &DynamicMessage, name: &str) -> bool {
    match validator.validate(message) {
        Ok(()) => true,
        Err(v) => !v.violations.iter().any(|v| {
            v.field == name
                || v.field.starts_with(&format!("{name}."))
                || v.field.starts_with(&format!("{name}["))
        }),
    }
}

impl Generator<'_> {
    /// A valid `descriptor`: each field the first candidate that breaks no rule.
    fn baseline(&mut self, descriptor: &MessageDescriptor) -> DynamicMessage {
        if let Some(done) = self.baselines.get(descriptor.full_name()) {
            return done.clone();
        }
        // Recursive types stop at an empty message.
        self.baselines.insert(
            descriptor.full_name().to_owned(),
            DynamicMessage::new(descriptor.clone()),
        );
        let mut message = DynamicMessage::new(descriptor.clone());
        for field in descriptor.fields() {
            if let Some(oneof) = field.containing_oneof()
                && oneof.fields().any(|f| message.has_field(&f))
            {
                continue;
            }
            let rules = rules_of(&field, &self.ext);
            let candidates: Vec<Value> = if field.is_list() {
                let item = self.item_candidates(&field, &rules).into_iter().next();
                vec![Value::List(item.into_iter().collect())]
            } else if let Kind::Message(m) = field.kind() {
                vec![Value::Message(self.baseline(&m))]
            } else {
                scalar_candidates(&field.kind(), &rules.typed)
            };
            for value in candidates {
                let mut tried = message.clone();
                tried.set_field(&field, value);
                if clean_at(self.validator, &tried, field.name()) {
                    message = tried;
                    break;
                }
            }
        }
        self.baselines
            .insert(descriptor.full_name().to_owned(), message.clone());
        message
    }

    /// Single items for a repeated field, valid ones first.
    fn item_candidates(&mut self, field: &FieldDescriptor, rules: &FieldRules) -> Vec<Value> {
        let mut items = match field.kind() {
            Kind::Message(m) => vec![Value::Message(self.baseline(&m))],
            kind => scalar_candidates(&kind, &rules.typed),
        };
        // Valid items first, so that a list of "valid" items is one.
        let mut probe = DynamicMessage::new(field.parent_message().clone());
        items.sort_by_key(|item| {
            probe.set_field(field, Value::List(vec![item.clone()]));
            !clean_at(self.validator, &probe, &format!("{}[0]", field.name()))
        });
        items
    }

    /// `n` distinct valid items where the kind allows, else copies of a valid one.
    fn distinct_items(
        &mut self,
        field: &FieldDescriptor,
        rules: &FieldRules,
        n: usize,
    ) -> Vec<Value> {
        if field.kind() == Kind::String {
            return (0..n)
                .map(|i| Value::String(format!("{UUID:.24}{i:012x}")))
                .collect();
        }
        let first = self.item_candidates(field, rules).into_iter().next();
        first.map(|v| vec![v; n]).unwrap_or_default()
    }

    /// Every mutation of `base` (a `descriptor`), as (label, message).
    fn mutations(
        &mut self,
        descriptor: &MessageDescriptor,
        base: &DynamicMessage,
        depth: usize,
    ) -> Vec<(String, DynamicMessage)> {
        let mut out = Vec::new();
        let with = |field: &FieldDescriptor, value: Option<Value>| {
            let mut m = base.clone();
            match value {
                Some(v) => m.set_field(field, v),
                None => m.clear_field(field),
            }
            m
        };
        for field in descriptor.fields() {
            let name = field.name().to_owned();
            let rules = rules_of(&field, &self.ext);
            if field.is_list() {
                let counts = numbers_in(&rules.repeated);
                let mut sizes: BTreeSet<usize> = [0, 1, 2, BIG].into_iter().collect();
                for n in counts.iter().filter_map(|&n| usize::try_from(n).ok()) {
                    sizes.extend([n.saturating_sub(1), n, n + 1]);
                }
                for size in sizes {
                    let items = self.distinct_items(&field, &rules, size);
                    out.push((
                        format!("{name}: {size} distinct"),
                        with(&field, Some(Value::List(items))),
                    ));
                }
                let items = self.item_candidates(&field, &rules);
                if let Some(first) = items.first() {
                    out.push((
                        format!("{name}: a duplicate"),
                        with(
                            &field,
                            Some(Value::List(vec![first.clone(), first.clone()])),
                        ),
                    ));
                }
                // Big and messy: duplicates and every candidate, repeated.
                if !items.is_empty() {
                    let messy = (0..BIG).map(|i| items[i % items.len()].clone()).collect();
                    out.push((
                        format!("{name}: {BIG} messy"),
                        with(&field, Some(Value::List(messy))),
                    ));
                }
                for item in &items {
                    out.push((
                        format!("{name}: [{item:?}]"),
                        with(&field, Some(Value::List(vec![item.clone()]))),
                    ));
                }
                if let Kind::Message(m) = field.kind()
                    && depth > 0
                {
                    let inner = self.baseline(&m);
                    for (label, nested) in self.mutations(&m, &inner, depth - 1) {
                        out.push((
                            format!("{name}[0].{label}"),
                            with(&field, Some(Value::List(vec![Value::Message(nested)]))),
                        ));
                    }
                }
            } else if let Kind::Message(m) = field.kind() {
                out.push((format!("{name}: unset"), with(&field, None)));
                if depth > 0 {
                    let inner = self.baseline(&m);
                    for (label, nested) in self.mutations(&m, &inner, depth - 1) {
                        out.push((
                            format!("{name}.{label}"),
                            with(&field, Some(Value::Message(nested))),
                        ));
                    }
                }
            } else {
                for value in scalar_candidates(&field.kind(), &rules.typed) {
                    out.push((format!("{name} = {value:?}"), with(&field, Some(value))));
                }
                if field.containing_oneof().is_some() {
                    out.push((format!("{name}: unset"), with(&field, None)));
                }
            }
        }
        // Every oneof empty.
        for oneof in descriptor.oneofs() {
            let mut m = base.clone();
            for f in oneof.fields() {
                m.clear_field(&f);
            }
            out.push((format!("{}: none set", oneof.name()), m));
        }
        out
    }
}

/// The reference's violations, one list of (field path, rule id) per case.
fn reference_verdicts(pool: &DescriptorPool, cases: &[Case]) -> Vec<Vec<(String, String)>> {
    let root = workspace_root();
    let generated = std::env::temp_dir().join(format!("shop-e2e-pv-{}", std::process::id()));
    std::fs::create_dir_all(&generated).unwrap();
    let python = python().unwrap();
    let mut files: Vec<String> = pool
        .files()
        .map(|f| f.name().to_owned())
        .filter(|name| !name.starts_with("google/protobuf/"))
        .collect();
    files.sort();
    let protoc = std::process::Command::new(&python)
        .current_dir(&root)
        .args(["-m", "grpc_tools.protoc", "-Iproto", "-Iproto/vendor"])
        .arg(format!("--python_out={}", generated.display()))
        .args(&files)
        .output()
        .expect("python runs");
    assert!(
        protoc.status.success(),
        "grpc_tools.protoc failed: {}",
        String::from_utf8_lossy(&protoc.stderr)
    );
    let mut input = Vec::new();
    for case in cases {
        let name = case.message.descriptor().full_name().to_owned();
        let bytes = base64::engine::general_purpose::STANDARD.encode(case.message.encode_to_vec());
        writeln!(input, "{name} {bytes}").unwrap();
    }
    let lines = run_python(
        &[],
        &[("PYTHONPATH", &generated), ("SHOP_GENERATED", &generated)],
        input,
    );
    let _ = std::fs::remove_dir_all(&generated);
    let verdicts: Vec<Vec<(String, String)>> = lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(verdicts.len(), cases.len(), "one verdict per case");
    verdicts
}

/// Runs `tests/e2e/python/protovalidate_oracle.py` with `args`, feeding it `input`; its lines.
fn run_python(args: &[&str], env: &[(&str, &std::path::Path)], input: Vec<u8>) -> Vec<String> {
    let python = python().unwrap();
    let mut command = std::process::Command::new(&python);
    command
        .arg(workspace_root().join("tests/e2e/python/protovalidate_oracle.py"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("python runs");
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().unwrap();
    let written = writer.join().unwrap();
    assert!(
        output.status.success(),
        "the protovalidate oracle failed (is `protovalidate` from tests/requirements.txt \
         installed in {}?):\n{}",
        python.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    written.unwrap();
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Whether `path` is `list` or one of its items (or below one).
fn under(path: &str, list: &str) -> bool {
    path == list || path.starts_with(&format!("{list}[")) || path.starts_with(&format!("{list}."))
}

/// Our verdict agrees with the reference's, deviations aside; `Err` says how not.
fn agree(
    ours: &Result<(), shop_validate::Violations>,
    reference: &[(String, String)],
) -> Result<(), String> {
    let (kept, omitted) = match ours {
        Ok(()) => (Vec::new(), 0),
        Err(v) => (v.violations.clone(), v.omitted),
    };
    // Deviation: NUL is ours alone.
    let ours_paths: BTreeSet<&str> = kept
        .iter()
        .filter(|v| v.rule != "string.no_nul")
        .map(|v| v.field.as_str())
        .collect();
    let theirs: BTreeSet<&str> = reference.iter().map(|(f, _)| f.as_str()).collect();
    let only_nul = !kept.is_empty() && ours_paths.is_empty() && omitted == 0;
    if only_nul {
        return Ok(());
    }
    if ours_paths.is_empty() != theirs.is_empty() {
        return Err(format!("ours {kept:?}, reference {reference:?}"));
    }
    // Everything we name, the reference names.
    if let Some(extra) = ours_paths.iter().find(|p| !theirs.contains(*p)) {
        return Err(format!(
            "we name {extra:?}, the reference does not: {reference:?}"
        ));
    }
    // Everything the reference names, we name too, unless we stopped early (a list over
    // max_items, or the report full).
    if omitted == 0 && kept.len() < MAX_VIOLATIONS {
        let over_max: Vec<&str> = kept
            .iter()
            .filter(|v| v.rule == "repeated.max_items")
            .map(|v| v.field.as_str())
            .collect();
        if let Some(missed) = theirs
            .iter()
            .find(|p| !ours_paths.contains(*p) && !over_max.iter().any(|list| under(p, list)))
        {
            return Err(format!(
                "the reference names {missed:?}, we do not: {kept:?}"
            ));
        }
    }
    Ok(())
}

/// Raw bytes in, raw bytes out: any request of any contract through one tonic client.
#[derive(Clone, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// The bytes `status` takes as response metadata, which grpcio and grpc-go cap at 8 KiB.
fn status_bytes(status: &Status) -> usize {
    status
        .clone()
        .into_http::<tonic::body::Body>()
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum()
}

/// A rejection as it must look: INVALID_ARGUMENT, a field named, a small status.
fn check_rejection(status: &Status) -> Result<Vec<String>, String> {
    if status.code() != Code::InvalidArgument {
        return Err(format!("{:?}: {}", status.code(), status.message()));
    }
    let fields: Vec<String> = status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default();
    if fields.is_empty() {
        return Err(format!("no field named: {}", status.message()));
    }
    if status_bytes(status) >= 8 * 1024 {
        return Err(format!("a status of {} bytes", status_bytes(status)));
    }
    Ok(fields)
}

#[tokio::test(flavor = "multi_thread")]
async fn validation_agrees_with_protovalidate_and_servers_reject_cleanly() {
    let pool = DescriptorPool::decode(shop_proto::FILE_DESCRIPTOR_SET).unwrap();
    let validator = Validator::new(&pool).unwrap();
    let layer =
        RequestValidator::from_descriptor_set(shop_proto::FILE_DESCRIPTOR_SET, 4 << 20).unwrap();
    let ext = pool.get_extension_by_name("buf.validate.field").unwrap();
    let mut generator = Generator {
        validator: &validator,
        ext,
        baselines: HashMap::new(),
    };

    let mut cases = Vec::new();
    for service in pool
        .services()
        .filter(|s| s.full_name().starts_with("shop."))
    {
        for method in service.methods().filter(|m| !m.is_client_streaming()) {
            let path = format!("/{}/{}", service.full_name(), method.name());
            let input = method.input();
            let base = generator.baseline(&input);
            cases.push(Case {
                path: path.clone(),
                label: "baseline".into(),
                message: base.clone(),
            });
            for (label, message) in generator.mutations(&input, &base, DEPTH) {
                cases.push(Case {
                    path: path.clone(),
                    label,
                    message,
                });
            }
        }
    }
    let verdicts = reference_verdicts(&pool, &cases);

    let mut disagreements = Vec::new();
    let (mut rejected, mut nul_only) = (Vec::new(), 0);
    for (case, reference) in cases.iter().zip(&verdicts) {
        let ours = validator.validate(&case.message);
        if case.label == "baseline" && !reference.is_empty() {
            disagreements.push(format!(
                "{} baseline: the reference rejects it: {reference:?}",
                case.path
            ));
        }
        if let Err(why) = agree(&ours, reference) {
            disagreements.push(format!("{} {}: {why}", case.path, case.label));
        }
        if ours.is_err() || !reference.is_empty() {
            if reference.is_empty() {
                nul_only += 1;
            }
            rejected.push(case);
        }
    }
    assert!(
        disagreements.is_empty(),
        "{} of {} cases disagree with protovalidate:\n{}",
        disagreements.len(),
        cases.len(),
        disagreements.join("\n")
    );
    assert!(
        rejected.len() > cases.len() / 4,
        "the edges reject something"
    );
    eprintln!(
        "{} cases, {} rejected ({} only for a NUL)",
        cases.len(),
        rejected.len(),
        nul_only
    );

    // Every rejected request through the validation layer in-process, for every contract.
    let mut failures = Vec::new();
    for case in &rejected {
        match layer.check(&case.path, &case.message.encode_to_vec()) {
            Ok(()) => failures.push(format!(
                "{} {}: the layer let it through",
                case.path, case.label
            )),
            Err(status) => {
                if let Err(why) = check_rejection(&status) {
                    failures.push(format!("{} {}: {why}", case.path, case.label));
                }
            }
        }
    }

    // And to the real services this test can start.
    let postgres = Postgres::start().await.unwrap();
    let nats = Nats::start().await.unwrap();
    let catalog = start_catalog(&postgres, &nats).await.unwrap();
    let identity = start_identity(&postgres, &nats).await.unwrap();
    let servers = [
        ("/shop.catalog.v1.CatalogService/", catalog.addr),
        ("/shop.identity.v1.IdentityService/", identity.addr),
    ];
    let mut sent = 0;
    for (prefix, addr) in servers {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(usize::MAX);
        for case in rejected.iter().filter(|c| c.path.starts_with(prefix)) {
            let path: tonic::codegen::http::uri::PathAndQuery = case.path.parse().unwrap();
            let bytes = case.message.encode_to_vec();
            // The servers' rate limit (1,000/s, burst 200) must not be what answers.
            tokio::time::sleep(Duration::from_millis(2)).await;
            let call = async {
                grpc.ready()
                    .await
                    .map_err(|e| Status::unavailable(e.to_string()))?;
                grpc.unary(tonic::Request::new(bytes), path, RawCodec).await
            };
            sent += 1;
            match tokio::time::timeout(Duration::from_secs(30), call).await {
                Err(_) => failures.push(format!("{} {}: no answer in 30 s", case.path, case.label)),
                Ok(Ok(_)) => failures.push(format!("{} {}: accepted", case.path, case.label)),
                Ok(Err(status)) => {
                    if let Err(why) = check_rejection(&status) {
                        failures.push(format!("{} {}: {why}", case.path, case.label));
                    }
                }
            }
        }
    }
    assert!(sent > 100, "only {sent} requests reached the services");

    // And once more from a standard grpcio client, which fails a call whose response metadata
    // passes 8 KiB with RESOURCE_EXHAUSTED instead of showing its status.
    let mut input = Vec::new();
    let mut labels = Vec::new();
    for (prefix, addr) in servers {
        for case in rejected.iter().filter(|c| c.path.starts_with(prefix)) {
            let bytes =
                base64::engine::general_purpose::STANDARD.encode(case.message.encode_to_vec());
            writeln!(input, "{addr} {} {bytes}", case.path).unwrap();
            labels.push(format!("{} {}", case.path, case.label));
        }
    }
    let codes = run_python(&["send"], &[], input);
    assert_eq!(codes.len(), labels.len(), "one status per request");
    for (label, code) in labels.iter().zip(&codes) {
        if code != "INVALID_ARGUMENT" {
            failures.push(format!("{label}: grpcio saw {code}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rejected requests were not rejected cleanly:\n{}",
        failures.len(),
        rejected.len(),
        failures.join("\n")
    );
}
