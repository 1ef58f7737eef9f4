//! PlaceOrder's contract: idempotency by (customer, key), prices from the catalog, clear
//! errors before anything is written; GetOrder and ListOrders on the read model.

use std::time::Duration;

use shop_proto::orders::{ListOrdersRequest, OrderStatus};
use tonic::Code;

use crate::helpers::{Mesh, place_request, uuid, violated_fields};

#[tokio::test]
async fn fifty_concurrent_calls_with_one_key_place_one_order_and_one_saga() {
    let mut mesh = Mesh::start().await;
    let mug = mesh.product(9, 0, 100).await;
    let (key, customer) = (uuid(), uuid());
    let calls = (0..50).map(|_| {
        let mut client = mesh.orders();
        let request = place_request(&key, &customer, &[(&mug, 1)], "tok_visa");
        tokio::spawn(async move { client.place_order(request).await })
    });
    let mut ids = std::collections::BTreeSet::new();
    for call in futures::future::join_all(calls).await {
        let order = call
            .expect("task")
            .expect("place")
            .into_inner()
            .order
            .expect("order");
        ids.insert(order.order_id);
    }
    assert_eq!(ids.len(), 1, "every retry returned the same order");
    let order_id = ids.into_iter().next().expect("one");
    mesh.wait_status(&order_id, OrderStatus::Confirmed, Duration::from_secs(30))
        .await;
    let (orders, runs, events): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM saga_runs), \
                (SELECT count(*) FROM order_events WHERE type = 'Placed')",
    )
    .fetch_one(&mesh.orders_pool)
    .await
    .expect("counts");
    assert_eq!((orders, runs, events), (1, 1, 1));
    assert_eq!(mesh.stock(&mug).await.committed, 1, "stock taken once");

    // The same key with another cart is refused, naming the key.
    let other = mesh
        .orders()
        .place_order(place_request(&key, &customer, &[(&mug, 2)], "tok_visa"))
        .await
        .expect_err("another cart");
    assert_eq!(other.code(), Code::AlreadyExists);
    assert_eq!(violated_fields(&other), ["idempotency_key"]);
    // The key is the customer's: another customer may use it.
    let theirs = mesh
        .orders()
        .place_order(place_request(&key, &uuid(), &[(&mug, 2)], "tok_visa"))
        .await
        .expect("another customer's key")
        .into_inner()
        .order
        .expect("order");
    assert_ne!(theirs.order_id, order_id);
    mesh.finish().await;
}

#[tokio::test]
async fn bad_carts_are_refused_naming_the_line_and_nothing_is_written() {
    let mut mesh = Mesh::start().await;
    let mug = mesh.product(9, 0, 10).await;
    let unknown = uuid();
    let cases: Vec<(Vec<(&str, i32)>, &str)> = vec![
        (vec![(&mug, 1), (&unknown, 1)], "lines[1].product_id"),
        (vec![(&mug, 1), (&mug, 2)], "lines[1].product_id"),
        (vec![(&mug, 0)], "lines[0].quantity"),
        (vec![("not-a-uuid", 1)], "lines[0].product_id"),
    ];
    for (lines, field) in cases {
        let status = mesh
            .orders()
            .place_order(place_request(&uuid(), &uuid(), &lines, "tok_visa"))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert_eq!(violated_fields(&status), [field], "{status:?}");
    }
    let mut no_token = place_request(&uuid(), &uuid(), &[(&mug, 1)], "");
    let status = mesh
        .orders()
        .place_order(no_token.clone())
        .await
        .expect_err("no token");
    assert_eq!(violated_fields(&status), ["payment_method_token"]);
    no_token.payment_method_token = "tok_visa".into();
    no_token.idempotency_key = "nul\u{0}key".into();
    let status = mesh.orders().place_order(no_token).await.expect_err("NUL");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["idempotency_key"]);
    let written: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM order_events) + (SELECT count(*) FROM order_keys) \
              + (SELECT count(*) FROM saga_runs)",
    )
    .fetch_one(&mesh.orders_pool)
    .await
    .expect("count");
    assert_eq!(written, 0, "a refused order leaves nothing behind");
    mesh.finish().await;
}

#[tokio::test]
async fn a_customers_orders_page_newest_first_and_filter_by_status() {
    let mut mesh = Mesh::start().await;
    let mug = mesh.product(9, 0, 100).await;
    let customer = uuid();
    let mut placed = Vec::new();
    for _ in 0..5 {
        let order = mesh
            .orders()
            .place_order(place_request(&uuid(), &customer, &[(&mug, 1)], "tok_visa"))
            .await
            .expect("place")
            .into_inner()
            .order
            .expect("order");
        placed.push(order.order_id);
    }
    let declined = mesh
        .orders()
        .place_order(place_request(
            &uuid(),
            &customer,
            &[(&mug, 1)],
            "tok_decline",
        ))
        .await
        .expect("place")
        .into_inner()
        .order
        .expect("order");
    mesh.wait_status(
        &declined.order_id,
        OrderStatus::Cancelled,
        Duration::from_secs(30),
    )
    .await;
    let mut listed = Vec::new();
    let mut token = String::new();
    loop {
        let page = mesh
            .orders()
            .list_orders(ListOrdersRequest {
                customer_id: customer.clone(),
                page_size: 2,
                page_token: token.clone(),
                status: 0,
            })
            .await
            .expect("list")
            .into_inner();
        listed.extend(page.orders.into_iter().map(|o| o.order_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut expected = placed.clone();
    expected.push(declined.order_id.clone());
    expected.reverse();
    assert_eq!(listed, expected, "newest first, every order once");

    let cancelled = mesh
        .orders()
        .list_orders(ListOrdersRequest {
            customer_id: customer.clone(),
            page_size: 10,
            page_token: String::new(),
            status: OrderStatus::Cancelled as i32,
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(cancelled.orders.len(), 1);
    assert_eq!(cancelled.orders[0].order_id, declined.order_id);

    let foreign = mesh
        .orders()
        .list_orders(ListOrdersRequest {
            customer_id: uuid(),
            page_size: 2,
            page_token: token_of_first_page(&mesh, &customer).await,
            status: 0,
        })
        .await
        .expect_err("a token for another customer");
    assert_eq!(foreign.code(), Code::InvalidArgument);
    let missing = mesh
        .orders()
        .get_order(shop_proto::orders::GetOrderRequest { order_id: uuid() })
        .await
        .expect_err("unknown order");
    assert_eq!(missing.code(), Code::NotFound);
    mesh.finish().await;
}

async fn token_of_first_page(mesh: &Mesh, customer: &str) -> String {
    mesh.orders()
        .list_orders(ListOrdersRequest {
            customer_id: customer.into(),
            page_size: 1,
            page_token: String::new(),
            status: 0,
        })
        .await
        .expect("list")
        .into_inner()
        .next_page_token
}
