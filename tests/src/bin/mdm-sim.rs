//! `mdm-sim`: simulated Apple devices against an MDM server, and the load benchmarks.
//!
//! ```sh
//! cargo build --release -p mdm-server -p mdm-tests
//! target/release/mdm-sim bench checkins --devices 10000 --connections 64
//! target/release/mdm-sim --db postgres bench commands --devices 10000
//! MDM_IDENTITY__DEVICE_CA_FILE=target/mdm-sim/device-ca.pem target/release/mdm-server serve &
//! target/release/mdm-sim run --url http://127.0.0.1:8080 --devices 100
//! ```
//!
//! Every bench starts the real server on a fresh database (a temporary SQLite file, or a new schema in
//! PostgreSQL that is dropped afterwards), in this process or as the `mdm-server` binary
//! (`--server-bin`). The exit status is non-zero when any device saw a protocol violation.

use clap::{Args, Parser, Subcommand};
use mdm_tests::sim::fleet::{Fleet, FleetConfig};
use mdm_tests::sim::pki::{default_cache_dir, KeyKind, KeyPool, Provisioner};
use mdm_tests::sim::responder::Behavior;
use mdm_tests::sim::scenarios::{self, Common, Report};
use mdm_tests::sim::target::{default_server_bin, DbChoice, ServerMode};
use mdm_tests::sim::transport::Transport;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "mdm-sim",
    about = "Simulated Apple devices and load benchmarks for mdm-server"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Global {
    /// Database for bench runs: a fresh SQLite file, or a fresh schema in PostgreSQL.
    #[arg(long, global = true, value_enum, default_value = "sqlite")]
    db: DbKind,
    /// PostgreSQL server (`--db postgres`); each run creates and drops its own schema.
    #[arg(
        long,
        global = true,
        env = "MDM_TEST_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    pg_url: String,
    /// Run the server as this `mdm-server` binary instead of in this process (devices then poll: the
    /// process has no push sink). `--server-bin default` is target/release/mdm-server.
    #[arg(long, global = true)]
    server_bin: Option<String>,
    /// Server HTTP worker threads (default: one per core).
    #[arg(long, global = true)]
    workers: Option<usize>,
    /// Device key algorithm (Apple devices use RSA-2048).
    #[arg(long, global = true, value_enum, default_value = "rsa2048")]
    key_kind: KeyKind,
    /// Device keys generated (and cached) for the fleet; each device still has its own certificate.
    #[arg(long, global = true, default_value_t = 64)]
    key_pool: usize,
    /// Where the key pool is cached (default target/mdm-sim).
    #[arg(long, global = true)]
    key_cache: Option<PathBuf>,
    /// Percentage of iPhones/iPads in the fleet (the rest are Macs).
    #[arg(long, global = true, default_value_t = 60)]
    ios_percent: u8,
    /// Also write the report(s) as JSON here.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DbKind {
    Sqlite,
    Postgres,
}

#[derive(Subcommand)]
enum Command {
    /// Load benchmarks (each reports throughput and p50/p90/p99 latency).
    Bench {
        #[command(subcommand)]
        bench: Bench,
    },
    /// Enroll devices with a running server and answer its commands, polling, until stopped.
    Run(RunArgs),
}

#[derive(Subcommand)]
enum Bench {
    /// 1. Signed Idle check-ins per second.
    Checkins {
        #[arg(long, default_value_t = 1000)]
        devices: usize,
        #[arg(long, default_value_t = 16)]
        connections: usize,
        #[arg(long, default_value_t = 3.0)]
        warmup_secs: f64,
        #[arg(long, default_value_t = 15.0)]
        seconds: f64,
        /// Seed the devices into the database instead of enrolling them over HTTP.
        #[arg(long)]
        seed: bool,
        /// After the load, time each step of an Idle check-in this many times (0: skip).
        #[arg(long, default_value_t = 2000)]
        breakdown: usize,
    },
    /// 2. Command throughput: commands queued per device, drained by the devices.
    Commands {
        #[arg(long, default_value_t = 10_000)]
        devices: usize,
        #[arg(long, default_value_t = 5)]
        per_device: usize,
        #[arg(long, default_value_t = 64)]
        connections: usize,
        #[arg(long, default_value_t = 0.0)]
        not_now_rate: f64,
        #[arg(long, default_value_t = 0.0)]
        error_rate: f64,
        /// Also queue InstallProfile, RemoveProfile, ProfileList and an unknown command.
        #[arg(long)]
        extra_commands: bool,
        /// Poll instead of waking devices by push.
        #[arg(long)]
        poll: bool,
        /// Enroll over HTTP instead of seeding the database.
        #[arg(long)]
        enroll_http: bool,
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
    },
    /// 3. Fan-out: one command to every device through the admin API.
    Fanout {
        #[arg(long, default_value_t = 100_000)]
        devices: usize,
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        /// The push worker's rate limit (`push.max_per_second`). The default lets it claim every owed push
        /// in one round, so all are sent within the run; the server's own default is 500.
        #[arg(long, default_value_t = scenarios::UNLIMITED_PUSH_RATE)]
        push_per_second: u32,
    },
    /// 4. Next-command latency with few vs many rows in command_queue.
    QueueDepth {
        #[arg(long, default_value_t = 200)]
        probes: usize,
        #[arg(long, default_value_t = 5)]
        per_probe: usize,
        #[arg(long, default_value_t = 1_000_000)]
        deep_rows: usize,
        #[arg(long, default_value_t = 10_000)]
        background_channels: usize,
        #[arg(long, default_value_t = 4)]
        connections: usize,
    },
    /// 5. Peak RSS of the server process with many enrolled devices under load.
    ///
    /// Runs the server as a process: --server-bin, default target/release/mdm-server.
    Memory {
        #[arg(long, default_value_t = 100_000)]
        devices: usize,
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Devices that send one Idle each, spread over the fleet (default: all).
        #[arg(long)]
        sweep_devices: Option<usize>,
        #[arg(long, default_value_t = 10_000)]
        drain_devices: usize,
    },
    /// 6. Check-ins per second with 0, 1 and 5 example plugins.
    Plugins {
        #[arg(long, default_value_t = 1000)]
        devices: usize,
        #[arg(long, default_value_t = 16)]
        connections: usize,
        #[arg(long, default_value_t = 2.0)]
        warmup_secs: f64,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Also measure each example plugin alone.
        #[arg(long)]
        each: bool,
        /// Measure only this set of plugins against none instead: `--only webhook,inventory`.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Measure every set this many times, taking turns; costs are medians over the rounds.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Events per POST to the event sink (its `batch_max_events`; 1: one POST per event).
        #[arg(long, default_value_t = 1)]
        sink_batch: usize,
    },
    /// 7. Declarative Device Management: full syncs per second, then an edit's fan-out.
    ///
    /// A full sync is tokens, manifest, every declaration and a status report; the fan-out is the time
    /// from editing one declaration every device holds to all their syncs queued.
    Ddm {
        #[arg(long, default_value_t = 10_000)]
        devices: usize,
        #[arg(long, default_value_t = 16)]
        connections: usize,
        /// Declarations in the set each device holds.
        #[arg(long, default_value_t = 20)]
        declarations: usize,
        #[arg(long, default_value_t = 2.0)]
        warmup_secs: f64,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
    },
    /// 8. Policy rollouts: a signed version activated for a group of every device, then promoted.
    ///
    /// Times the activation (to the pilot's syncs queued and pushes owed) and each promotion (canary,
    /// full); the server's peak RSS when it runs as a process (--server-bin).
    Rollout {
        #[arg(long, default_value_t = 100_000)]
        devices: usize,
    },
}

#[derive(Args)]
struct RunArgs {
    /// The server's base URL (device endpoints under /mdm).
    #[arg(long)]
    url: String,
    #[arg(long, default_value_t = 10)]
    devices: usize,
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Seconds between polls (every device checks in once per poll).
    #[arg(long, default_value_t = 10.0)]
    poll_secs: f64,
    /// Stop after this many seconds (0: run until interrupted).
    #[arg(long, default_value_t = 0.0)]
    duration_secs: f64,
    #[arg(long, default_value_t = 0.0)]
    not_now_rate: f64,
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
}

fn common(g: &Global, mode_default: ServerMode) -> Common {
    let mode = match g.server_bin.as_deref() {
        None => mode_default,
        Some("default") => ServerMode::Process(default_server_bin()),
        Some(p) => ServerMode::Process(PathBuf::from(p)),
    };
    Common {
        db: match g.db {
            DbKind::Sqlite => DbChoice::Sqlite,
            DbKind::Postgres => DbChoice::Postgres(g.pg_url.clone()),
        },
        mode,
        key_kind: g.key_kind,
        key_pool: g.key_pool,
        cache_dir: Some(g.key_cache.clone().unwrap_or_else(default_cache_dir)),
        workers: g.workers,
        ios_percent: g.ios_percent,
    }
}

async fn bench(g: &Global, b: Bench) -> Result<Report, Box<dyn std::error::Error + Send + Sync>> {
    match b {
        Bench::Checkins {
            devices,
            connections,
            warmup_secs,
            seconds,
            seed,
            breakdown,
        } => {
            scenarios::checkins(
                &common(g, ServerMode::InProcess),
                &scenarios::CheckinParams {
                    devices,
                    connections,
                    warmup_secs,
                    seconds,
                    requests: None,
                    seed,
                    breakdown,
                },
            )
            .await
        }
        Bench::Commands {
            devices,
            per_device,
            connections,
            not_now_rate,
            error_rate,
            extra_commands,
            poll,
            enroll_http,
            timeout_secs,
        } => {
            scenarios::commands(
                &common(g, ServerMode::InProcess),
                &scenarios::CommandParams {
                    devices,
                    per_device,
                    connections,
                    not_now_rate,
                    error_rate,
                    extra_commands,
                    poll,
                    seed: !enroll_http,
                    timeout_secs,
                },
            )
            .await
        }
        Bench::Fanout {
            devices,
            repeat,
            push_per_second,
        } => {
            scenarios::fanout(
                &common(g, ServerMode::InProcess),
                &scenarios::FanoutParams {
                    devices,
                    repeat,
                    push_per_second,
                },
            )
            .await
        }
        Bench::QueueDepth {
            probes,
            per_probe,
            deep_rows,
            background_channels,
            connections,
        } => {
            scenarios::queue_depth(
                &common(g, ServerMode::InProcess),
                &scenarios::QueueDepthParams {
                    probes,
                    per_probe,
                    deep_rows,
                    background_channels,
                    connections,
                },
            )
            .await
        }
        Bench::Memory {
            devices,
            connections,
            sweep_devices,
            drain_devices,
        } => {
            scenarios::memory(
                &common(g, ServerMode::Process(default_server_bin())),
                &scenarios::MemoryParams {
                    devices,
                    connections,
                    sweep_devices,
                    drain_devices,
                },
            )
            .await
        }
        Bench::Plugins {
            devices,
            connections,
            warmup_secs,
            seconds,
            each,
            only,
            rounds,
            sink_batch,
        } => {
            let all: Vec<String> = scenarios::example_plugins()
                .into_iter()
                .map(|(n, _)| n.to_string())
                .collect();
            let sets: Vec<Vec<String>> = if !only.is_empty() {
                vec![vec![], only]
            } else if each {
                std::iter::once(vec![])
                    .chain(all.iter().map(|n| vec![n.clone()]))
                    .chain(std::iter::once(all.clone()))
                    .collect()
            } else {
                vec![vec![], vec!["webhook".into()], all]
            };
            scenarios::plugins(
                &common(g, ServerMode::InProcess),
                &scenarios::PluginParams {
                    devices,
                    connections,
                    warmup_secs,
                    seconds,
                    requests: None,
                    sets,
                    rounds,
                    sink_batch,
                },
            )
            .await
        }
        Bench::Ddm {
            devices,
            connections,
            declarations,
            warmup_secs,
            seconds,
        } => {
            scenarios::ddm(
                &common(g, ServerMode::InProcess),
                &scenarios::DdmParams {
                    devices,
                    connections,
                    declarations,
                    warmup_secs,
                    seconds,
                    requests: None,
                },
            )
            .await
        }
        Bench::Rollout { devices } => {
            scenarios::rollout(
                &common(g, ServerMode::InProcess),
                &scenarios::RolloutParams { devices },
            )
            .await
        }
    }
}

/// Enroll `devices` with a running server and keep answering its commands.
async fn run(g: &Global, a: RunArgs) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
    let cache = g.key_cache.clone().unwrap_or_else(default_cache_dir);
    let pool =
        KeyPool::load_or_generate(g.key_kind, g.key_pool.min(a.devices.max(1)), Some(&cache));
    // The server must trust the devices' CA: it is kept with the key cache, the same for every run.
    let prov = Provisioner::with_ca_in(pool, &cache)?;
    eprintln!(
        "devices' identities are issued by {}: start the server with identity.device_ca_file naming it",
        Provisioner::ca_file_in(&cache).display()
    );
    let fleet = Arc::new(Fleet::build(
        FleetConfig {
            devices: a.devices,
            ios_percent: g.ios_percent,
            behavior: Behavior {
                not_now_rate: a.not_now_rate,
                error_rate: a.error_rate,
            },
            ..FleetConfig::default()
        },
        &prov,
    ));
    let transport = Transport::new(&a.url, a.connections);
    fleet.enroll(&transport, a.connections).await?;
    eprintln!("enrolled {} devices", fleet.len());
    let start = std::time::Instant::now();
    let all: Vec<usize> = (0..fleet.len()).collect();
    loop {
        fleet
            .each(&transport, a.connections, &all, |f, t, i| async move {
                f.connection(&t, i).await.map(|_| ())
            })
            .await?;
        let c = &fleet.counters;
        eprintln!(
            "connections {} commands {} acknowledged {} errors {} not_now {} violations {}",
            c.connections.load(std::sync::atomic::Ordering::Relaxed),
            c.commands.load(std::sync::atomic::Ordering::Relaxed),
            c.acknowledged.load(std::sync::atomic::Ordering::Relaxed),
            c.errors.load(std::sync::atomic::Ordering::Relaxed),
            c.not_now.load(std::sync::atomic::Ordering::Relaxed),
            fleet.violations.total()
        );
        for s in fleet.violations.samples() {
            eprintln!("  {s}");
        }
        if a.duration_secs > 0.0 && start.elapsed().as_secs_f64() >= a.duration_secs {
            return Ok(fleet.violations.total());
        }
        tokio::time::sleep(Duration::from_secs_f64(a.poll_secs)).await;
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Bench { bench: b } => match bench(&cli.global, b).await {
            Ok(report) => {
                println!("{}", report.text());
                if let Some(p) = &cli.global.json {
                    let text = serde_json::to_string_pretty(&report).expect("json");
                    if let Err(e) = std::fs::write(p, text) {
                        eprintln!("writing {}: {e}", p.display());
                        return ExitCode::FAILURE;
                    }
                }
                if report.total_violations() > 0 {
                    eprintln!("FAILED: {} protocol violations", report.total_violations());
                    return ExitCode::FAILURE;
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run(a) => match run(&cli.global, a).await {
            Ok(0) => ExitCode::SUCCESS,
            Ok(n) => {
                eprintln!("FAILED: {n} protocol violations");
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
