use std::path::Path;

use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, Value};

use super::*;

fn pool(file: &str) -> DescriptorPool {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut compiler =
        protox::Compiler::new([root.join("testdata"), root.join("../../proto/vendor")]).unwrap();
    compiler.include_imports(true);
    compiler.open_file(file).unwrap();
    DescriptorPool::decode(compiler.encode_file_descriptor_set().as_slice()).unwrap()
}

fn sample() -> (Validator, MessageDescriptor) {
    let pool = pool("sample.proto");
    let validator = Validator::new(&pool).unwrap();
    let order = pool.get_message_by_name("sample.v1.Order").unwrap();
    (validator, order)
}

fn message(descriptor: &MessageDescriptor, fields: &[(&str, Value)]) -> DynamicMessage {
    let mut msg = DynamicMessage::new(descriptor.clone());
    for (name, value) in fields {
        msg.set_field_by_name(name, value.clone());
    }
    msg
}

fn valid_order(order: &MessageDescriptor) -> DynamicMessage {
    let pool = order.parent_pool();
    let money = message(
        &pool.get_message_by_name("sample.v1.Money").unwrap(),
        &[
            ("units", Value::I64(5)),
            ("currency_code", Value::String("USD".into())),
        ],
    );
    let line = message(
        &pool.get_message_by_name("sample.v1.Line").unwrap(),
        &[
            (
                "product_id",
                Value::String("0190f3a4-6b7c-7d8e-9f00-112233445566".into()),
            ),
            ("quantity", Value::I32(2)),
        ],
    );
    message(
        order,
        &[
            ("name", Value::String("ok".into())),
            ("email", Value::String("a.b@example.com".into())),
            ("price", Value::Message(money)),
            ("lines", Value::List(vec![Value::Message(line)])),
            ("tags", Value::List(vec![Value::String("x".into())])),
            ("color", Value::EnumNumber(1)),
            ("user_id", Value::String("u".into())),
        ],
    )
}

fn fields_of(result: Result<(), Violations>) -> Vec<String> {
    result
        .err()
        .map(|v| v.violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

#[test]
fn a_valid_message_passes() {
    let (validator, order) = sample();
    assert_eq!(validator.validate(&valid_order(&order)), Ok(()));
}

#[test]
fn each_broken_rule_names_its_field() {
    let (validator, order) = sample();
    let cases: Vec<(&str, Value, &str)> = vec![
        ("name", Value::String(String::new()), "name"),
        ("name", Value::String("toolong".into()), "name"),
        ("email", Value::String("not-an-email".into()), "email"),
        ("color", Value::EnumNumber(0), "color"),
        ("color", Value::EnumNumber(7), "color"),
        ("note", Value::String("ab".into()), "note"),
        (
            "tags",
            Value::List(vec![Value::String("a".into()), Value::String("a".into())]),
            "tags",
        ),
        (
            "tags",
            Value::List(vec![Value::String("A1".into())]),
            "tags[0]",
        ),
        ("lines", Value::List(vec![]), "lines"),
    ];
    for (field, value, expected) in cases {
        let mut msg = valid_order(&order);
        msg.set_field_by_name(field, value);
        assert_eq!(
            fields_of(validator.validate(&msg)),
            vec![expected.to_owned()],
            "{field}"
        );
    }
}

#[test]
fn nested_messages_and_required_fields_are_checked() {
    let (validator, order) = sample();
    let mut msg = valid_order(&order);
    msg.clear_field_by_name("price");
    assert_eq!(fields_of(validator.validate(&msg)), vec!["price"]);

    let mut msg = valid_order(&order);
    let Value::Message(mut price) = msg.get_field_by_name("price").unwrap().into_owned() else {
        panic!("price is a message");
    };
    price.set_field_by_name("units", Value::I64(-1));
    price.set_field_by_name("currency_code", Value::String("XYZ".into()));
    msg.set_field_by_name("price", Value::Message(price));
    assert_eq!(
        fields_of(validator.validate(&msg)),
        vec!["price.units", "price.currency_code"]
    );

    let mut msg = valid_order(&order);
    let Value::List(mut lines) = msg.get_field_by_name("lines").unwrap().into_owned() else {
        panic!("lines is a list");
    };
    if let Value::Message(line) = &mut lines[0] {
        line.set_field_by_name("quantity", Value::I32(0));
        line.set_field_by_name("product_id", Value::String(String::new()));
    }
    msg.set_field_by_name("lines", Value::List(lines));
    assert_eq!(
        fields_of(validator.validate(&msg)),
        vec!["lines[0].product_id", "lines[0].quantity"]
    );
}

#[test]
fn ignore_if_zero_value_and_unset_optional_messages_pass() {
    let (validator, order) = sample();
    let mut msg = valid_order(&order);
    msg.set_field_by_name("note", Value::String(String::new()));
    msg.clear_field_by_name("optional_price");
    assert_eq!(validator.validate(&msg), Ok(()));
}

#[test]
fn required_oneof_needs_a_member() {
    let (validator, order) = sample();
    let mut msg = valid_order(&order);
    msg.clear_field_by_name("user_id");
    assert_eq!(fields_of(validator.validate(&msg)), vec!["target"]);
}

#[test]
fn unsupported_rules_fail_at_start_not_silently() {
    let err = Validator::new(&pool("unsupported.proto")).unwrap_err();
    assert_eq!(err.location, "sample.v1.Unsupported.ip");
    assert_eq!(err.rule, "string.ip");
}

#[test]
fn email_and_uuid_formats() {
    assert!(rules_email("a@b"));
    assert!(rules_email("first.last+tag@sub.example.org"));
    assert!(!rules_email("a@-b.com"));
    assert!(!rules_email("@b.com"));
    assert!(!rules_email("a b@c.com"));
    // As protovalidate: HTML5 limits labels, not the local part or the whole domain.
    assert!(rules_email(&format!("{}@b.com", "a".repeat(65))));
    assert!(rules_email(&format!("a@{}com", "b.".repeat(130))));
    assert!(!rules_email(&format!("a@{}.com", "b".repeat(64))));
}

fn rules_email(value: &str) -> bool {
    let (validator, order) = sample();
    let mut msg = valid_order(&order);
    msg.set_field_by_name("email", Value::String(value.into()));
    validator.validate(&msg).is_ok()
}

#[test]
fn a_nul_in_any_string_is_rejected_by_its_path() {
    let (validator, order) = sample();
    let pool = order.parent_pool();
    let nul = || Value::String("a\0b".into());

    let mut msg = valid_order(&order);
    msg.set_field_by_name("user_id", nul());
    assert_eq!(fields_of(validator.validate(&msg)), vec!["user_id"]);

    let mut msg = valid_order(&order);
    msg.set_field_by_name(
        "aliases",
        Value::List(vec![Value::String("x".into()), nul()]),
    );
    assert_eq!(fields_of(validator.validate(&msg)), vec!["aliases[1]"]);

    let mut msg = valid_order(&order);
    let mut labels = std::collections::HashMap::new();
    labels.insert(
        prost_reflect::MapKey::String("k\0".into()),
        Value::String("v".into()),
    );
    msg.set_field_by_name("labels", Value::Map(labels));
    assert_eq!(
        fields_of(validator.validate(&msg)),
        vec![r#"labels["k\0"]"#]
    );

    // Alongside the field's own rules, and inside nested messages.
    let mut msg = valid_order(&order);
    let money = message(
        &pool.get_message_by_name("sample.v1.Money").unwrap(),
        &[("currency_code", Value::String("US\0".into()))],
    );
    msg.set_field_by_name("price", Value::Message(money));
    let Err(violations) = validator.validate(&msg) else {
        panic!("a NUL passed");
    };
    let found: Vec<_> = violations
        .violations
        .iter()
        .map(|v| (v.field.as_str(), v.rule.as_str()))
        .collect();
    assert_eq!(
        found,
        vec![
            ("price.currency_code", "string.in"),
            ("price.currency_code", "string.no_nul")
        ]
    );

    // IGNORE_ALWAYS is the contracts' way to opt a field out.
    let mut msg = valid_order(&order);
    msg.set_field_by_name("opaque", nul());
    assert_eq!(validator.validate(&msg), Ok(()));
}

fn tags(n: usize, mut item: impl FnMut(usize) -> String) -> Value {
    Value::List((0..n).map(|i| Value::String(item(i))).collect())
}

#[test]
fn violations_are_capped_and_counted() {
    let (validator, order) = sample();
    // 1,000 items, every one breaking its pattern, half of them duplicates.
    let mut msg = valid_order(&order);
    msg.set_field_by_name("tags", tags(1000, |i| format!("BAD{}", i % 500)));
    let Err(violations) = validator.validate(&msg) else {
        panic!("bad tags passed");
    };
    assert_eq!(violations.violations.len(), MAX_VIOLATIONS);
    assert_eq!(violations.violations.len() + violations.omitted, 1001);
    assert_eq!(violations.violations[0].rule, "repeated.unique");
    assert!(
        violations.to_string().ends_with("(and 981 more)"),
        "{violations}"
    );
}

#[test]
fn over_max_items_reports_only_the_count() {
    let (validator, order) = sample();
    let pool = order.parent_pool();
    let line = message(
        &pool.get_message_by_name("sample.v1.Line").unwrap(),
        &[("product_id", Value::String("not a uuid".into()))],
    );
    let mut msg = valid_order(&order);
    msg.set_field_by_name("lines", Value::List(vec![Value::Message(line); 100_000]));
    let (result, steps) = validator.validate_counting(&msg);
    let Err(violations) = result else {
        panic!("100,000 lines passed");
    };
    let rules: Vec<_> = violations
        .violations
        .iter()
        .map(|v| v.rule.as_str())
        .collect();
    assert_eq!(rules, vec!["repeated.max_items"]);
    assert!(steps < 100, "{steps} steps for a list over max_items");
}

#[test]
fn uniqueness_is_linear_not_quadratic() {
    let (validator, order) = sample();
    let n = 200_000;
    let mut msg = valid_order(&order);
    msg.set_field_by_name(
        "tags",
        tags(n, |i| {
            // Distinct lowercase words, so only `unique` has work to do.
            let mut word = String::new();
            let mut i = i;
            loop {
                word.push(char::from(b'a' + (i % 26) as u8));
                i /= 26;
                if i == 0 {
                    break word;
                }
            }
        }),
    );
    let (result, steps) = validator.validate_counting(&msg);
    assert_eq!(result, Ok(()));
    // One step per item for its own rules and one for the set: nothing like n².
    assert!(steps <= 3 * n as u64, "{steps} steps for {n} items");

    msg.set_field_by_name("tags", tags(3, |i| ["a", "b", "a"][i].into()));
    assert_eq!(fields_of(validator.validate(&msg)), vec!["tags"]);
}

#[test]
fn unique_floats_follow_ieee_equality() {
    let list = |xs: &[f64]| xs.iter().map(|x| Value::F64(*x)).collect::<Vec<_>>();
    let mut sink = Sink::default();
    assert!(plan::has_duplicates(&list(&[0.0, -0.0]), &mut sink));
    assert!(!plan::has_duplicates(
        &list(&[f64::NAN, f64::NAN]),
        &mut sink
    ));
    assert!(!plan::has_duplicates(&list(&[1.0, 2.0]), &mut sink));
}
