//! Quote prices deterministically from lines, destination and currency; bad input gets
//! INVALID_ARGUMENT naming the field, from the contract's rules or the service's own.

use shop_proto::{
    common::PostalAddress,
    shipping::{
        CancelShipmentRequest, GetShipmentRequest, QuoteRequest, QuoteResponse, ShipmentLine,
        get_shipment_request::Lookup,
    },
};
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{TestApp, berlin, spawn_app, violated_fields};

fn line(quantity: i32) -> ShipmentLine {
    ShipmentLine {
        product_id: Uuid::now_v7().to_string(),
        quantity,
    }
}

fn request(country: &str, quantities: &[i32], currency: &str) -> QuoteRequest {
    QuoteRequest {
        address: Some(PostalAddress {
            country_code: country.into(),
            ..berlin()
        }),
        lines: quantities.iter().map(|q| line(*q)).collect(),
        currency_code: currency.into(),
    }
}

async fn quote(app: &TestApp, request: QuoteRequest) -> Result<QuoteResponse, tonic::Status> {
    app.client
        .clone()
        .quote(request)
        .await
        .map(tonic::Response::into_inner)
}

fn assert_names(err: &tonic::Status, field: &str, case: &str) {
    assert_eq!(err.code(), Code::InvalidArgument, "{case}: {err:?}");
    assert!(
        violated_fields(err).iter().any(|f| f == field),
        "{case}: expected a violation on {field}, got {:?} ({})",
        violated_fields(err),
        err.message()
    );
}

#[tokio::test]
async fn quotes_are_priced_from_lines_destination_and_currency() {
    let app = spawn_app().await;
    // Default currency, at home: one parcel of 3 units, 4.90 + 3 x 0.10.
    let home = quote(&app, request("DE", &[1, 2], "")).await.unwrap();
    let cost = home.cost.clone().unwrap();
    assert_eq!(
        (cost.units, cost.nanos, cost.currency_code.as_str()),
        (5, 200_000_000, "EUR")
    );
    assert_eq!(
        (home.carrier.as_str(), home.estimated_delivery_days),
        ("DHL", 2)
    );
    assert_eq!(
        quote(&app, request("DE", &[1, 2], "")).await.unwrap(),
        home,
        "deterministic"
    );
    // The same parcel in yen has no minor unit: 842.4 rounds up to 843.
    let yen = quote(&app, request("DE", &[1, 2], "JPY"))
        .await
        .unwrap()
        .cost
        .unwrap();
    assert_eq!(
        (yen.units, yen.nanos, yen.currency_code.as_str()),
        (843, 0, "JPY")
    );
    // Farther and heavier costs more: 21 units are two parcels.
    let europe = quote(&app, request("FR", &[20, 1], "EUR")).await.unwrap();
    assert_eq!(europe.carrier, "DPD");
    let cost = europe.cost.unwrap();
    assert_eq!((cost.units, cost.nanos), (25, 50_000_000));
    let world = quote(&app, request("US", &[1], "USD")).await.unwrap();
    assert_eq!(
        (world.carrier.as_str(), world.estimated_delivery_days),
        ("UPS", 7)
    );
    app.shutdown().await;
}

#[tokio::test]
async fn quote_rejects_each_bad_field_by_name() {
    let app = spawn_app().await;
    let many: Vec<i32> = vec![1; 101];
    let mut no_address = request("DE", &[1], "");
    no_address.address = None;
    let mut bad_product = request("DE", &[1], "");
    bad_product.lines[0].product_id = "mug".into();
    let cases = [
        (
            "untraded currency",
            "currency_code",
            request("DE", &[1], "XAU"),
        ),
        (
            "lower-case currency",
            "currency_code",
            request("DE", &[1], "eur"),
        ),
        ("no address", "address", no_address),
        ("no lines", "lines", request("DE", &[], "")),
        ("too many lines", "lines", request("DE", &many, "")),
        (
            "zero quantity",
            "lines[0].quantity",
            request("DE", &[0], ""),
        ),
        (
            "huge quantity",
            "lines[1].quantity",
            request("DE", &[1, 1001], ""),
        ),
        ("product not a uuid", "lines[0].product_id", bad_product),
        (
            "country not alpha-2",
            "address.country_code",
            request("Germany", &[1], ""),
        ),
    ];
    for (case, field, request) in cases {
        let err = quote(&app, request).await.unwrap_err();
        assert_names(&err, field, case);
    }
    app.shutdown().await;
}

#[tokio::test]
async fn lookups_and_cancellations_name_the_bad_field() {
    let app = spawn_app().await;
    let err = app
        .client
        .clone()
        .get_shipment(GetShipmentRequest { lookup: None })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    for (field, lookup) in [
        ("shipment_id", Lookup::ShipmentId("nope".into())),
        ("order_id", Lookup::OrderId("nope".into())),
    ] {
        let err = app
            .client
            .clone()
            .get_shipment(GetShipmentRequest {
                lookup: Some(lookup),
            })
            .await
            .unwrap_err();
        assert_names(&err, field, field);
    }
    for (field, request) in [
        (
            "shipment_id",
            CancelShipmentRequest {
                shipment_id: "nope".into(),
                reason: String::new(),
            },
        ),
        (
            "reason",
            CancelShipmentRequest {
                shipment_id: Uuid::now_v7().to_string(),
                reason: "x".repeat(501),
            },
        ),
    ] {
        let err = app
            .client
            .clone()
            .cancel_shipment(request)
            .await
            .unwrap_err();
        assert_names(&err, field, field);
    }
    app.shutdown().await;
}
