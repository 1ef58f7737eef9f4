//! The inventory service binary: config from flags and environment, run until SIGTERM.

use clap::Parser as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = inventory::Config::parse();
    let _telemetry = shop_runtime::telemetry::init("inventory", &config.telemetry);
    let app = inventory::App::build(config).await?;
    app.run_until(shop_runtime::shutdown::signal()).await?;
    Ok(())
}
