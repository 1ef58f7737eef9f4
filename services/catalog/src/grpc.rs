//! `shop.catalog.v1.CatalogService` over the store, and protobuf <-> domain mapping.
//!
//! Field rules from the contract (lengths, ranges, currencies, uuids) are enforced by the
//! runtime's validation layer before these handlers run; what is checked here is what the
//! contract cannot say (page tokens, ids parsed into types).

use shop_proto::{
    catalog::{self as pb, catalog_service_server::CatalogService},
    common::{Money as PbMoney, PageCursor},
};
use shop_runtime::convert::timestamp;
use shop_runtime::page_token::{self, filter_hash};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    domain::{Money, NewProduct, PageStart, Product},
    error::CatalogError,
    store::{Page, PgProductStore},
};

const DEFAULT_PAGE_SIZE: u32 = 20;
const MAX_PAGE_SIZE: u32 = 100;
/// Search pages by offset; past this the caller should narrow the query.
const MAX_SEARCH_OFFSET: u32 = 10_000;

/// The tonic service.
#[derive(Debug, Clone)]
pub struct CatalogGrpc {
    store: PgProductStore,
}

impl CatalogGrpc {
    pub fn new(store: PgProductStore) -> Self {
        Self { store }
    }
}

fn parse_id(field: &'static str, value: &str) -> Result<Uuid, CatalogError> {
    Uuid::parse_str(value).map_err(|_| CatalogError::invalid(field, "must be a UUID"))
}

fn money_from_pb(field: &'static str, money: Option<PbMoney>) -> Result<Money, CatalogError> {
    let money = money.ok_or_else(|| CatalogError::invalid(field, "is required"))?;
    Ok(Money {
        units: money.units,
        nanos: money.nanos,
        currency_code: money.currency_code,
    })
}

fn product_to_pb(product: Product) -> pb::Product {
    pb::Product {
        product_id: product.id.to_string(),
        sku: product.sku,
        name: product.name,
        description: product.description,
        category: product.category,
        price: Some(PbMoney {
            units: product.price.units,
            nanos: product.price.nanos,
            currency_code: product.price.currency_code,
        }),
        version: product.version,
        created_at: Some(timestamp(product.created_at)),
        updated_at: Some(timestamp(product.updated_at)),
    }
}

fn decode_cursor(token: &str, filter: &str) -> Result<Option<PageCursor>, CatalogError> {
    let cursor = page_token::decode::<PageCursor>(token)
        .map_err(|_| CatalogError::invalid("page_token", "malformed page token"))?;
    match cursor {
        Some(cursor) if cursor.filter_hash != filter_hash(filter) => Err(CatalogError::invalid(
            "page_token",
            "page token was issued for a different query",
        )),
        other => Ok(other),
    }
}

fn list_start(token: &str, filter: &str) -> Result<PageStart, CatalogError> {
    match decode_cursor(token, filter)? {
        None => Ok(PageStart::First),
        Some(cursor) => Uuid::parse_str(&cursor.after_id)
            .map(PageStart::After)
            .map_err(|_| CatalogError::invalid("page_token", "malformed page token")),
    }
}

fn next_list_token(page: &Page, filter: &str) -> String {
    match page.products.last() {
        Some(last) if page.has_more => page_token::encode(&PageCursor {
            after_id: last.id.to_string(),
            filter_hash: filter_hash(filter),
            ..PageCursor::default()
        }),
        _ => String::new(),
    }
}

#[tonic::async_trait]
impl CatalogService for CatalogGrpc {
    async fn get_product(
        &self,
        request: Request<pb::GetProductRequest>,
    ) -> Result<Response<pb::GetProductResponse>, Status> {
        let id = parse_id("product_id", &request.get_ref().product_id)?;
        let product = self.store.get(id).await?;
        Ok(Response::new(pb::GetProductResponse {
            product: Some(product_to_pb(product)),
        }))
    }

    async fn batch_get_products(
        &self,
        request: Request<pb::BatchGetProductsRequest>,
    ) -> Result<Response<pb::BatchGetProductsResponse>, Status> {
        let ids = request
            .get_ref()
            .product_ids
            .iter()
            .map(|id| parse_id("product_ids", id))
            .collect::<Result<Vec<_>, _>>()?;
        let mut found: std::collections::HashMap<Uuid, Product> = self
            .store
            .batch_get(&ids)
            .await?
            .into_iter()
            .map(|p| (p.id, p))
            .collect();
        let mut response = pb::BatchGetProductsResponse::default();
        for id in ids {
            match found.remove(&id) {
                Some(product) => response.products.push(product_to_pb(product)),
                None => response.not_found_product_ids.push(id.to_string()),
            }
        }
        Ok(Response::new(response))
    }

    async fn list_products(
        &self,
        request: Request<pb::ListProductsRequest>,
    ) -> Result<Response<pb::ListProductsResponse>, Status> {
        let request = request.into_inner();
        let filter = request.category.as_str();
        let start = list_start(&request.page_token, filter)?;
        let limit = page_token::page_size(request.page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE);
        let category = (!filter.is_empty()).then_some(filter);
        let page = self.store.list(category, start, limit).await?;
        let next_page_token = next_list_token(&page, filter);
        Ok(Response::new(pb::ListProductsResponse {
            products: page.products.into_iter().map(product_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn search_products(
        &self,
        request: Request<pb::SearchProductsRequest>,
    ) -> Result<Response<pb::SearchProductsResponse>, Status> {
        let request = request.into_inner();
        let query = request.query.trim();
        if query.is_empty() {
            return Err(CatalogError::invalid("query", "must contain a search term").into());
        }
        let offset = decode_cursor(&request.page_token, query)?.map_or(0, |c| c.offset);
        if offset > MAX_SEARCH_OFFSET {
            return Err(CatalogError::invalid("page_token", "search paged too deep").into());
        }
        let limit = page_token::page_size(request.page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE);
        let page = self.store.search(query, offset, limit).await?;
        let next_page_token = if page.has_more {
            page_token::encode(&PageCursor {
                offset: offset + limit,
                filter_hash: filter_hash(query),
                ..PageCursor::default()
            })
        } else {
            String::new()
        };
        Ok(Response::new(pb::SearchProductsResponse {
            products: page.products.into_iter().map(product_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn create_product(
        &self,
        request: Request<pb::CreateProductRequest>,
    ) -> Result<Response<pb::CreateProductResponse>, Status> {
        let request = request.into_inner();
        let name = request.name.trim().to_owned();
        if name.is_empty() {
            return Err(CatalogError::invalid("name", "must not be blank").into());
        }
        let new = NewProduct {
            sku: request.sku,
            name,
            description: request.description,
            category: request.category,
            price: money_from_pb("price", request.price)?,
            idempotency_key: (!request.idempotency_key.is_empty())
                .then_some(request.idempotency_key),
        };
        let product = self.store.create(new).await?;
        Ok(Response::new(pb::CreateProductResponse {
            product: Some(product_to_pb(product)),
        }))
    }

    async fn update_price(
        &self,
        request: Request<pb::UpdatePriceRequest>,
    ) -> Result<Response<pb::UpdatePriceResponse>, Status> {
        let request = request.into_inner();
        let id = parse_id("product_id", &request.product_id)?;
        let price = money_from_pb("price", request.price)?;
        let product = self
            .store
            .update_price(id, &price, request.expected_version)
            .await?;
        Ok(Response::new(pb::UpdatePriceResponse {
            product: Some(product_to_pb(product)),
        }))
    }
}
