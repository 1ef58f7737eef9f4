//! `shop.inventory.v1.InventoryService` over the store, and protobuf <-> domain mapping.
//!
//! Field rules (uuids, quantities 1..10000, 1..100 lines, deltas, key lengths) are enforced by
//! the runtime's validation layer from the contract before these handlers run; what the
//! contract cannot say (a product on two lines) is checked here.

use shop_proto::inventory::{self as pb, inventory_service_server::InventoryService};
use shop_runtime::convert::timestamp;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    domain::{Line, NewReservation, Reservation, ReservationStatus, Stock},
    error::InventoryError,
    events::line_to_pb,
    store::{Adjustment, Finish, PgInventoryStore},
};

/// The tonic service.
#[derive(Debug, Clone)]
pub struct InventoryGrpc {
    store: PgInventoryStore,
    reservation_ttl_secs: f64,
}

impl InventoryGrpc {
    pub fn new(store: PgInventoryStore, reservation_ttl_secs: f64) -> Self {
        Self {
            store,
            reservation_ttl_secs,
        }
    }
}

/// The protobuf name of a status, as in the `ErrorInfo` of a refused Release or Commit.
pub(crate) fn status_name(status: ReservationStatus) -> &'static str {
    status_to_pb(status).as_str_name()
}

fn status_to_pb(status: ReservationStatus) -> pb::ReservationStatus {
    match status {
        ReservationStatus::Reserved => pb::ReservationStatus::Reserved,
        ReservationStatus::Released => pb::ReservationStatus::Released,
        ReservationStatus::Committed => pb::ReservationStatus::Committed,
    }
}

fn stock_to_pb(stock: Stock) -> pb::Stock {
    pb::Stock {
        product_id: stock.product_id.to_string(),
        on_hand: stock.on_hand,
        available: stock.available,
        reserved: stock.reserved,
        committed: stock.committed,
        updated_at: stock.updated_at.map(timestamp),
    }
}

fn reservation_to_pb(reservation: &Reservation) -> pb::Reservation {
    pb::Reservation {
        reservation_id: reservation.id.to_string(),
        order_id: reservation.order_id.to_string(),
        status: status_to_pb(reservation.status).into(),
        lines: reservation.lines.iter().map(line_to_pb).collect(),
        created_at: Some(timestamp(reservation.created_at)),
        updated_at: Some(timestamp(reservation.updated_at)),
        expires_at: Some(timestamp(reservation.expires_at)),
    }
}

fn parse_id(field: &str, value: &str) -> Result<Uuid, InventoryError> {
    Uuid::parse_str(value).map_err(|_| InventoryError::invalid(field, "must be a UUID"))
}

fn new_reservation(request: &pb::ReserveRequest) -> Result<NewReservation, InventoryError> {
    let id = parse_id("reservation_id", &request.reservation_id)?;
    let order_id = parse_id("order_id", &request.order_id)?;
    let lines = request
        .lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            let product_id = parse_id(&format!("lines[{i}].product_id"), &line.product_id)?;
            if line.quantity <= 0 {
                return Err(InventoryError::invalid(
                    format!("lines[{i}].quantity"),
                    "must be greater than 0",
                ));
            }
            Ok(Line {
                product_id,
                quantity: i64::from(line.quantity),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if lines.is_empty() {
        return Err(InventoryError::invalid("lines", "at least one line"));
    }
    NewReservation::new(id, order_id, lines).map_err(|dup| {
        InventoryError::invalid(
            format!("lines[{}].product_id", dup.index),
            format!("the same product as lines[{}]", dup.first),
        )
    })
}

#[tonic::async_trait]
impl InventoryService for InventoryGrpc {
    async fn get_stock(
        &self,
        request: Request<pb::GetStockRequest>,
    ) -> Result<Response<pb::GetStockResponse>, Status> {
        let id = parse_id("product_id", &request.get_ref().product_id)?;
        let stock = self.store.get_stock(id).await?;
        Ok(Response::new(pb::GetStockResponse {
            stock: Some(stock_to_pb(stock)),
        }))
    }

    async fn batch_get_stock(
        &self,
        request: Request<pb::BatchGetStockRequest>,
    ) -> Result<Response<pb::BatchGetStockResponse>, Status> {
        let ids = request
            .get_ref()
            .product_ids
            .iter()
            .enumerate()
            .map(|(i, id)| parse_id(&format!("product_ids[{i}]"), id))
            .collect::<Result<Vec<_>, _>>()?;
        let stocks = self.store.batch_get_stock(&ids).await?;
        Ok(Response::new(pb::BatchGetStockResponse {
            stocks: stocks.into_iter().map(stock_to_pb).collect(),
        }))
    }

    async fn adjust_stock(
        &self,
        request: Request<pb::AdjustStockRequest>,
    ) -> Result<Response<pb::AdjustStockResponse>, Status> {
        let request = request.into_inner();
        if request.delta == 0 {
            return Err(InventoryError::invalid("delta", "must not be zero").into());
        }
        let adjustment = Adjustment {
            product_id: parse_id("product_id", &request.product_id)?,
            delta: request.delta,
            reason: request.reason,
            key: request.idempotency_key,
        };
        let stock = self.store.adjust(&adjustment).await?;
        Ok(Response::new(pb::AdjustStockResponse {
            stock: Some(stock_to_pb(stock)),
        }))
    }

    async fn reserve(
        &self,
        request: Request<pb::ReserveRequest>,
    ) -> Result<Response<pb::ReserveResponse>, Status> {
        let new = new_reservation(request.get_ref())?;
        let reservation = self.store.reserve(&new, self.reservation_ttl_secs).await?;
        Ok(Response::new(pb::ReserveResponse {
            reservation: Some(reservation_to_pb(&reservation)),
        }))
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        let request = request.get_ref();
        let id = parse_id("reservation_id", &request.reservation_id)?;
        let finish = Finish::Release {
            reason: &request.reason,
        };
        let reservation = self.store.finish(id, finish).await?;
        Ok(Response::new(pb::ReleaseResponse {
            reservation: Some(reservation_to_pb(&reservation)),
        }))
    }

    async fn commit(
        &self,
        request: Request<pb::CommitRequest>,
    ) -> Result<Response<pb::CommitResponse>, Status> {
        let id = parse_id("reservation_id", &request.get_ref().reservation_id)?;
        let reservation = self.store.finish(id, Finish::Commit).await?;
        Ok(Response::new(pb::CommitResponse {
            reservation: Some(reservation_to_pb(&reservation)),
        }))
    }
}
