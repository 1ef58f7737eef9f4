//! The rules of one message, read from its descriptor's options, and their evaluation.

use prost_reflect::{
    DescriptorPool, DynamicMessage, ExtensionDescriptor, FieldDescriptor, Kind, MessageDescriptor,
    OneofDescriptor, Value,
};

use crate::{
    UnsupportedRule, Validator, Violation,
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
            ("unique", v) => unique = v.as_bool().unwrap_or(false),
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
        out: &mut Vec<Violation>,
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
    out: &mut Vec<Violation>,
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
    out: &mut Vec<Violation>,
) {
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
            check_count(
                path,
                "repeated",
                "items",
                list.len(),
                *min_items,
                *max_items,
                out,
            );
            if *unique && has_duplicates(list) {
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
                    None => recurse(validator, item, &item_path, out),
                }
            }
        }
        (None, Value::List(list)) => {
            for (i, item) in list.iter().enumerate() {
                recurse(validator, item, &format!("{path}[{i}]"), out);
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
            check_count(path, "map", "pairs", map.len(), *min_pairs, *max_pairs, out);
            for (key, item) in map {
                let key_value = Value::from(key.clone());
                let item_path = format!("{path}[{}]", display_key(&key_value));
                if let Some(key_rules) = keys {
                    let key_kind = key_kind_of(kind);
                    check_element(validator, &key_kind, key_rules, &key_value, &item_path, out);
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
                    None => recurse(validator, item, &item_path, out),
                }
            }
        }
        (None, Value::Map(map)) => {
            for (key, item) in map {
                let item_path = format!("{path}[{}]", display_key(&Value::from(key.clone())));
                recurse(validator, item, &item_path, out);
            }
        }
        (Some(ValueRules::Scalar(scalar)), value) => {
            scalar.check(value, kind, path, out);
            recurse(validator, value, path, out);
        }
        (_, value) => recurse(validator, value, path, out),
    }
}

/// One element of a repeated field or map, under its `items`/`keys`/`values` rules.
fn check_element(
    validator: &Validator,
    kind: &Kind,
    rules: &FieldRules,
    value: &Value,
    path: &str,
    out: &mut Vec<Violation>,
) {
    if rules.ignore == Ignore::Always || (rules.ignore == Ignore::IfZeroValue && is_zero(value)) {
        return;
    }
    check_value(validator, kind, rules, value, path, out);
}

fn recurse(validator: &Validator, value: &Value, path: &str, out: &mut Vec<Violation>) {
    if let Value::Message(nested) = value {
        validator.check_message(nested, &format!("{path}."), out);
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

fn check_count(
    path: &str,
    group: &str,
    noun: &str,
    len: usize,
    min: Option<u64>,
    max: Option<u64>,
    out: &mut Vec<Violation>,
) {
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
    }
}

fn has_duplicates(list: &[Value]) -> bool {
    list.iter()
        .enumerate()
        .any(|(i, a)| list[i + 1..].iter().any(|b| a == b))
}
