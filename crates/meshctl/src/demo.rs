//! `meshctl demo`: a short walk through the running mesh with the generated Rust clients.
//! Register a user, log in, create a product, list products, wait for the welcome
//! notification the registration causes (identity -> outbox -> NATS -> notifications), then
//! the user places three orders (one confirms, one is declined, one is out of stock) and each
//! saga's timeline is shown ([`crate::demo_orders`]; skipped when the mesh has no orders).

use std::path::Path;
use std::time::Duration;

use crate::state::MeshChannel;
use shop_proto::catalog::{ListProductsRequest, catalog_service_client::CatalogServiceClient};
use shop_proto::identity::{LoginRequest, identity_service_client::IdentityServiceClient};
use shop_proto::notifications::{
    ListNotificationsRequest, Notification, NotificationKind,
    notification_service_client::NotificationServiceClient,
};

use crate::error::{MeshError, Result};
use crate::state::MeshState;
use crate::{demo_orders, fixture};

/// How long the welcome notification may take to arrive.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the walk-through against the mesh recorded in `state_dir`, printing each step.
pub async fn demo(state_dir: &Path) -> Result<()> {
    let state = MeshState::running(state_dir)?;
    let mut identity = IdentityServiceClient::new(state.channel("identity")?);
    let mut catalog = CatalogServiceClient::new(state.channel("catalog")?);

    let tag = fixture::tag();
    let (user_id, token) = register_and_login(&mut identity, &tag).await?;
    // The user's own calls carry the user's token.
    let mut notifications =
        NotificationServiceClient::new(state.user_channel("notifications", &token)?);
    create_and_list_products(&mut catalog, &tag).await?;
    let welcome = wait_for_welcome(&mut notifications, &user_id).await?;
    println!(
        "5. welcome notification arrived: {:?} ({})",
        welcome.title, welcome.body
    );
    demo_orders::run(&state, &user_id, &token, &tag, 6).await?;
    println!("\nDemo complete.");
    Ok(())
}

async fn register_and_login(
    identity: &mut IdentityServiceClient<MeshChannel>,
    tag: &str,
) -> Result<(String, String)> {
    let email = format!("demo-{tag}@example.com");
    let user_id = fixture::register(identity, &email, format!("Demo {tag}")).await?;
    println!("1. registered {email}: user {user_id}");

    let login = identity
        .login(LoginRequest {
            email,
            password: fixture::PASSWORD.into(),
        })
        .await
        .map_err(|s| MeshError::rpc("IdentityService/Login", s))?
        .into_inner();
    let shown = login.access_token.chars().take(24).collect::<String>();
    println!("2. logged in: {} token {shown}...", login.token_type);
    Ok((user_id, login.access_token))
}

async fn create_and_list_products(
    catalog: &mut CatalogServiceClient<MeshChannel>,
    tag: &str,
) -> Result<()> {
    let product = fixture::kitchen_product(
        catalog,
        format!("DEMO-{tag}"),
        format!("Demo mug {tag}"),
        "A mug made by meshctl demo.",
        (12, 500_000_000),
    )
    .await?;
    println!(
        "3. created product {} ({}): {}",
        product.sku, product.product_id, product.name
    );

    let listed = catalog
        .list_products(ListProductsRequest {
            page_size: 5,
            page_token: String::new(),
            category: "kitchen".into(),
        })
        .await
        .map_err(|s| MeshError::rpc("CatalogService/ListProducts", s))?
        .into_inner();
    let names: Vec<&str> = listed.products.iter().map(|p| p.name.as_str()).collect();
    println!(
        "4. listed {} kitchen product(s): {}",
        names.len(),
        names.join(", ")
    );
    Ok(())
}

/// Polls `ListNotifications` until the user's welcome notification is there.
async fn wait_for_welcome(
    notifications: &mut NotificationServiceClient<MeshChannel>,
    user_id: &str,
) -> Result<Notification> {
    println!("   waiting for the welcome notification (identity -> NATS -> notifications)...");
    let deadline = tokio::time::Instant::now() + WELCOME_TIMEOUT;
    let mut pause = Duration::from_millis(50);
    loop {
        let listed = notifications
            .list_notifications(ListNotificationsRequest {
                user_id: user_id.to_owned(),
                page_size: 10,
                page_token: String::new(),
            })
            .await
            .map_err(|s| MeshError::rpc("NotificationService/ListNotifications", s))?
            .into_inner();
        let welcome = listed
            .notifications
            .into_iter()
            .find(|n| n.kind == NotificationKind::Welcome as i32);
        if let Some(welcome) = welcome {
            return Ok(welcome);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(MeshError::Timeout {
                what: format!("the welcome notification of user {user_id}"),
                after: WELCOME_TIMEOUT,
            });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}
