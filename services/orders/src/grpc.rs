//! `shop.orders.v1.OrderService`: the commands (PlaceOrder, CancelOrder) decided against the
//! order's folded events, the queries (GetOrder, ListOrders) on the read model, and WatchOrder
//! on the event stream.
//!
//! Field rules (uuids, 1..100 lines, quantities, the address, the token, page sizes) are
//! enforced by the runtime's validation layer from the contract before these handlers run;
//! what the contract cannot say (a product on two lines, unknown products, mixed currencies)
//! is checked here, before anything is written.

use shop_runtime::authz::{require_owner, verified_user};
use std::collections::HashMap;

use serde_json::json;
use shop_proto::{
    catalog::BatchGetProductsRequest,
    common::PageCursor,
    orders::{self as pb, order_service_server::OrderService},
};
use shop_runtime::{
    CancellationToken,
    convert::timestamp,
    page_token::{self, filter_hash},
};
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    clients::Clients,
    convert::{address_from_pb, money_from_pb, order_to_pb, status_from_pb},
    domain::{CancelDecision, Line, Money, Order, OrderEvent, Recorded},
    error::OrdersError,
    saga::{ORDER_SAGA, OrderSaga, UndoSaga},
    store::{Announce, Change, Changed, OrderKey, PgOrderStore, Placing, SagaStart},
    watch::{ChangeFeed, RESYNC, Subscription},
};

const DEFAULT_PAGE_SIZE: u32 = 20;
const MAX_PAGE_SIZE: u32 = 100;

/// The tonic service.
#[derive(Debug, Clone)]
pub struct OrdersGrpc {
    store: PgOrderStore,
    clients: Clients,
    feed: ChangeFeed,
    stopping: CancellationToken,
}

fn parse_id(field: &str, value: &str) -> Result<Uuid, OrdersError> {
    Uuid::parse_str(value).map_err(|_| OrdersError::invalid(field, "must be a UUID"))
}

/// A cart line, checked.
struct CartLine {
    product_id: Uuid,
    quantity: i32,
}

fn cart(request: &pb::PlaceOrderRequest) -> Result<Vec<CartLine>, OrdersError> {
    let mut seen: HashMap<Uuid, usize> = HashMap::with_capacity(request.lines.len());
    let mut lines = Vec::with_capacity(request.lines.len());
    for (i, line) in request.lines.iter().enumerate() {
        let field = format!("lines[{i}].product_id");
        let product_id = parse_id(&field, &line.product_id)?;
        if let Some(first) = seen.insert(product_id, i) {
            return Err(OrdersError::invalid(
                field,
                format!("the product is on lines[{first}] too; order it on one line"),
            ));
        }
        if line.quantity <= 0 {
            return Err(OrdersError::invalid(
                format!("lines[{i}].quantity"),
                "must be positive",
            ));
        }
        lines.push(CartLine {
            product_id,
            quantity: line.quantity,
        });
    }
    if lines.is_empty() {
        return Err(OrdersError::invalid(
            "lines",
            "an order has at least one line",
        ));
    }
    Ok(lines)
}

/// The cart as a retry is compared: lines, address and token.
fn request_document(request: &pb::PlaceOrderRequest) -> serde_json::Value {
    let lines: Vec<_> = request
        .lines
        .iter()
        .map(|l| json!([l.product_id.to_lowercase(), l.quantity]))
        .collect();
    let address = request.shipping_address.as_ref().map(address_from_pb);
    json!({
        "lines": lines,
        "address": serde_json::to_value(address).unwrap_or_default(),
        "payment_method_token": request.payment_method_token,
    })
}

impl OrdersGrpc {
    pub fn new(
        store: PgOrderStore,
        clients: Clients,
        feed: ChangeFeed,
        stopping: CancellationToken,
    ) -> Self {
        Self {
            store,
            clients,
            feed,
            stopping,
        }
    }

    /// Prices the cart with one catalog call.
    async fn price(&self, cart: &[CartLine]) -> Result<(Vec<Line>, Money), OrdersError> {
        let request = BatchGetProductsRequest {
            product_ids: cart.iter().map(|l| l.product_id.to_string()).collect(),
        };
        let products = self
            .clients
            .catalog
            .clone()
            .batch_get_products(request)
            .await
            .map_err(|status| OrdersError::Unavailable {
                dependency: "catalog",
                detail: format!("{:?}: {}", status.code(), status.message()),
            })?
            .into_inner()
            .products;
        let by_id: HashMap<&str, &shop_proto::catalog::Product> = products
            .iter()
            .map(|p| (p.product_id.as_str(), p))
            .collect();
        let mut lines = Vec::with_capacity(cart.len());
        let mut total: Option<(i128, String)> = None;
        for (i, item) in cart.iter().enumerate() {
            let field = format!("lines[{i}].product_id");
            let product = by_id
                .get(item.product_id.to_string().as_str())
                .ok_or_else(|| OrdersError::invalid(&field, "no such product in the catalog"))?;
            let unit_price = product
                .price
                .as_ref()
                .map(money_from_pb)
                .ok_or_else(|| OrdersError::precondition(&field, "the product has no price"))?;
            let line_total = unit_price
                .times(item.quantity)
                .ok_or_else(|| OrdersError::invalid(format!("lines[{i}].quantity"), "too large"))?;
            let (sum, currency) = total.get_or_insert_with(|| (0, unit_price.currency.clone()));
            if *currency != unit_price.currency {
                return Err(OrdersError::precondition(
                    field,
                    format!(
                        "priced in {}, the order's other lines in {currency}: one currency per order",
                        unit_price.currency
                    ),
                ));
            }
            *sum += line_total.total_nanos();
            lines.push(Line {
                product_id: item.product_id,
                sku: product.sku.clone(),
                name: product.name.clone(),
                quantity: item.quantity,
                unit_price,
                line_total,
            });
        }
        let (sum, currency) = total.ok_or_else(|| OrdersError::invalid("lines", "empty"))?;
        let total = Money::from_nanos(sum, &currency)
            .ok_or_else(|| OrdersError::invalid("lines", "the order total is too large"))?;
        Ok((lines, total))
    }

    async fn place(&self, request: pb::PlaceOrderRequest) -> Result<Order, OrdersError> {
        let customer_id = parse_id("customer_id", &request.customer_id)?;
        let cart = cart(&request)?;
        let address = request
            .shipping_address
            .as_ref()
            .map(address_from_pb)
            .ok_or_else(|| OrdersError::invalid("shipping_address", "is required"))?;
        let key = OrderKey {
            customer_id,
            key: request.idempotency_key.clone(),
            request: request_document(&request),
        };
        // A retry answers from the key without calling the catalog again.
        if let Some(found) = self.store.find_key(&key).await? {
            return placed(found, &key);
        }
        let (lines, total) = self.price(&cart).await?;
        let id = Uuid::now_v7();
        let placed_event = OrderEvent::Placed {
            customer_id,
            lines,
            total,
            address,
            reservation_id: Uuid::now_v7(),
        };
        let order = Order::fold(
            id,
            &[Recorded {
                version: 1,
                occurred_at: crate::domain::now(),
                event: placed_event.clone(),
            }],
        )?;
        let saga = OrderSaga::for_order(&order, &request.payment_method_token);
        let change = Change {
            events: vec![placed_event],
            announce: vec![Announce::Placed],
            saga: Some(SagaStart::new(ORDER_SAGA, id, &saga)?),
        };
        let placing = self.store.place(&key, &order, &change).await?;
        placed(placing, &key)
    }

    /// The order `request` names (its `order_id` field), if the caller may see it: NOT_FOUND
    /// when there is none, PERMISSION_DENIED when a user's token names another customer.
    async fn owned_order<T>(&self, request: &Request<T>, order_id: &str) -> Result<Order, Status> {
        let order_id = parse_id("order_id", order_id)?;
        let order = self
            .store
            .get(order_id)
            .await?
            .ok_or(OrdersError::NotFound(order_id))?;
        require_owner(request, "order_id", &order.customer_id.to_string())?;
        Ok(order)
    }

    async fn cancel(&self, request: pb::CancelOrderRequest) -> Result<Order, OrdersError> {
        let order_id = parse_id("order_id", &request.order_id)?;
        let reason = request.reason;
        let changed = self
            .store
            .change(order_id, None, None, |order| {
                match order.decide_cancel(&reason)? {
                    CancelDecision::AlreadyCancelled => Ok(None),
                    CancelDecision::Cancel { event, refund } => {
                        let saga = if refund {
                            let undo = UndoSaga {
                                order: OrderSaga::for_order(order, ""),
                                settle: true,
                                restock: true,
                                reason: format!("order {} cancelled by the customer", order.id),
                            };
                            Some(undo.start()?)
                        } else {
                            None
                        };
                        Ok(Some(Change {
                            events: vec![event],
                            announce: vec![Announce::Cancelled],
                            saga,
                        }))
                    }
                }
            })
            .await?;
        match changed {
            Changed::Order(order) => Ok(order),
            Changed::SeenBefore => Err(OrdersError::NotFound(order_id)),
        }
    }
}

fn placed(placing: Placing, key: &OrderKey) -> Result<Order, OrdersError> {
    match placing {
        Placing::Placed(order) | Placing::Existing(order) => Ok(order),
        Placing::KeyReused => Err(OrdersError::KeyReused(key.key.clone())),
    }
}

fn list_filter(customer_id: Uuid, status: i32) -> String {
    format!("{customer_id}|{status}")
}

type WatchItem = Result<pb::WatchOrderResponse, Status>;

/// Streams `order` and then every change of it until it is final, the client goes away or the
/// server stops.
async fn follow(
    store: PgOrderStore,
    mut order: Order,
    changes: Subscription,
    out: mpsc::Sender<WatchItem>,
    stopping: CancellationToken,
) {
    let send = |order: &Order| pb::WatchOrderResponse {
        order: Some(order_to_pb(order)),
    };
    if out.send(Ok(send(&order))).await.is_err() || order.status.is_final() {
        return;
    }
    let mut resync = tokio::time::interval_at(tokio::time::Instant::now() + RESYNC, RESYNC);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = out.closed() => return,
            () = stopping.cancelled() => {
                let _ = out.send(Err(Status::unavailable("server shutting down; watch again"))).await;
                return;
            }
            () = changes.changed() => {}
            _ = resync.tick() => {}
        }
        let events = match store.events_after(order.id, order.version).await {
            Ok(events) => events,
            Err(err) => {
                let _ = out.send(Err(Status::from(err))).await;
                return;
            }
        };
        for event in &events {
            if let Err(err) = order.apply(event) {
                let _ = out.send(Err(Status::from(OrdersError::from(err)))).await;
                return;
            }
            if out.send(Ok(send(&order))).await.is_err() || order.status.is_final() {
                return;
            }
        }
    }
}

#[tonic::async_trait]
impl OrderService for OrdersGrpc {
    async fn place_order(
        &self,
        request: Request<pb::PlaceOrderRequest>,
    ) -> Result<Response<pb::PlaceOrderResponse>, Status> {
        require_owner(&request, "customer_id", &request.get_ref().customer_id)?;
        let order = self.place(request.into_inner()).await?;
        Ok(Response::new(pb::PlaceOrderResponse {
            order: Some(order_to_pb(&order)),
        }))
    }

    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::GetOrderResponse>, Status> {
        let order = self
            .owned_order(&request, &request.get_ref().order_id)
            .await?;
        Ok(Response::new(pb::GetOrderResponse {
            order: Some(order_to_pb(&order)),
        }))
    }

    async fn list_orders(
        &self,
        request: Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::ListOrdersResponse>, Status> {
        require_owner(&request, "customer_id", &request.get_ref().customer_id)?;
        let request = request.into_inner();
        let customer_id = parse_id("customer_id", &request.customer_id)?;
        let status = pb::OrderStatus::try_from(request.status)
            .map_err(|_| OrdersError::invalid("status", "unknown status"))?;
        let filter = list_filter(customer_id, request.status);
        let cursor = page_token::decode::<PageCursor>(&request.page_token)
            .map_err(|_| OrdersError::invalid("page_token", "malformed page token"))?;
        let after = match cursor {
            None => None,
            Some(cursor) => {
                if cursor.filter_hash != filter_hash(&filter) {
                    return Err(OrdersError::invalid(
                        "page_token",
                        "page token was issued for a different query",
                    )
                    .into());
                }
                let malformed = || OrdersError::invalid("page_token", "malformed page token");
                let at = cursor.after_time.ok_or_else(malformed)?;
                let nanos = i128::from(at.seconds) * 1_000_000_000 + i128::from(at.nanos);
                let at =
                    OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|_| malformed())?;
                let id = Uuid::parse_str(&cursor.after_id).map_err(|_| malformed())?;
                Some((at, id))
            }
        };
        let limit = page_token::page_size(request.page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE);
        let page = self
            .store
            .list(customer_id, status_from_pb(status), after, limit)
            .await?;
        let next_page_token = match page.orders.last() {
            Some(last) if page.has_more => page_token::encode(&PageCursor {
                after_time: Some(timestamp(last.created_at)),
                after_id: last.id.to_string(),
                filter_hash: filter_hash(&filter),
                ..PageCursor::default()
            }),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListOrdersResponse {
            orders: page.orders.iter().map(order_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn cancel_order(
        &self,
        request: Request<pb::CancelOrderRequest>,
    ) -> Result<Response<pb::CancelOrderResponse>, Status> {
        // Only a user's call needs the owner check (and its read) before the cancel.
        if verified_user(&request).is_some() {
            self.owned_order(&request, &request.get_ref().order_id)
                .await?;
        }
        let order = self.cancel(request.into_inner()).await?;
        Ok(Response::new(pb::CancelOrderResponse {
            order: Some(order_to_pb(&order)),
        }))
    }

    type WatchOrderStream = ReceiverStream<WatchItem>;

    async fn watch_order(
        &self,
        request: Request<pb::WatchOrderRequest>,
    ) -> Result<Response<Self::WatchOrderStream>, Status> {
        let order_id = parse_id("order_id", &request.get_ref().order_id)?;
        // Subscribed before reading, so no change between the read and the first wait is missed.
        let changes = self.feed.subscribe(order_id);
        let order = self
            .store
            .load(order_id)
            .await?
            .ok_or(OrdersError::NotFound(order_id))?;
        require_owner(&request, "order_id", &order.customer_id.to_string())?;
        let (out, stream) = mpsc::channel(16);
        tokio::spawn(follow(
            self.store.clone(),
            order,
            changes,
            out,
            self.stopping.clone(),
        ));
        Ok(Response::new(ReceiverStream::new(stream)))
    }
}
