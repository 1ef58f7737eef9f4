//! Structure-aware requests: a message of a given type, every field chosen from `Unstructured`
//! with values biased toward the edges validation rules care about (empty, one past a length,
//! NUL and multi-byte characters, extreme numbers, undefined enum values, long repeated fields).

use std::collections::HashMap;

use arbitrary::Unstructured;
use bytes::Bytes;
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, Value};

/// Deeper nesting than any contract has; stops recursive types (`google.protobuf.Struct`).
const MAX_DEPTH: u32 = 6;
/// Long enough to cross every `max_items` (100) and the 1,000-item case validation must bound.
const MAX_ITEMS: usize = 1_200;

/// A message of type `descriptor` built from `input`.
pub(crate) fn message(
    input: &mut Unstructured<'_>,
    descriptor: &MessageDescriptor,
) -> DynamicMessage {
    build(input, descriptor, 0)
}

fn build(
    input: &mut Unstructured<'_>,
    descriptor: &MessageDescriptor,
    depth: u32,
) -> DynamicMessage {
    let mut message = DynamicMessage::new(descriptor.clone());
    if depth >= MAX_DEPTH {
        return message;
    }
    for field in descriptor.fields() {
        // Most fields are set, so most rules get a chance to fire.
        if input.ratio(1, 5).unwrap_or(true) {
            continue;
        }
        if let Some(value) = field_value(input, &field, depth) {
            message.set_field(&field, value);
        }
    }
    message
}

fn field_value(input: &mut Unstructured<'_>, field: &FieldDescriptor, depth: u32) -> Option<Value> {
    if field.is_map() {
        let Kind::Message(entry) = field.kind() else {
            return None;
        };
        let (key_field, value_field) = (entry.map_entry_key_field(), entry.map_entry_value_field());
        let mut map = HashMap::new();
        for _ in 0..count(input) {
            let key = map_key(input, &key_field.kind())?;
            let value = single(input, &value_field.kind(), depth)?;
            map.insert(key, value);
        }
        return Some(Value::Map(map));
    }
    if field.is_list() {
        let items = count(input);
        // A repeat of one value is the cheapest way to a long list with duplicates.
        let repeat = input.arbitrary::<bool>().unwrap_or(false);
        let mut list = Vec::with_capacity(items);
        for i in 0..items {
            let value = if repeat && i > 0 {
                list.last().cloned()?
            } else {
                single(input, &field.kind(), depth)?
            };
            list.push(value);
        }
        return Some(Value::List(list));
    }
    single(input, &field.kind(), depth)
}

fn count(input: &mut Unstructured<'_>) -> usize {
    match input.int_in_range(0..=7u8).unwrap_or(0) {
        0 => 0,
        1 => 1,
        2 => 2,
        3 => 100,
        4 => 101,
        5 => 1_000,
        6 => MAX_ITEMS,
        _ => input.int_in_range(0..=20usize).unwrap_or(0),
    }
}

fn single(input: &mut Unstructured<'_>, kind: &Kind, depth: u32) -> Option<Value> {
    Some(match kind {
        Kind::Double => Value::F64(float(input)),
        // Narrowing on purpose: f32 edges come from the f64 ones (inf stays inf).
        #[allow(clippy::cast_possible_truncation)]
        Kind::Float => Value::F32(float(input) as f32),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(edge_i32(input)),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(edge_i64(input)),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(edge_i32(input).cast_unsigned()),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(edge_i64(input).cast_unsigned()),
        Kind::Bool => Value::Bool(input.arbitrary().unwrap_or(false)),
        Kind::String => Value::String(text(input)),
        Kind::Bytes => Value::Bytes(Bytes::from(text(input).into_bytes())),
        Kind::Enum(descriptor) => {
            let defined: Vec<i32> = descriptor.values().map(|v| v.number()).collect();
            let number = if input.ratio(3, 4).unwrap_or(true) && !defined.is_empty() {
                defined[usize::from(input.arbitrary::<u8>().unwrap_or(0)) % defined.len()]
            } else {
                edge_i32(input)
            };
            Value::EnumNumber(number)
        }
        Kind::Message(descriptor) => Value::Message(build(input, descriptor, depth + 1)),
    })
}

fn map_key(input: &mut Unstructured<'_>, kind: &Kind) -> Option<MapKey> {
    Some(match kind {
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => MapKey::I32(edge_i32(input)),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => MapKey::I64(edge_i64(input)),
        Kind::Uint32 | Kind::Fixed32 => MapKey::U32(edge_i32(input).cast_unsigned()),
        Kind::Uint64 | Kind::Fixed64 => MapKey::U64(edge_i64(input).cast_unsigned()),
        Kind::Bool => MapKey::Bool(input.arbitrary().unwrap_or(false)),
        Kind::String => MapKey::String(text(input)),
        _ => return None,
    })
}

fn edge_i32(input: &mut Unstructured<'_>) -> i32 {
    const EDGES: &[i32] = &[
        0,
        1,
        -1,
        2,
        99,
        100,
        101,
        1_000,
        i32::MAX,
        i32::MIN,
        999_999_999,
    ];
    if input.ratio(1, 2).unwrap_or(true) {
        EDGES[usize::from(input.arbitrary::<u8>().unwrap_or(0)) % EDGES.len()]
    } else {
        input.arbitrary().unwrap_or(0)
    }
}

fn edge_i64(input: &mut Unstructured<'_>) -> i64 {
    const EDGES: &[i64] = &[
        0,
        1,
        -1,
        100,
        i64::MAX,
        i64::MIN,
        999_999_999,
        1_000_000_000,
    ];
    if input.ratio(1, 2).unwrap_or(true) {
        EDGES[usize::from(input.arbitrary::<u8>().unwrap_or(0)) % EDGES.len()]
    } else {
        input.arbitrary().unwrap_or(0)
    }
}

fn float(input: &mut Unstructured<'_>) -> f64 {
    const EDGES: &[f64] = &[
        0.0,
        -0.0,
        1.0,
        -1.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        f64::MAX,
        f64::MIN_POSITIVE,
    ];
    if input.ratio(1, 2).unwrap_or(true) {
        EDGES[usize::from(input.arbitrary::<u8>().unwrap_or(0)) % EDGES.len()]
    } else {
        input.arbitrary().unwrap_or(0.0)
    }
}

fn text(input: &mut Unstructured<'_>) -> String {
    match input.int_in_range(0..=9u8).unwrap_or(0) {
        0 => String::new(),
        1 => "\0".to_owned(),
        2 => format!("a\0{}", input.arbitrary::<u8>().unwrap_or(0)),
        3 => "0190d8a6-7c1e-7a3b-9f00-2b3c4d5e6f70".to_owned(),
        4 => "not-a-uuid".to_owned(),
        5 => "é".repeat(input.int_in_range(0..=300usize).unwrap_or(0)),
        6 => "x".repeat(input.int_in_range(0..=1_100usize).unwrap_or(0)),
        7 => "ada@example.com".to_owned(),
        8 => " ".to_owned(),
        _ => input.arbitrary::<String>().unwrap_or_default(),
    }
}
