//! The notifications service binary: config from flags and environment, run until SIGTERM.

use clap::Parser as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = notifications::Config::parse();
    let _telemetry = shop_runtime::telemetry::init("notifications", &config.telemetry);
    let app = notifications::App::build(config).await?;
    app.run_until(shop_runtime::shutdown::signal()).await?;
    Ok(())
}
