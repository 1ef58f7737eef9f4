//! `shop.shipping.v1.ShippingService` over the store, and protobuf <-> domain mapping.
//!
//! Field rules (uuids, quantities 1..1000, 1..100 lines, the address, the currency pattern, the
//! lookup oneof) are enforced by the runtime's validation layer from the contract before these
//! handlers run; what the contract cannot say (a currency the shop does not trade in) is
//! checked here.

use shop_proto::{
    common::Money,
    shipping::{self as pb, shipping_service_server::ShippingService},
};
use shop_runtime::authz::require_owner;
use shop_runtime::convert::timestamp;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    domain::{self, Cost, Line, Shipment, ShipmentStatus},
    error::ShippingError,
    events::{address_to_pb, line_to_pb},
    store::PgShippingStore,
};

/// The tonic service.
#[derive(Debug, Clone)]
pub struct ShippingGrpc {
    store: PgShippingStore,
}

impl ShippingGrpc {
    pub fn new(store: PgShippingStore) -> Self {
        Self { store }
    }
}

fn status_to_pb(status: ShipmentStatus) -> pb::ShipmentStatus {
    match status {
        ShipmentStatus::Scheduled => pb::ShipmentStatus::Scheduled,
        ShipmentStatus::InTransit => pb::ShipmentStatus::InTransit,
        ShipmentStatus::Delivered => pb::ShipmentStatus::Delivered,
        ShipmentStatus::Cancelled => pb::ShipmentStatus::Cancelled,
    }
}

fn money(cost: &Cost) -> Money {
    let (units, nanos) = cost.units_and_nanos();
    Money {
        units,
        nanos,
        currency_code: cost.currency.code.to_owned(),
    }
}

fn shipment_to_pb(shipment: &Shipment) -> pb::Shipment {
    pb::Shipment {
        shipment_id: shipment.id.to_string(),
        order_id: shipment.order_id.to_string(),
        customer_id: shipment.customer_id.clone(),
        status: status_to_pb(shipment.status).into(),
        carrier: shipment.carrier.clone(),
        tracking_number: shipment.tracking_number.clone(),
        address: Some(address_to_pb(&shipment.address)),
        lines: shipment.lines.iter().map(line_to_pb).collect(),
        cost: Some(money(&shipment.cost)),
        estimated_delivery_at: Some(timestamp(shipment.estimated_delivery_at)),
        delivered_at: shipment.delivered_at.map(timestamp),
        created_at: Some(timestamp(shipment.created_at)),
        updated_at: Some(timestamp(shipment.updated_at)),
    }
}

fn parse_id(field: &str, value: &str) -> Result<Uuid, ShippingError> {
    Uuid::parse_str(value).map_err(|_| ShippingError::invalid(field, "must be a UUID"))
}

/// The quote a request asks for, checked.
fn quote(request: &pb::QuoteRequest) -> Result<domain::Quote, ShippingError> {
    let address = request
        .address
        .as_ref()
        .ok_or_else(|| ShippingError::invalid("address", "is required"))?;
    if request.lines.is_empty() {
        return Err(ShippingError::invalid("lines", "at least one line"));
    }
    let lines = request
        .lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            let product_id = parse_id(&format!("lines[{i}].product_id"), &line.product_id)?;
            if line.quantity <= 0 {
                return Err(ShippingError::invalid(
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
    let currency = if request.currency_code.is_empty() {
        domain::default_currency()
    } else {
        domain::traded_currency(&request.currency_code).ok_or_else(|| {
            ShippingError::invalid(
                "currency_code",
                format!(
                    "{} is not a currency the shop trades in",
                    request.currency_code
                ),
            )
        })?
    };
    Ok(domain::quote(&lines, &address.country_code, currency))
}

#[tonic::async_trait]
impl ShippingService for ShippingGrpc {
    async fn quote(
        &self,
        request: Request<pb::QuoteRequest>,
    ) -> Result<Response<pb::QuoteResponse>, Status> {
        let quote = quote(request.get_ref())?;
        Ok(Response::new(pb::QuoteResponse {
            cost: Some(money(&quote.cost)),
            carrier: quote.carrier.to_owned(),
            estimated_delivery_days: quote.delivery_days,
        }))
    }

    async fn get_shipment(
        &self,
        request: Request<pb::GetShipmentRequest>,
    ) -> Result<Response<pb::GetShipmentResponse>, Status> {
        use pb::get_shipment_request::Lookup;
        let (field, shipment) = match &request.get_ref().lookup {
            Some(Lookup::ShipmentId(id)) => (
                "shipment_id",
                self.store.get(parse_id("shipment_id", id)?).await?,
            ),
            Some(Lookup::OrderId(id)) => (
                "order_id",
                self.store.get_by_order(parse_id("order_id", id)?).await?,
            ),
            None => {
                return Err(
                    ShippingError::invalid("lookup", "name a shipment_id or an order_id").into(),
                );
            }
        };
        // A customer sees only the shipments of their own orders.
        require_owner(&request, field, &shipment.customer_id)?;
        Ok(Response::new(pb::GetShipmentResponse {
            shipment: Some(shipment_to_pb(&shipment)),
        }))
    }

    async fn cancel_shipment(
        &self,
        request: Request<pb::CancelShipmentRequest>,
    ) -> Result<Response<pb::CancelShipmentResponse>, Status> {
        let id = parse_id("shipment_id", &request.get_ref().shipment_id)?;
        // The owner rule before any write: a customer cancels only their own shipments.
        let owner = self.store.get(id).await?.customer_id;
        require_owner(&request, "shipment_id", &owner)?;
        let shipment = self.store.cancel(id, &request.get_ref().reason).await?;
        Ok(Response::new(pb::CancelShipmentResponse {
            shipment: Some(shipment_to_pb(&shipment)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;
    use prost_types::method_options::IdempotencyLevel;

    /// Callers retry only what the contract marks safe: the reads, and CancelShipment (a
    /// second cancel is a no-op).
    #[test]
    fn the_contract_says_which_rpcs_may_be_retried() {
        let set = prost_types::FileDescriptorSet::decode(shop_proto::FILE_DESCRIPTOR_SET).unwrap();
        let service = set
            .file
            .iter()
            .filter(|f| f.package() == "shop.shipping.v1")
            .flat_map(|f| f.service.iter())
            .find(|s| s.name() == "ShippingService")
            .unwrap();
        let levels: Vec<(&str, IdempotencyLevel)> = service
            .method
            .iter()
            .map(|m| {
                let level = m
                    .options
                    .as_ref()
                    .map(prost_types::MethodOptions::idempotency_level);
                (
                    m.name(),
                    level.unwrap_or(IdempotencyLevel::IdempotencyUnknown),
                )
            })
            .collect();
        assert_eq!(
            levels,
            vec![
                ("Quote", IdempotencyLevel::NoSideEffects),
                ("GetShipment", IdempotencyLevel::NoSideEffects),
                ("CancelShipment", IdempotencyLevel::Idempotent),
            ]
        );
    }
}
