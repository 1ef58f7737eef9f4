//! The orders service binary: config from flags and environment, run until SIGTERM.

use clap::Parser as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = orders::Config::parse();
    let _telemetry = shop_runtime::telemetry::init("orders", &config.telemetry);
    let app = orders::App::build(config).await?;
    app.run_until(shop_runtime::shutdown::signal()).await?;
    Ok(())
}
