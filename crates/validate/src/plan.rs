//! The rules of one message, read from its descriptor's options, and their evaluation.

use std::collections::HashSet;

use prost_reflect::{
    DescriptorPool, DynamicMessage, ExtensionDescriptor, FieldDescriptor, Kind, MessageDescriptor,
    OneofDescriptor, Value,
};

use crate::{
    Sink, UnsupportedRule, Validator,
    rules::{ScalarRules, is_zero, violation},
};

/// The `buf.validate` option extensions, when the pool has them.
pub(crate) struct Extensions {
    field: Option<ExtensionDescriptor>,
    oneof: Option<ExtensionDescriptor>,
    message: Option<ExtensionDescriptor>,
}

impl Extensions {
    pub(crate) fn find(pool: &DescriptorPool) -> Self {
        Self {
            field: pool.get_extension_by_name("buf.validate.field"),
            oneof: pool.get_extension_by_name("buf.validate.oneof"),
            message: pool.get_extension_by_name("buf.validate.message"),
        }
    }
}

fn option_message(
    options: &DynamicMessage,
    ext: Option<&ExtensionDescriptor>,
) -> Option<DynamicMessage> {
    let ext = ext?;
    if !options.has_extension(ext) {
        return None;
    }
    match options.get_extension(ext).as_ref() {
        Value::Message(m) => Some(m.clone()),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ignore {
    /// protovalidate's default.
    Default,
    IfZeroValue,
    Always,
}

/// Rules for the values of one field.
#[derive(Debug, Clone)]
enum ValueRules {
    Scalar(Box<ScalarRules>),
    Repeated {
        min_items: Option<u64>,
        max_items: Option<u64>,
        unique: bool,
        items: Option<Box<FieldRules>>,
    },
    Map {
        min_pairs: Option<u64>,
        max_pairs: Option<u64>,
        keys: Option<Box<FieldRules>>,
        values: Option<Box<FieldRules>>,
    },
}

/// Compiled `buf.validate.FieldRules`.
#[derive(Debug, Clone)]
struct FieldRules {
    required: bool,
    ignore: Ignore,
    rules: Option<ValueRules>,
}

#[derive(Debug, Clone)]
struct FieldPlan {
    field: FieldDescriptor,
    rules: FieldRules,
}

/// The compiled rules of one message type.
#[derive(Debug, Clone)]
pub struct MessagePlan {
    disabled: bool,
    fields: Vec<FieldPlan>,
    required_oneofs: Vec<OneofDescriptor>,
}

fn unsupported(location: &str, rule: &str) -> UnsupportedRule {
    UnsupportedRule {
        location: location.to_owned(),
        rule: rule.to_owned(),
    }
}

fn as_u64(value: &Value) -> Option<u64> {
    value.as_u64()
}

fn compile_field_rules(
    rules: &DynamicMessage,
    kind: &Kind,
    is_list: bool,
    is_map: bool,
    location: &str,
) -> Result<FieldRules, UnsupportedRule> {
    let mut compiled = FieldRules {
        required: false,
        ignore: Ignore::Default,
        rules: None,
    };
    for (field, value) in rules.fields() {
        match field.name() {
            "required" => compiled.required = value.as_bool().unwrap_or(false),
            "ignore" => {
                compiled.ignore = match value.as_enum_number() {
                    Some(0) => Ignore::Default,
                    Some(1) => Ignore::IfZeroValue,
                    Some(3) => Ignore::Always,
                    _ => return Err(unsupported(location, "ignore")),
                };
            }
            "repeated" if is_list => {
                let Value::Message(repeated) = value else {
                    return Err(unsupported(location, "repeated"));
                };
                compiled.rules = Some(compile_repeated(repeated, kind, location)?);
            }
            "map" if is_map => {
                let Value::Message(map) = value else {
                    return Err(unsupported(location, "map"));
                };
                compiled.rules = Some(compile_map(map, kind, location)?);
            }
            name => {
                let Value::Message(typed) = value else {
                    return Err(unsupported(location, name));
                };
                if is_list || is_map {
                    return Err(unsupported(location, name));
                }
                let scalar = ScalarRules::compile(name, typed, kind, location)?;
                compiled.rules = Some(ValueRules::Scalar(Box::new(scalar)));
            }
        }
    }
    Ok(compiled)
}

fn compile_repeated(
    repeated: &DynamicMessage,
    kind: &Kind,
    location: &str,
) -> Result<ValueRules, UnsupportedRule> {
    let (mut min_items, mut max_items, mut unique, mut items) = (None, None, false, None);
    for (field, value) in repeated.fields() {
        match (field.name(), value) {
            ("min_items", v) => min_items = as_u64(v),
            ("max_items", v) => max_items = as_u64(v),
            ("unique", v) => {
                unique = v.as_bool().unwrap_or(false);
                // As in protovalidate: uniqueness is defined for scalars and enums only.
                if unique && matches!(kind, Kind::Message(_)) {
                    return Err(unsupported(location, "repeated.unique"));
                }
            }
            ("items", Value::Message(item_rules)) => {
                items = Some(Box::new(compile_field_rules(
                    item_rules,
                    kind,
                    false,
                    false,
                    &format!("{location}[]"),
                )?));
            }
            (name, _) => return Err(unsupported(location, &format!("repeated.{name}"))),
        }
    }
    Ok(ValueRules::Repeated {
        min_items,
        max_items,
        unique,
        items,
    })
}

fn compile_map(
    map: &DynamicMessage,
    kind: &Kind,
    location: &str,
) -> Result<ValueRules, UnsupportedRule> {
    let entry = kind
        .as_message()
        .ok_or_else(|| unsupported(location, "map"))?;
    let key_kind = entry.map_entry_key_field().kind();
    let value_kind = entry.map_entry_value_field().kind();
    let (mut min_pairs, mut max_pairs, mut keys, mut values) = (None, None, None, None);
    for (field, value) in map.fields() {
        match (field.name(), value) {
            ("min_pairs", v) => min_pairs = as_u64(v),
            ("max_pairs", v) => max_pairs = as_u64(v),
            ("keys", Value::Message(r)) => {
                keys = Some(Box::new(compile_field_rules(
                    r, &key_kind, false, false, location,
                )?));
            }
            ("values", Value::Message(r)) => {
                values = Some(Box::new(compile_field_rules(
                    r,
                    &value_kind,
                    false,
                    false,
                    location,
                )?));
            }
            (name, _) => return Err(unsupported(location, &format!("map.{name}"))),
        }
    }
    Ok(ValueRules::Map {
        min_pairs,
        max_pairs,
        keys,
        values,
    })
}

impl MessagePlan {
    pub(crate) fn compile(
        message: &MessageDescriptor,
        ext: &Extensions,
    ) -> Result<Self, UnsupportedRule> {
        let mut disabled = false;
        if let Some(rules) = option_message(&message.options(), ext.message.as_ref()) {
            for (field, value) in rules.fields() {
                match field.name() {
                    "disabled" => disabled = value.as_bool().unwrap_or(false),
                    name => return Err(unsupported(message.full_name(), name)),
                }
            }
        }
        let mut fields = Vec::new();
        for field in message.fields() {
            let location = field.full_name().to_owned();
            let rules = match option_message(&field.options(), ext.field.as_ref()) {
                Some(rules) => compile_field_rules(
                    &rules,
                    &field.kind(),
                    field.is_list(),
                    field.is_map(),
                    &location,
                )?,
                None => FieldRules {
                    required: false,
                    ignore: Ignore::Default,
                    rules: None,
                },
            };
            fields.push(FieldPlan { field, rules });
        }
        let mut required_oneofs = Vec::new();
        for oneof in message.oneofs() {
            if let Some(rules) = option_message(&oneof.options(), ext.oneof.as_ref()) {
                for (field, value) in rules.fields() {
                    match field.name() {
                        "required" if value.as_bool() == Some(true) => {
                            required_oneofs.push(oneof.clone());
                        }
                        "required" => {}
                        name => return Err(unsupported(oneof.full_name(), name)),
                    }
                }
            }
        }
        Ok(Self {
            disabled,
            fields,
            required_oneofs,
        })
    }

    pub(crate) fn check(
        &self,
        validator: &Validator,
        message: &DynamicMessage,
        prefix: &str,
        out: &mut Sink,
    ) {
        if self.disabled {
            return;
        }
        for plan in &self.fields {
            let path = format!("{prefix}{}", plan.field.name());
            check_field(validator, message, plan, &path, out);
        }
        for oneof in &self.required_oneofs {
            if !oneof.fields().any(|f| message.has_field(&f)) {
                out.push(violation(
                    format!("{prefix}{}", oneof.name()),
                    "required",
                    "exactly one field is required in oneof".into(),
                ));
            }
        }
    }
}

fn check_field(
    validator: &Validator,
    message: &DynamicMessage,
    plan: &FieldPlan,
    path: &str,
    out: &mut Sink,
) {
    let field = &plan.field;
    let rules = &plan.rules;
    if rules.ignore == Ignore::Always {
        return;
    }
    let present = message.has_field(field);
    if rules.required && !present {
        out.push(violation(
            path.to_owned(),
            "required",
            "value is required".into(),
        ));
        return;
    }
    let is_collection = field.is_list() || field.is_map();
    // An unset message or optional field answers only to `required`; a zero value with
    // IGNORE_IF_ZERO_VALUE to nothing. Empty collections still meet `min_items`/`min_pairs`.
    let skip = !present
        && (rules.ignore == Ignore::IfZeroValue || (!is_collection && field.supports_presence()));
    if skip {
        return;
    }
    let value = message.get_field(field);
    check_value(validator, &field.kind(), rules, value.as_ref(), path, out);
}

fn check_value(
    validator: &Validator,
    kind: &Kind,
    rules: &FieldRules,
    value: &Value,
    path: &str,
    out: &mut Sink,
) {
    out.steps += 1;
    match (&rules.rules, value) {
        (
            Some(ValueRules::Repeated {
                min_items,
                max_items,
                unique,
                items,
            }),
            Value::List(list),
        ) => {
            let within = check_count(
                path,
                "repeated",
                "items",
                list.len(),
                *min_items,
                *max_items,
                out,
            );
            // Over `max_items` the request is wrong whatever its items hold; checking them
            // would only let one message buy unbounded work and an unbounded report.
            if !within {
                return;
            }
            if *unique && has_duplicates(list, out) {
                out.push(violation(
                    path.to_owned(),
                    "repeated.unique",
                    "repeated value must contain unique items".into(),
                ));
            }
            for (i, item) in list.iter().enumerate() {
                let item_path = format!("{path}[{i}]");
                match items {
                    Some(item_rules) => {
                        check_element(validator, kind, item_rules, item, &item_path, out);
                    }
                    None => check_plain(validator, item, &item_path, out),
                }
            }
        }
        (None, Value::List(list)) => {
            for (i, item) in list.iter().enumerate() {
                check_plain(validator, item, &format!("{path}[{i}]"), out);
            }
        }
        (
            Some(ValueRules::Map {
                min_pairs,
                max_pairs,
                keys,
                values,
            }),
            Value::Map(map),
        ) => {
            if !check_count(path, "map", "pairs", map.len(), *min_pairs, *max_pairs, out) {
                return;
            }
            for (key, item) in map {
                let key_value = Value::from(key.clone());
                let item_path = format!("{path}[{}]", display_key(&key_value));
                match keys {
                    Some(key_rules) => {
                        let key_kind = key_kind_of(kind);
                        check_element(validator, &key_kind, key_rules, &key_value, &item_path, out);
                    }
                    None => check_plain(validator, &key_value, &item_path, out),
                }
                match values {
                    Some(value_rules) => check_element(
                        validator,
                        &value_kind_of(kind),
                        value_rules,
                        item,
                        &item_path,
                        out,
                    ),
                    None => check_plain(validator, item, &item_path, out),
                }
            }
        }
        (None, Value::Map(map)) => {
            for (key, item) in map {
                let key_value = Value::from(key.clone());
                let item_path = format!("{path}[{}]", display_key(&key_value));
                check_plain(validator, &key_value, &item_path, out);
                check_plain(validator, item, &item_path, out);
            }
        }
        (Some(ValueRules::Scalar(scalar)), value) => {
            scalar.check(value, kind, path, out);
            check_plain(validator, value, path, out);
        }
        (_, value) => check_plain(validator, value, path, out),
    }
}

/// One element of a repeated field or map, under its `items`/`keys`/`values` rules.
fn check_element(
    validator: &Validator,
    kind: &Kind,
    rules: &FieldRules,
    value: &Value,
    path: &str,
    out: &mut Sink,
) {
    if rules.ignore == Ignore::Always || (rules.ignore == Ignore::IfZeroValue && is_zero(value)) {
        return;
    }
    check_value(validator, kind, rules, value, path, out);
}

/// The checks every value gets, rules or not: no NUL in a string (PostgreSQL `text` cannot
/// hold one; see the crate docs), and a nested message's own rules.
fn check_plain(validator: &Validator, value: &Value, path: &str, out: &mut Sink) {
    match value {
        Value::String(s) if s.contains('\0') => out.push(violation(
            path.to_owned(),
            "string.no_nul",
            "value must not contain the NUL character".into(),
        )),
        Value::Message(nested) => validator.check_message(nested, &format!("{path}."), out),
        _ => {}
    }
}

fn key_kind_of(kind: &Kind) -> Kind {
    kind.as_message()
        .map_or(Kind::String, |entry| entry.map_entry_key_field().kind())
}

fn value_kind_of(kind: &Kind) -> Kind {
    kind.as_message()
        .map_or(Kind::String, |entry| entry.map_entry_value_field().kind())
}

fn display_key(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        other => format!("{other:?}"),
    }
}

/// Checks a collection's size; `false` when it is over its maximum.
fn check_count(
    path: &str,
    group: &str,
    noun: &str,
    len: usize,
    min: Option<u64>,
    max: Option<u64>,
    out: &mut Sink,
) -> bool {
    let len = len as u64;
    if let Some(min) = min
        && len < min
    {
        out.push(violation(
            path.to_owned(),
            &format!("{group}.min_{noun}"),
            format!("value must contain at least {min} {noun}"),
        ));
    }
    if let Some(max) = max
        && len > max
    {
        out.push(violation(
            path.to_owned(),
            &format!("{group}.max_{noun}"),
            format!("value must contain no more than {max} {noun}"),
        ));
        return false;
    }
    true
}

/// A hashable stand-in for a scalar list item, equal exactly when the items are.
#[derive(PartialEq, Eq, Hash)]
enum ItemKey<'a> {
    Bool(bool),
    Int(i128),
    /// The bits of a float, with `-0.0` folded into `0.0` (they compare equal).
    Float(u64),
    Text(&'a str),
    Bytes(&'a [u8]),
}

fn item_key(value: &Value) -> Option<ItemKey<'_>> {
    let float = |f: f64| {
        // NaN equals nothing, not even itself, so it never makes a duplicate.
        (!f.is_nan()).then(|| ItemKey::Float(if f == 0.0 { 0 } else { f.to_bits() }))
    };
    match value {
        Value::Bool(b) => Some(ItemKey::Bool(*b)),
        Value::I32(n) | Value::EnumNumber(n) => Some(ItemKey::Int(i128::from(*n))),
        Value::I64(n) => Some(ItemKey::Int(i128::from(*n))),
        Value::U32(n) => Some(ItemKey::Int(i128::from(*n))),
        Value::U64(n) => Some(ItemKey::Int(i128::from(*n))),
        Value::F32(f) => float(f64::from(*f)),
        Value::F64(f) => float(*f),
        Value::String(s) => Some(ItemKey::Text(s)),
        Value::Bytes(b) => Some(ItemKey::Bytes(b)),
        // `unique` on messages is refused when the rules are compiled.
        Value::List(_) | Value::Map(_) | Value::Message(_) => None,
    }
}

/// One pass with a hash set, not a comparison of every pair.
pub(crate) fn has_duplicates(list: &[Value], out: &mut Sink) -> bool {
    let mut seen = HashSet::with_capacity(list.len());
    list.iter().filter_map(item_key).any(|key| {
        out.steps += 1;
        !seen.insert(key)
    })
}
