//! Rules on single values: strings, bytes, numbers, bools and enums.

use prost_reflect::{DynamicMessage, Kind, Value};

use crate::{Sink, UnsupportedRule, Violation};

pub(crate) fn violation(field: String, rule: &str, message: String) -> Violation {
    Violation {
        field,
        rule: rule.to_owned(),
        message,
    }
}

/// Whether `value` is its type's zero value.
pub(crate) fn is_zero(value: &Value) -> bool {
    match value {
        Value::Bool(b) => !b,
        Value::I32(n) | Value::EnumNumber(n) => *n == 0,
        Value::I64(n) => *n == 0,
        Value::U32(n) => *n == 0,
        Value::U64(n) => *n == 0,
        Value::F32(n) => *n == 0.0,
        Value::F64(n) => *n == 0.0,
        Value::String(s) => s.is_empty(),
        Value::Bytes(b) => b.is_empty(),
        Value::List(l) => l.is_empty(),
        Value::Map(m) => m.is_empty(),
        Value::Message(_) => false,
    }
}

/// Bounds and sets over one ordered type.
#[derive(Debug, Clone, Default)]
pub(crate) struct NumRules<T> {
    constant: Option<T>,
    lower: Option<(T, bool)>,
    upper: Option<(T, bool)>,
    one_of: Vec<T>,
    none_of: Vec<T>,
    finite: bool,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct StringRules {
    constant: Option<String>,
    len: Option<u64>,
    min_len: Option<u64>,
    max_len: Option<u64>,
    len_bytes: Option<u64>,
    min_bytes: Option<u64>,
    max_bytes: Option<u64>,
    pattern: Option<regex_lite::Regex>,
    prefix: Option<String>,
    suffix: Option<String>,
    contains: Option<String>,
    not_contains: Option<String>,
    one_of: Vec<String>,
    none_of: Vec<String>,
    email: bool,
    uuid: bool,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct BytesRules {
    constant: Option<Vec<u8>>,
    len: Option<u64>,
    min_len: Option<u64>,
    max_len: Option<u64>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct EnumRules {
    constant: Option<i32>,
    defined_only: bool,
    one_of: Vec<i32>,
    none_of: Vec<i32>,
}

/// The typed rules of a scalar field (the `type` oneof of `FieldRules`).
#[derive(Debug, Clone)]
pub(crate) enum ScalarRules {
    String(StringRules),
    Bytes(BytesRules),
    Int(NumRules<i128>),
    Float(NumRules<f64>),
    Bool(Option<bool>),
    Enum(EnumRules),
}

fn unsupported(location: &str, rule: &str) -> UnsupportedRule {
    UnsupportedRule {
        location: location.to_owned(),
        rule: rule.to_owned(),
    }
}

fn int_of(value: &Value) -> Option<i128> {
    match value {
        Value::I32(n) | Value::EnumNumber(n) => Some(i128::from(*n)),
        Value::I64(n) => Some(i128::from(*n)),
        Value::U32(n) => Some(i128::from(*n)),
        Value::U64(n) => Some(i128::from(*n)),
        _ => None,
    }
}

fn float_of(value: &Value) -> Option<f64> {
    match value {
        Value::F32(n) => Some(f64::from(*n)),
        Value::F64(n) => Some(*n),
        _ => None,
    }
}

fn list_of<T>(value: &Value, item: impl Fn(&Value) -> Option<T>) -> Vec<T> {
    value
        .as_list()
        .map(|l| l.iter().filter_map(item).collect())
        .unwrap_or_default()
}

fn kind_matches(rule: &str, kind: &Kind) -> bool {
    matches!(
        (rule, kind),
        ("string", Kind::String)
            | ("bytes", Kind::Bytes)
            | ("bool", Kind::Bool)
            | ("enum", Kind::Enum(_))
            | ("float", Kind::Float)
            | ("double", Kind::Double)
            | ("int32", Kind::Int32)
            | ("int64", Kind::Int64)
            | ("uint32", Kind::Uint32)
            | ("uint64", Kind::Uint64)
            | ("sint32", Kind::Sint32)
            | ("sint64", Kind::Sint64)
            | ("fixed32", Kind::Fixed32)
            | ("fixed64", Kind::Fixed64)
            | ("sfixed32", Kind::Sfixed32)
            | ("sfixed64", Kind::Sfixed64)
    )
}

impl<T: Copy> NumRules<T> {
    fn compile(
        rules: &DynamicMessage,
        convert: impl Fn(&Value) -> Option<T>,
        is_float: bool,
        location: &str,
    ) -> Result<Self, UnsupportedRule> {
        let mut out = Self {
            constant: None,
            lower: None,
            upper: None,
            one_of: Vec::new(),
            none_of: Vec::new(),
            finite: false,
        };
        for (field, value) in rules.fields() {
            match field.name() {
                "const" => out.constant = convert(value),
                "gt" => out.lower = convert(value).map(|v| (v, false)),
                "gte" => out.lower = convert(value).map(|v| (v, true)),
                "lt" => out.upper = convert(value).map(|v| (v, false)),
                "lte" => out.upper = convert(value).map(|v| (v, true)),
                "in" => out.one_of = list_of(value, &convert),
                "not_in" => out.none_of = list_of(value, &convert),
                "finite" if is_float => out.finite = value.as_bool().unwrap_or(false),
                "example" => {}
                name => return Err(unsupported(location, name)),
            }
        }
        Ok(out)
    }
}

impl<T: Copy + PartialOrd + std::fmt::Display> NumRules<T> {
    fn check(&self, group: &str, value: T, path: &str, out: &mut Sink) {
        let rule = |name: &str| format!("{group}.{name}");
        if let Some(c) = self.constant
            && value != c
        {
            out.push(violation(
                path.to_owned(),
                &rule("const"),
                format!("value must equal {c}"),
            ));
        }
        let above = |(bound, inclusive): (T, bool)| {
            if inclusive {
                value >= bound
            } else {
                value > bound
            }
        };
        let below = |(bound, inclusive): (T, bool)| {
            if inclusive {
                value <= bound
            } else {
                value < bound
            }
        };
        let op = |inclusive: bool, strict: &'static str, loose: &'static str| {
            if inclusive { loose } else { strict }
        };
        match (self.lower, self.upper) {
            // protovalidate: a lower bound above the upper bound means "outside the range".
            (Some(lo), Some(hi)) if lo.0 > hi.0 => {
                if !(above(lo) || below(hi)) {
                    out.push(violation(
                        path.to_owned(),
                        &rule("range"),
                        format!(
                            "value must be {} {} or {} {}",
                            op(hi.1, "less than", "at most"),
                            hi.0,
                            op(lo.1, "greater than", "at least"),
                            lo.0
                        ),
                    ));
                }
            }
            (lo, hi) => {
                if let Some(lo) = lo
                    && !above(lo)
                {
                    let name = if lo.1 { "gte" } else { "gt" };
                    out.push(violation(
                        path.to_owned(),
                        &rule(name),
                        format!(
                            "value must be {} {}",
                            op(lo.1, "greater than", "greater than or equal to"),
                            lo.0
                        ),
                    ));
                }
                if let Some(hi) = hi
                    && !below(hi)
                {
                    let name = if hi.1 { "lte" } else { "lt" };
                    out.push(violation(
                        path.to_owned(),
                        &rule(name),
                        format!(
                            "value must be {} {}",
                            op(hi.1, "less than", "less than or equal to"),
                            hi.0
                        ),
                    ));
                }
            }
        }
        if !self.one_of.is_empty() && !self.one_of.contains(&value) {
            out.push(violation(
                path.to_owned(),
                &rule("in"),
                "value must be in the allowed list".into(),
            ));
        }
        if self.none_of.contains(&value) {
            out.push(violation(
                path.to_owned(),
                &rule("not_in"),
                "value must not be in the forbidden list".into(),
            ));
        }
    }
}

impl StringRules {
    fn compile(rules: &DynamicMessage, location: &str) -> Result<Self, UnsupportedRule> {
        let mut out = Self::default();
        let text = |v: &Value| v.as_str().map(str::to_owned);
        for (field, value) in rules.fields() {
            match field.name() {
                "const" => out.constant = text(value),
                "len" => out.len = value.as_u64(),
                "min_len" => out.min_len = value.as_u64(),
                "max_len" => out.max_len = value.as_u64(),
                "len_bytes" => out.len_bytes = value.as_u64(),
                "min_bytes" => out.min_bytes = value.as_u64(),
                "max_bytes" => out.max_bytes = value.as_u64(),
                "pattern" => {
                    let source = value.as_str().unwrap_or_default();
                    let regex = regex_lite::Regex::new(source)
                        .map_err(|_| unsupported(location, &format!("pattern {source:?}")))?;
                    out.pattern = Some(regex);
                }
                "prefix" => out.prefix = text(value),
                "suffix" => out.suffix = text(value),
                "contains" => out.contains = text(value),
                "not_contains" => out.not_contains = text(value),
                "in" => out.one_of = list_of(value, text),
                "not_in" => out.none_of = list_of(value, text),
                "email" => out.email = value.as_bool().unwrap_or(false),
                "uuid" => out.uuid = value.as_bool().unwrap_or(false),
                "example" => {}
                name => return Err(unsupported(location, &format!("string.{name}"))),
            }
        }
        Ok(out)
    }

    fn check(&self, value: &str, path: &str, out: &mut Sink) {
        let mut fail =
            |rule: &str, message: String| out.push(violation(path.to_owned(), rule, message));
        let chars = value.chars().count() as u64;
        let bytes = value.len() as u64;
        if let Some(c) = &self.constant
            && value != c
        {
            fail("string.const", format!("value must equal {c:?}"));
        }
        if let Some(n) = self.len
            && chars != n
        {
            fail("string.len", format!("value length must be {n} characters"));
        }
        if let Some(n) = self.min_len
            && chars < n
        {
            fail(
                "string.min_len",
                format!("value length must be at least {n} characters"),
            );
        }
        if let Some(n) = self.max_len
            && chars > n
        {
            fail(
                "string.max_len",
                format!("value length must be at most {n} characters"),
            );
        }
        if let Some(n) = self.len_bytes
            && bytes != n
        {
            fail("string.len_bytes", format!("value must be {n} bytes"));
        }
        if let Some(n) = self.min_bytes
            && bytes < n
        {
            fail(
                "string.min_bytes",
                format!("value must be at least {n} bytes"),
            );
        }
        if let Some(n) = self.max_bytes
            && bytes > n
        {
            fail(
                "string.max_bytes",
                format!("value must be at most {n} bytes"),
            );
        }
        if let Some(re) = &self.pattern
            && !re.is_match(value)
        {
            fail(
                "string.pattern",
                format!("value does not match regex pattern {:?}", re.as_str()),
            );
        }
        if let Some(p) = &self.prefix
            && !value.starts_with(p.as_str())
        {
            fail("string.prefix", format!("value does not have prefix {p:?}"));
        }
        if let Some(s) = &self.suffix
            && !value.ends_with(s.as_str())
        {
            fail("string.suffix", format!("value does not have suffix {s:?}"));
        }
        if let Some(s) = &self.contains
            && !value.contains(s.as_str())
        {
            fail("string.contains", format!("value does not contain {s:?}"));
        }
        if let Some(s) = &self.not_contains
            && value.contains(s.as_str())
        {
            fail("string.not_contains", format!("value contains {s:?}"));
        }
        if !self.one_of.is_empty() && !self.one_of.iter().any(|v| v == value) {
            fail(
                "string.in",
                format!("value must be in list {:?}", self.one_of),
            );
        }
        if self.none_of.iter().any(|v| v == value) {
            fail(
                "string.not_in",
                format!("value must not be in list {:?}", self.none_of),
            );
        }
        if self.email && !is_email(value) {
            fail("string.email", "value must be a valid email address".into());
        }
        if self.uuid && !is_uuid(value) {
            fail("string.uuid", "value must be a valid UUID".into());
        }
    }
}

/// The HTML5 `valid e-mail address` grammar, as protovalidate uses: no limit on the length of
/// the local part or of the whole domain (only of each label), unlike RFC 5321.
fn is_email(value: &str) -> bool {
    let Some((local, domain)) = value.split_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".!#$%&'*+/=?^_`{|}~-".contains(c));
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    local_ok && domain.split('.').all(label_ok)
}

/// The canonical 8-4-4-4-12 hex form.
fn is_uuid(value: &str) -> bool {
    value.len() == 36
        && value.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

impl BytesRules {
    fn compile(rules: &DynamicMessage, location: &str) -> Result<Self, UnsupportedRule> {
        let mut out = Self::default();
        for (field, value) in rules.fields() {
            match field.name() {
                "const" => out.constant = value.as_bytes().map(|b| b.to_vec()),
                "len" => out.len = value.as_u64(),
                "min_len" => out.min_len = value.as_u64(),
                "max_len" => out.max_len = value.as_u64(),
                "example" => {}
                name => return Err(unsupported(location, &format!("bytes.{name}"))),
            }
        }
        Ok(out)
    }

    fn check(&self, value: &[u8], path: &str, out: &mut Sink) {
        let len = value.len() as u64;
        let mut fail =
            |rule: &str, message: String| out.push(violation(path.to_owned(), rule, message));
        if let Some(c) = &self.constant
            && value != c.as_slice()
        {
            fail("bytes.const", "value must equal the constant".into());
        }
        if let Some(n) = self.len
            && len != n
        {
            fail("bytes.len", format!("value length must be {n} bytes"));
        }
        if let Some(n) = self.min_len
            && len < n
        {
            fail(
                "bytes.min_len",
                format!("value length must be at least {n} bytes"),
            );
        }
        if let Some(n) = self.max_len
            && len > n
        {
            fail(
                "bytes.max_len",
                format!("value length must be at most {n} bytes"),
            );
        }
    }
}

impl EnumRules {
    fn compile(rules: &DynamicMessage, location: &str) -> Result<Self, UnsupportedRule> {
        let mut out = Self::default();
        let number = |v: &Value| v.as_i32().or_else(|| v.as_enum_number());
        for (field, value) in rules.fields() {
            match field.name() {
                "const" => out.constant = number(value),
                "defined_only" => out.defined_only = value.as_bool().unwrap_or(false),
                "in" => out.one_of = list_of(value, number),
                "not_in" => out.none_of = list_of(value, number),
                "example" => {}
                name => return Err(unsupported(location, &format!("enum.{name}"))),
            }
        }
        Ok(out)
    }

    fn check(&self, value: i32, kind: &Kind, path: &str, out: &mut Sink) {
        let mut fail =
            |rule: &str, message: String| out.push(violation(path.to_owned(), rule, message));
        if let Some(c) = self.constant
            && value != c
        {
            fail("enum.const", format!("value must equal {c}"));
        }
        if self.defined_only
            && let Kind::Enum(descriptor) = kind
            && descriptor.get_value(value).is_none()
        {
            fail(
                "enum.defined_only",
                "value must be one of the defined enum values".into(),
            );
        }
        if !self.one_of.is_empty() && !self.one_of.contains(&value) {
            fail(
                "enum.in",
                format!("value must be in list {:?}", self.one_of),
            );
        }
        if self.none_of.contains(&value) {
            fail(
                "enum.not_in",
                format!("value must not be in list {:?}", self.none_of),
            );
        }
    }
}

impl ScalarRules {
    /// Compiles the `name` member of the `FieldRules.type` oneof for a field of `kind`.
    pub(crate) fn compile(
        name: &str,
        rules: &DynamicMessage,
        kind: &Kind,
        location: &str,
    ) -> Result<Self, UnsupportedRule> {
        if !kind_matches(name, kind) {
            return Err(unsupported(location, name));
        }
        Ok(match name {
            "string" => Self::String(StringRules::compile(rules, location)?),
            "bytes" => Self::Bytes(BytesRules::compile(rules, location)?),
            "enum" => Self::Enum(EnumRules::compile(rules, location)?),
            "bool" => {
                let mut constant = None;
                for (field, value) in rules.fields() {
                    match field.name() {
                        "const" => constant = value.as_bool(),
                        "example" => {}
                        other => return Err(unsupported(location, &format!("bool.{other}"))),
                    }
                }
                Self::Bool(constant)
            }
            "float" | "double" => Self::Float(NumRules::compile(rules, float_of, true, location)?),
            _ => Self::Int(NumRules::compile(rules, int_of, false, location)?),
        })
    }

    pub(crate) fn check(&self, value: &Value, kind: &Kind, path: &str, out: &mut Sink) {
        match (self, value) {
            (Self::String(rules), Value::String(s)) => rules.check(s, path, out),
            (Self::Bytes(rules), Value::Bytes(b)) => rules.check(b, path, out),
            (Self::Enum(rules), Value::EnumNumber(n)) => rules.check(*n, kind, path, out),
            (Self::Bool(Some(c)), Value::Bool(b)) if b != c => {
                out.push(violation(
                    path.to_owned(),
                    "bool.const",
                    format!("value must equal {c}"),
                ));
            }
            (Self::Float(rules), v) => {
                if let Some(f) = float_of(v) {
                    if rules.finite && !f.is_finite() {
                        out.push(violation(
                            path.to_owned(),
                            "double.finite",
                            "value must be finite".into(),
                        ));
                    }
                    rules.check(kind_name(kind), f, path, out);
                }
            }
            (Self::Int(rules), v) => {
                if let Some(n) = int_of(v) {
                    rules.check(kind_name(kind), n, path, out);
                }
            }
            _ => {}
        }
    }
}

fn kind_name(kind: &Kind) -> &'static str {
    match kind {
        Kind::Int32 => "int32",
        Kind::Int64 => "int64",
        Kind::Uint32 => "uint32",
        Kind::Uint64 => "uint64",
        Kind::Sint32 => "sint32",
        Kind::Sint64 => "sint64",
        Kind::Fixed32 => "fixed32",
        Kind::Fixed64 => "fixed64",
        Kind::Sfixed32 => "sfixed32",
        Kind::Sfixed64 => "sfixed64",
        Kind::Float => "float",
        Kind::Double => "double",
        _ => "number",
    }
}
