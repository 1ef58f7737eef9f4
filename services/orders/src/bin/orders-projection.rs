//! `orders-projection rebuild`: recomputes the orders read model from the event store and
//! prints what it found (JSON: orders and events read, rows repaired and removed). On a
//! healthy database it repairs nothing: the live read model already equals the fold of the
//! events. Reads `DATABASE_URL` (the orders database).

use anyhow::Context as _;
use clap::Parser as _;

/// Operations on the orders read model.
#[derive(Debug, clap::Parser)]
#[command(name = "orders-projection")]
struct Cli {
    /// The orders database.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Rebuild the read model from the events; exit 0 and print the report.
    Rebuild,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let pool = sqlx::PgPool::connect(&cli.database_url)
        .await
        .context("connecting to the orders database")?;
    match cli.command {
        Command::Rebuild => {
            let report = orders::rebuild_read_model(&pool).await?;
            let line = serde_json::to_string(&report)?;
            #[allow(clippy::print_stdout)]
            {
                println!("{line}");
            }
        }
    }
    Ok(())
}
