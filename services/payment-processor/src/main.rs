//! The simulated processor binary: config from flags and environment, run until SIGTERM.

use clap::Parser as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = payment_processor::Config::parse();
    let _telemetry = shop_runtime::telemetry::init("payment-processor", &config.telemetry);
    let app = payment_processor::App::build(config).await?;
    app.run_until(shop_runtime::shutdown::signal()).await?;
    Ok(())
}
