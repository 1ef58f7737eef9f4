//! The catalog service binary: config from flags and environment, run until SIGTERM.

use clap::Parser as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = catalog::Config::parse();
    let _telemetry = shop_runtime::telemetry::init("catalog", &config.telemetry);
    let app = catalog::App::build(config).await?;
    app.run_until(shop_runtime::shutdown::signal()).await?;
    Ok(())
}
