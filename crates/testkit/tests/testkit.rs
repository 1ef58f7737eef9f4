//! Starts the real servers: these tests need postgres and nats-server installed.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use shop_testkit::{Nats, NatsOptions, Postgres, TestkitError, wait_until};
use sqlx::{Connection as _, Executor as _, PgConnection, Row as _};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

// === Postgres ===

#[tokio::test]
async fn postgres_starts_and_accepts_connections() -> Result<()> {
    let pg = Postgres::start().await?;
    let mut conn = PgConnection::connect(&pg.url()).await?;
    let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&mut conn).await?;
    assert_eq!(one, 1);
    let fsync: String = sqlx::query_scalar("SHOW fsync")
        .fetch_one(&mut conn)
        .await?;
    assert_eq!(fsync, "off");
    Ok(())
}

#[tokio::test]
async fn fresh_databases_are_isolated() -> Result<()> {
    let pg = Postgres::start().await?;
    let (a, b) = (pg.fresh_database().await?, pg.fresh_database().await?);
    assert_ne!(a, b);
    let mut conn_a = PgConnection::connect(&a).await?;
    conn_a.execute("CREATE TABLE t (id int)").await?;
    let mut conn_b = PgConnection::connect(&b).await?;
    let seen: Option<String> = sqlx::query_scalar("SELECT to_regclass('t')::text")
        .fetch_one(&mut conn_b)
        .await?;
    assert_eq!(
        seen, None,
        "a table made in one database shows in the other"
    );

    let named = pg.create_database("orders").await?;
    assert!(named.ends_with("/orders"));
    let bad = pg.create_database("x\"; DROP DATABASE postgres; --").await;
    assert!(matches!(bad, Err(TestkitError::InvalidDatabaseName(_))));
    Ok(())
}

#[tokio::test]
async fn postgres_stop_and_restart_keep_port_and_data() -> Result<()> {
    let mut pg = Postgres::start().await?;
    let (port, url) = (pg.port(), pg.fresh_database().await?);
    let mut conn = PgConnection::connect(&url).await?;
    conn.execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('hello')")
        .await?;
    conn.close().await?;

    pg.stop().await?;
    assert!(!pg.is_running());
    assert!(
        PgConnection::connect(&url).await.is_err(),
        "stopped server still answers"
    );

    pg.restart().await?;
    assert_eq!(pg.port(), port);
    let mut conn = PgConnection::connect(&url).await?;
    let row = sqlx::query("SELECT v FROM kept")
        .fetch_one(&mut conn)
        .await?;
    assert_eq!(row.try_get::<String, _>("v")?, "hello");
    Ok(())
}

// === Nats ===

#[tokio::test]
async fn nats_starts_with_jetstream() -> Result<()> {
    let nats = Nats::start().await?;
    let jsz = nats.monitor_get("/jsz").await?;
    assert!(jsz.contains("\"store_dir\""), "JetStream off: {jsz}");
    assert!(jsz.contains(&nats.store_dir().display().to_string()));
    if nats.syncs_always() {
        assert!(jsz.contains("\"sync_always\": true"), "{jsz}");
    }
    let info = read_info(&nats.url()).await?;
    assert!(info.contains("\"jetstream\":true"), "{info}");
    Ok(())
}

#[tokio::test]
async fn nats_kill9_and_restart_keep_port_and_stream() -> Result<()> {
    let mut nats = Nats::start().await?;
    let port = nats.port();
    let mut client = RawClient::connect(&nats.url()).await?;
    let created = client
        .request(
            "$JS.API.STREAM.CREATE.KEPT",
            r#"{"name":"KEPT","subjects":["kept.>"],"storage":"file"}"#,
        )
        .await?;
    ensure!(!created.contains("\"error\""), "stream create: {created}");
    let ack = client.request("kept.one", "payload").await?;
    ensure!(ack.contains("\"seq\":1"), "publish ack: {ack}");

    nats.kill9().await?;
    assert!(!nats.is_running());
    assert!(TcpStream::connect(("127.0.0.1", port)).await.is_err());

    nats.restart().await?;
    assert_eq!(nats.port(), port);
    wait_until(Duration::from_secs(10), || async {
        nats.monitor_get("/jsz")
            .await
            .is_ok_and(|jsz| jsz.contains("\"messages\": 1"))
    })
    .await
    .context("the acknowledged message did not survive kill -9")?;

    nats.stop().await?;
    nats.restart().await?;
    assert!(nats.monitor_get("/healthz").await?.contains("ok"));
    Ok(())
}

#[tokio::test]
async fn nats_startup_failure_shows_the_log() -> Result<()> {
    let options = NatsOptions {
        extra_config: "no_such_option_here: 1".into(),
        ..NatsOptions::default()
    };
    let err = Nats::start_with(options)
        .await
        .err()
        .context("bad config was accepted")?;
    let text = err.to_string();
    assert!(matches!(err, TestkitError::Startup { .. }), "{text}");
    assert!(text.contains("no_such_option_here"), "{text}");
    Ok(())
}

// === a few lines of the NATS protocol, enough for the checks above ===

async fn read_info(url: &str) -> Result<String> {
    let addr = url.trim_start_matches("nats://");
    let mut lines = BufReader::new(TcpStream::connect(addr).await?).lines();
    lines.next_line().await?.context("no INFO line")
}

struct RawClient {
    lines: tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
    write: tokio::net::tcp::OwnedWriteHalf,
}

impl RawClient {
    async fn connect(url: &str) -> Result<Self> {
        let (read, mut write) = TcpStream::connect(url.trim_start_matches("nats://"))
            .await?
            .into_split();
        write
            .write_all(b"CONNECT {\"verbose\":false}\r\nSUB _INBOX.t 1\r\n")
            .await?;
        let mut lines = BufReader::new(read).lines();
        lines.next_line().await?.context("no INFO line")?;
        Ok(Self { lines, write })
    }

    /// Publishes with a reply subject and returns the payload of the reply.
    async fn request(&mut self, subject: &str, payload: &str) -> Result<String> {
        let msg = format!("PUB {subject} _INBOX.t {}\r\n{payload}\r\n", payload.len());
        self.write.write_all(msg.as_bytes()).await?;
        loop {
            let line = self.lines.next_line().await?.context("connection closed")?;
            if line.starts_with("MSG ") {
                return self.lines.next_line().await?.context("MSG without payload");
            }
            if line.starts_with("PING") {
                self.write.write_all(b"PONG\r\n").await?;
            }
        }
    }
}
