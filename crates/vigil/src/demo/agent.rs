//! `vigil demo-agent`: the demo's market feed and trading bots, built into vigil's own binary
//! so the demo needs nothing installed. They behave like the seeds' Python bots — a loop that
//! reads a price, decides, writes a decision row into SQLite, heartbeats through the notify
//! socket and logs — and misbehave on request: the demo drops a fault file, the bot reads it
//! and fails the way real bots fail. They talk to vigil through the `vigil-agent` crate, as a
//! Rust agent of a user's would: heartbeats, and a checkpoint the trader resumes from.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

use vigil_agent::{AsyncAgent, AsyncCheckpoint};

use super::faults::{Kind, Rng};

pub const SYMBOLS: [&str; 6] = [
    "BTC_USDT", "ETH_USDT", "SOL_USDT", "BNB_USDT", "XRP_USDT", "ADA_USDT",
];

fn start_price(symbol: &str) -> f64 {
    match symbol {
        "BTC_USDT" => 97_000.0,
        "ETH_USDT" => 3_400.0,
        "SOL_USDT" => 180.0,
        "BNB_USDT" => 690.0,
        "XRP_USDT" => 2.3,
        _ => 0.95,
    }
}

fn epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

fn clock() -> String {
    chrono::Utc::now().format("%H:%M:%S").to_string()
}

/// The demo's database: WAL, so the bots, the feed and vigil's `sql` checks don't block
/// each other; a busy timeout for the rare overlap.
pub async fn open(db: &Path, create: bool) -> Result<SqlitePool, sqlx::Error> {
    let options = SqliteConnectOptions::new()
        .filename(db)
        .create_if_missing(create)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(5));
    SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
}

pub async fn create_schema(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    for ddl in [
        "CREATE TABLE IF NOT EXISTS prices (symbol TEXT PRIMARY KEY, ts REAL NOT NULL, price REAL NOT NULL)",
        "CREATE TABLE IF NOT EXISTS decisions (symbol TEXT NOT NULL, ts REAL NOT NULL, action TEXT NOT NULL, price REAL NOT NULL)",
        "CREATE INDEX IF NOT EXISTS decisions_by_symbol ON decisions (symbol, ts)",
    ] {
        sqlx::query(ddl).execute(pool).await?;
    }
    Ok(())
}

/// What a trader keeps in its checkpoint: enough to resume where it was after a restart.
#[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
struct TraderState {
    position: f64,
    decisions: u64,
}

pub fn run(
    role: &str,
    symbol: Option<&str>,
    db: &Path,
    faults: &Path,
    config: Option<&Path>,
) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("demo-agent: {e}");
            return 1;
        }
    };
    let result = rt.block_on(async {
        let pool = open(db, false).await?;
        match (role, symbol) {
            ("market-feed", _) => feed(&pool, faults).await,
            ("trader", Some(symbol)) => trader(&pool, symbol, faults, config).await,
            _ => {
                eprintln!("demo-agent: use `market-feed` or `trader --symbol SYMBOL`");
                Ok(2)
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("demo-agent: {e}");
            1
        }
    }
}

/// Publishes a random-walk price for every symbol twice a second.
async fn feed(pool: &SqlitePool, faults: &Path) -> Result<i32, sqlx::Error> {
    let fault_file = faults.join("market-feed");
    let vigil = AsyncAgent::from_env();
    let mut rng = Rng::new(u64::from(std::process::id()));
    let mut prices: Vec<f64> = SYMBOLS.iter().map(|s| start_price(s)).collect();
    println!("market-feed: publishing {} symbols", SYMBOLS.len());
    vigil.ready().await;
    for tick in 0u64.. {
        if let Ok(kind) = std::fs::read_to_string(&fault_file) {
            let _ = std::fs::remove_file(&fault_file);
            if Kind::from_name(kind.trim()) == Some(Kind::FeedHang) {
                hang("market-feed: exchange websocket").await;
            }
        }
        for (symbol, price) in SYMBOLS.iter().zip(prices.iter_mut()) {
            *price *= 1.0 + (rng.unit() - 0.5) * 0.002;
            sqlx::query("INSERT INTO prices (symbol, ts, price) VALUES (?1, ?2, ?3) ON CONFLICT(symbol) DO UPDATE SET ts = excluded.ts, price = excluded.price")
                .bind(*symbol)
                .bind(epoch())
                .bind(*price)
                .execute(pool)
                .await?;
        }
        vigil.heartbeat().await;
        if tick % 20 == 0 {
            println!(
                "{} market-feed: BTC_USDT={:.1} ETH_USDT={:.2} SOL_USDT={:.3}",
                clock(),
                prices[0],
                prices[1],
                prices[2]
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(0)
}

/// Prices older than this are not traded on.
const STALE_PRICE: f64 = 3.0;

/// Its config, read as a Python bot reads its JSON: a broken file is a traceback and exit 1.
fn read_config(symbol: &str, path: Option<&Path>) -> Result<serde_json::Value, i32> {
    let Some(path) = path else {
        return Ok(serde_json::Value::Null);
    };
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let parsed = serde_json::from_str::<serde_json::Value>(&text);
    let error = match &parsed {
        Ok(c) if c.pointer("/risk/max_position").is_some() => None,
        Ok(_) => Some("KeyError: 'max_position'".to_string()),
        Err(e) => Some(format!(
            "json.decoder.JSONDecodeError: Expecting value: line {} column {} (char {})",
            e.line(),
            e.column(),
            text.len()
        )),
    };
    match (parsed, error) {
        (Ok(c), None) => Ok(c),
        (_, error) => {
            eprintln!("Traceback (most recent call last):");
            eprintln!("  File \"/opt/bots/trader.py\", line 31, in load_config");
            eprintln!("    config = json.load(open(\"{}\"))", path.display());
            eprintln!("{}", error.unwrap_or_default());
            eprintln!("{symbol}: cannot start without its config");
            Err(1)
        }
    }
}

/// Reads its price, decides, writes a decision row, heartbeats — once a second. Prices the
/// feed stopped updating are not traded on: it waits for fresh ones (and makes no decision).
async fn trader(
    pool: &SqlitePool,
    symbol: &str,
    faults: &Path,
    config_path: Option<&Path>,
) -> Result<i32, sqlx::Error> {
    let config = match read_config(symbol, config_path) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let max_position = config
        .pointer("/risk/max_position")
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(0.1);
    let vigil = AsyncAgent::from_env();
    let checkpoint = AsyncCheckpoint::<TraderState>::new(&vigil);
    let mut rng = Rng::new(u64::from(std::process::id()) ^ 0x5eed);
    let fault_file: PathBuf = faults.join(symbol);
    println!(
        "{symbol}: connecting to wss://stream.binance.com:9443 with api_key=demo{:016x}{:016x}",
        rng.next(),
        rng.next()
    );
    // Where it was before a crash or a restart, as vigil kept it.
    let mut state = match checkpoint.load().await {
        Ok(Some(state)) => {
            println!(
                "{symbol}: resumed from its checkpoint: position={:+.2} after {} decisions",
                state.position, state.decisions
            );
            state
        }
        Ok(None) => TraderState::default(),
        Err(e) => {
            println!("{symbol}: starting fresh ({e})");
            TraderState::default()
        }
    };
    vigil.ready().await;
    let mut stalled = false;
    loop {
        if let Ok(kind) = std::fs::read_to_string(&fault_file) {
            let _ = std::fs::remove_file(&fault_file);
            match Kind::from_name(kind.trim()) {
                Some(Kind::Hang) => hang(&format!("{symbol}: order book lock")).await,
                // The file changed under it: it reads it again, as a bot reloading its config.
                Some(Kind::ConfigCorrupt) => {
                    if let Err(code) = read_config(symbol, config_path) {
                        return Ok(code);
                    }
                }
                Some(Kind::Stall) => {
                    stalled = true;
                    println!(
                        "{} {symbol}: order book snapshot is stale, skipping decisions until it refreshes",
                        clock()
                    );
                }
                Some(kind) => return Ok(fail(symbol, kind)),
                None => {}
            }
        }
        vigil.heartbeat().await;
        if !stalled {
            let row: Option<(f64, f64)> =
                sqlx::query_as("SELECT price, ts FROM prices WHERE symbol = ?1")
                    .bind(symbol)
                    .fetch_optional(pool)
                    .await?;
            let (price, ts) = row.unwrap_or_else(|| (start_price(symbol), epoch()));
            let age = epoch() - ts;
            if age > STALE_PRICE {
                println!(
                    "{} {symbol}: market data is {age:.0}s old, waiting for the feed",
                    clock()
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            let roll = rng.unit();
            let action = if roll < 0.2 {
                "buy"
            } else if roll < 0.4 {
                "sell"
            } else {
                "hold"
            };
            state.position += match action {
                "buy" => 0.01,
                "sell" => -0.01,
                _ => 0.0,
            };
            state.position = state.position.clamp(-max_position, max_position);
            state.decisions += 1;
            sqlx::query(
                "INSERT INTO decisions (symbol, ts, action, price) VALUES (?1, ?2, ?3, ?4)",
            )
            .bind(symbol)
            .bind(epoch())
            .bind(action)
            .bind(price)
            .execute(pool)
            .await?;
            match checkpoint.save(state.clone()).await {
                Ok(_) => {}
                // Someone else saved a newer state (a person's correction): it wins.
                Err(vigil_agent::CheckpointError::Conflict { .. }) => {
                    if let Ok(Some(newer)) = checkpoint.load().await {
                        println!(
                            "{} {symbol}: took up the newer checkpoint in vigil",
                            clock()
                        );
                        state = newer;
                    }
                }
                Err(e) => println!("{} {symbol}: checkpoint not saved: {e}", clock()),
            }
            println!(
                "{} {symbol} price={price:.4} decision={action} position={:+.2}",
                clock(),
                state.position
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Alive, but stuck: no more decisions, no more heartbeats.
async fn hang(what: &str) -> ! {
    println!("{} {what}: waiting...", clock());
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

/// Die the way the seeds' bots die: the last lines are the evidence vigil diagnoses.
fn fail(symbol: &str, kind: Kind) -> i32 {
    let lines: Vec<String> = match kind {
        Kind::Crash => vec![
            "Traceback (most recent call last):".into(),
            "  File \"/opt/bots/trader.py\", line 212, in <module>".into(),
            "    main()".into(),
            "  File \"/opt/bots/strategy.py\", line 74, in decide".into(),
            "    spread = book[\"asks\"][0][0] - book[\"bids\"][0][0]".into(),
            "IndexError: list index out of range".into(),
        ],
        Kind::DbLocked => vec![
            "Traceback (most recent call last):".into(),
            "  File \"/opt/bots/journal.py\", line 41, in record".into(),
            "    cur.execute(\"INSERT INTO decisions VALUES (?, ?, ?, ?)\", row)".into(),
            "sqlite3.OperationalError: database is locked".into(),
        ],
        Kind::InvalidKey => vec![
            format!("{symbol}: placing order"),
            "ccxt.base.errors.AuthenticationError: binance {\"code\":-2015,\"msg\":\"Invalid API-key, IP, or permissions for action.\"}".into(),
        ],
        Kind::RateLimit => vec![
            "ccxt.base.errors.RateLimitExceeded: binance 429 Too Many Requests {\"code\":-1003,\"msg\":\"Too much request weight used; current limit is 1200 request weight per 1 MINUTE.\"}".into(),
        ],
        Kind::Hang | Kind::Stall | Kind::FeedHang | Kind::ConfigCorrupt => Vec::new(),
    };
    for line in lines {
        eprintln!("{line}");
    }
    1
}
