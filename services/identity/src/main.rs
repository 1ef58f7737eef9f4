//! The identity service binary: config from flags and environment, run until SIGTERM.

use clap::Parser as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = identity::Config::parse();
    let _telemetry = shop_runtime::telemetry::init("identity", &config.telemetry);
    let app = identity::App::build(config).await?;
    app.run_until(shop_runtime::shutdown::signal()).await?;
    Ok(())
}
