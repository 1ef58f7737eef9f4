//! Shipping's owner rule over real mutual TLS: a shipment is its order's customer's, as the
//! `OrderConfirmed` event that created it says; another user's token may neither read nor
//! cancel it, and the refused cancel leaves it as it was.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::time::Duration;

use shop_events::{EventEnvelope, EventPublisher, StreamSpec};
use shop_proto::{
    common::{Money, PostalAddress},
    identity::{LoginRequest, RegisterRequest, identity_service_client::IdentityServiceClient},
    orders::{OrderConfirmed, OrderLine},
    shipping::{
        CancelShipmentRequest, GetShipmentRequest, ShipmentStatus, get_shipment_request::Lookup,
        shipping_service_client::ShippingServiceClient,
    },
};
use shop_testkit::{Nats, Postgres, TestPki};
use tonic::Code;
use uuid::Uuid;

fn bearing<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

fn confirmed(order_id: Uuid, customer_id: &str) -> OrderConfirmed {
    let price = Money {
        units: 9,
        nanos: 0,
        currency_code: "EUR".into(),
    };
    OrderConfirmed {
        order_id: order_id.to_string(),
        customer_id: customer_id.to_owned(),
        lines: vec![OrderLine {
            product_id: Uuid::now_v7().to_string(),
            sku: "MUG-1".into(),
            name: "Mug".into(),
            quantity: 1,
            unit_price: Some(price.clone()),
            line_total: None,
        }],
        total: Some(price),
        shipping_address: Some(PostalAddress {
            recipient_name: "Ada Lovelace".into(),
            line1: "Unter den Linden 1".into(),
            line2: String::new(),
            city: "Berlin".into(),
            region: String::new(),
            postal_code: "10117".into(),
            country_code: "DE".into(),
        }),
        payment_id: Uuid::now_v7().to_string(),
        reservation_id: Uuid::now_v7().to_string(),
        version: 5,
        occurred_at: None,
    }
}

#[tokio::test]
async fn a_user_reads_and_cancels_only_the_shipments_of_their_own_orders() {
    let pki = TestPki::new().unwrap();
    let postgres = Postgres::start().await.unwrap();
    let nats = Nats::start().await.unwrap();
    let identity = shop_e2e::start_identity_with(
        &postgres,
        &nats,
        shop_e2e::tls_server(&pki, "identity").unwrap(),
    )
    .await
    .unwrap();
    let mut server = shop_e2e::tls_server(&pki, "shipping").unwrap();
    server.user_tokens.identity_url = Some(format!("http://{}", identity.addr));
    let shipping = shop_e2e::start_shipping_with(&postgres, &nats, server)
        .await
        .unwrap();

    let users = IdentityServiceClient::new(shop_e2e::user_channel(&pki, identity.addr).unwrap());
    let sign_up = |email: &'static str| {
        let mut users = users.clone();
        async move {
            let user_id = users
                .register(RegisterRequest {
                    email: email.into(),
                    password: "correct horse battery".into(),
                    display_name: email.into(),
                })
                .await
                .unwrap()
                .into_inner()
                .user
                .unwrap()
                .user_id;
            let token = users
                .login(LoginRequest {
                    email: email.into(),
                    password: "correct horse battery".into(),
                })
                .await
                .unwrap()
                .into_inner()
                .access_token;
            (user_id, token)
        }
    };
    let (ada, ada_token) = sign_up("ada@example.com").await;
    let (_, bob_token) = sign_up("bob@example.com").await;

    // Ada's order is confirmed: orders' relay would publish this.
    let js = shop_events::connect(&nats.url(), "orders-test")
        .await
        .unwrap();
    StreamSpec::for_context("orders").ensure(&js).await.unwrap();
    let order_id = Uuid::now_v7();
    EventPublisher::new(js)
        .publish(&EventEnvelope::new(confirmed(order_id, &ada)))
        .await
        .unwrap();

    let mut client =
        ShippingServiceClient::new(shop_e2e::user_channel(&pki, shipping.addr).unwrap());
    let by_order = GetShipmentRequest {
        lookup: Some(Lookup::OrderId(order_id.to_string())),
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let shipment = loop {
        match client
            .get_shipment(bearing(by_order.clone(), Some(&ada_token)))
            .await
        {
            Ok(found) => break found.into_inner().shipment.unwrap(),
            // Not there until the consumer has applied the event; anything else is a failure.
            Err(status) => {
                assert_eq!(
                    status.code(),
                    Code::NotFound,
                    "Ada reading her shipment: {status}"
                );
                assert!(tokio::time::Instant::now() < deadline, "no shipment");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(shipment.customer_id, ada);

    let get_code = |request: GetShipmentRequest, token: Option<&str>| {
        let mut client = client.clone();
        let token = token.map(str::to_owned);
        async move {
            match client
                .get_shipment(bearing(request, token.as_deref()))
                .await
            {
                Ok(_) => Code::Ok,
                Err(status) => status.code(),
            }
        }
    };
    let bob = bob_token.as_str();
    assert_eq!(
        get_code(by_order.clone(), Some(bob)).await,
        Code::PermissionDenied,
        "Bob reading Ada's shipment by her order"
    );
    let by_id = GetShipmentRequest {
        lookup: Some(Lookup::ShipmentId(shipment.shipment_id.clone())),
    };
    assert_eq!(
        get_code(by_id.clone(), Some(bob)).await,
        Code::PermissionDenied
    );
    assert_eq!(get_code(by_id.clone(), None).await, Code::Unauthenticated);

    let cancel = CancelShipmentRequest {
        shipment_id: shipment.shipment_id.clone(),
        reason: "not mine".into(),
    };
    let refused = client
        .cancel_shipment(bearing(cancel.clone(), Some(bob)))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused}");
    let still = client
        .get_shipment(bearing(by_id.clone(), Some(&ada_token)))
        .await
        .unwrap()
        .into_inner()
        .shipment
        .unwrap();
    assert_eq!(
        still.status(),
        ShipmentStatus::Scheduled,
        "the refused cancel wrote nothing"
    );

    let cancelled = client
        .cancel_shipment(bearing(cancel, Some(&ada_token)))
        .await
        .unwrap()
        .into_inner()
        .shipment
        .unwrap();
    assert_eq!(cancelled.status(), ShipmentStatus::Cancelled);
}
