//! The `mdm-server` binary: parse the command line, load the configuration, run.

use clap::{Parser, Subcommand};
use mdm_server::apikeys::{self, Scope};
use mdm_server::clock::{Clock, SystemClock};
use mdm_server::storage::audit_log::{self, Verification};
use mdm_server::storage::{api_keys, Storage};
use mdm_server::{telemetry, Application, Config};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "mdm-server",
    version,
    about = "Apple MDM server with WebAssembly plugins"
)]
struct Cli {
    /// TOML configuration file (settings can also come from MDM_* environment variables).
    #[arg(long, short, global = true, env = "MDM_CONFIG")]
    config: Option<PathBuf>,
    /// Override `data_dir` (the database, keys and certificates the server generates).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (migrates the database first).
    Serve {
        /// Override `listen` (host:port).
        #[arg(long)]
        listen: Option<String>,
        /// Serve TLS with this certificate chain (PEM); MDM endpoints then require a client certificate.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The TLS private key (PEM).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Serve TLS with a generated self-signed certificate (development).
        #[arg(long, conflicts_with = "tls_cert")]
        tls_self_signed: bool,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Manage admin API keys.
    Apikey {
        #[command(subcommand)]
        action: KeyAction,
    },
    /// The hash-chained audit log.
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
    /// Policy bundles: pack a folder into one (for a CI job), or check one.
    Policy {
        #[command(subcommand)]
        action: PolicyAction,
    },
    /// Plugins: run one hook of a built plugin against an in-memory host (no server or database).
    Plugin {
        #[command(subcommand)]
        action: PluginAction,
    },
    /// Print the effective configuration (defaults, file and environment merged) as TOML, secrets left out.
    Config {
        /// Only validate the file and the environment, starting nothing: unknown keys, values, and the
        /// settings a server reachable from other hosts needs. Prints OK (with any warnings) or the
        /// error; exit status 0 or 1.
        #[arg(long)]
        check: bool,
    },
}

#[derive(Subcommand)]
enum AuditAction {
    /// Check every row links to the one before it; exit status 1 and the first broken row if not.
    Verify {
        /// The head hash recorded earlier (e.g. by a previous verify): also detects a truncated tail.
        #[arg(long)]
        expect_head: Option<String>,
    },
}

#[derive(Subcommand)]
enum PolicyAction {
    /// Pack DIR (its policy.json and the files it names) into a bundle; prints the bundle's SHA-256.
    Pack {
        dir: PathBuf,
        /// Sign with this private key (PEM, Ed25519 or ECDSA P-256).
        #[arg(long)]
        sign: Option<PathBuf>,
        /// Where to write the bundle.
        #[arg(long, short)]
        output: PathBuf,
    },
    /// Check a bundle as the server would; with --signer, its signature too. Prints version and SHA-256.
    Verify {
        bundle: PathBuf,
        /// A trusted signer (PEM public key or certificate); repeat for several.
        #[arg(long)]
        signer: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum PluginAction {
    /// Write a new plugin crate NAME (manifest, hooks on the SDK, native tests) that builds as it is.
    New {
        /// The plugin's id and crate name: a-z, 0-9 and '-', starting with a letter.
        name: String,
        /// Where to write it (default: ./NAME); it must be empty or absent.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Where the SDK comes from: the `plugin-sdk` directory of a checkout (or an unpacked
        /// mdm-plugin-sdk .crate), or the URL of a git repository holding it.
        #[arg(long)]
        sdk: String,
    },
    /// Run HOOK of PLUGIN (a built .wasm) on an event made from a device's message, against an in-memory
    /// host; prints the answer, logs, key-value store and HTTP requests as JSON. Exit status 1 on a
    /// fault.
    Run {
        plugin: PathBuf,
        /// The plugin's manifest.
        #[arg(long, default_value = "plugin.json")]
        manifest: PathBuf,
        /// decide-enrollment, on-checkin, on-command-result, on-schedule, provide-token or
        /// validate-config.
        #[arg(long)]
        hook: String,
        /// The device's message (plist): a check-in (an Authenticate for decide-enrollment, a GetToken
        /// for provide-token) or a command report (on-command-result).
        #[arg(long)]
        event: Option<PathBuf>,
        /// on-command-result: the RequestType of the command the report answers.
        #[arg(long)]
        request_type: Option<String>,
        /// on-schedule: the schedule's name.
        #[arg(long)]
        schedule: Option<String>,
        /// The plugin's configuration (a JSON file); `{}` when not given.
        #[arg(long = "plugin-config")]
        plugin_config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum KeyAction {
    /// Create a key and print it once.
    Create {
        /// A name to recognise the key by.
        #[arg(long, default_value = "admin")]
        name: String,
        /// Scopes: devices:read, commands:read, commands:write, enroll, admin (repeat or comma-separate).
        #[arg(long = "scope", required = true, value_delimiter = ',')]
        scopes: Vec<Scope>,
    },
    /// List keys (never their secrets).
    List,
    /// Revoke a key by id.
    Revoke { id: String },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Config { check: true } => return check_config(&cli),
        // Files in, files out: no configuration, no database.
        Command::Policy { action } => return exit(policy(action)),
        Command::Plugin { action } => return exit(plugin(action).await),
        _ => {}
    }
    let mut config = match load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let _traces = telemetry::init(&config.log, &config.telemetry);
    exit(run(cli.command, &mut config).await)
}

fn exit(r: Result<(), Box<dyn std::error::Error>>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn plugin(action: PluginAction) -> Result<(), Box<dyn std::error::Error>> {
    match action {
        PluginAction::New { name, dir, sdk } => new_plugin(&name, dir, sdk),
        PluginAction::Run {
            plugin,
            manifest,
            hook,
            event,
            request_type,
            schedule,
            plugin_config,
        } => {
            let config = match plugin_config {
                Some(path) => serde_json::from_slice(&std::fs::read(&path)?)
                    .map_err(|e| format!("{}: {e}", path.display()))?,
                None => serde_json::json!({}),
            };
            let event = event.map(std::fs::read).transpose()?;
            run_hook(mdm_server::plugins::try_hook::TryHook {
                wasm: plugin,
                manifest,
                config,
                hook,
                event,
                request_type,
                schedule,
            })
            .await
        }
    }
}

fn new_plugin(
    name: &str,
    dir: Option<PathBuf>,
    sdk: String,
) -> Result<(), Box<dyn std::error::Error>> {
    use mdm_server::plugins::scaffold::{scaffold, SdkSource};
    let remote = ["https://", "http://", "ssh://", "git@"];
    let sdk = if remote.iter().any(|p| sdk.starts_with(p)) {
        SdkSource::Git(sdk)
    } else {
        SdkSource::Path(PathBuf::from(sdk))
    };
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    scaffold(name, &dir, &sdk)?;
    eprintln!(
        "wrote plugin {name} in {}: `cargo test` there runs its tests, `cargo build --release --target wasm32-wasip2` builds it",
        dir.display()
    );
    Ok(())
}

async fn run_hook(
    t: mdm_server::plugins::try_hook::TryHook,
) -> Result<(), Box<dyn std::error::Error>> {
    let out = mdm_server::plugins::try_hook::run(t).await?;
    println!("{}", serde_json::to_string_pretty(&out)?);
    if out.get("fault").is_some() {
        return Err("the plugin faulted (see \"fault\")".into());
    }
    Ok(())
}

fn policy(action: PolicyAction) -> Result<(), Box<dyn std::error::Error>> {
    use mdm_server::policies::{bundle, pack, signature::TrustedSigners};
    match action {
        PolicyAction::Pack { dir, sign, output } => {
            let key = sign.map(std::fs::read).transpose()?;
            let packed = pack::pack(&dir, key.as_deref())?;
            std::fs::write(&output, &packed.zip)?;
            let signed = if key.is_some() { ", signed" } else { "" };
            eprintln!(
                "packed version {} into {}{signed}",
                packed.bundle.manifest.version,
                output.display()
            );
            println!("{}", packed.bundle.digest);
        }
        PolicyAction::Verify {
            bundle: path,
            signer,
        } => {
            let bytes = std::fs::read(&path)?;
            let b = bundle::read(&bytes)?;
            if !signer.is_empty() {
                let sig = b.signature.as_deref().ok_or("the bundle is not signed")?;
                let by = TrustedSigners::load(&signer)?
                    .verify(&b.digest, sig)?
                    .to_string();
                eprintln!("signed by {by}");
            }
            eprintln!(
                "version {}: {} declarations, {} profiles",
                b.manifest.version,
                b.manifest.declarations.len(),
                b.manifest.profiles.len()
            );
            println!("{}", b.digest);
        }
    }
    Ok(())
}

/// `config --check`: what the server would say about this configuration at start, without starting: the
/// settings (loaded and validated once), the production settings (the warnings a loopback-only server
/// would start with, or why it would not start), and the files they name that start-up reads (the policy
/// signers).
/// The configuration (defaults, file, `MDM_*` variables) with the command line's overrides.
fn load(cli: &Cli) -> Result<Config, mdm_server::config::ConfigError> {
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(dir) = &cli.data_dir {
        config.data_dir = dir.clone();
    }
    Ok(config)
}

fn check_config(cli: &Cli) -> ExitCode {
    use mdm_server::policies::trust::{self, Trust};
    let checked = load(cli)
        .and_then(|config| Ok((config.production_check()?, config)))
        .map_err(|e| e.to_string())
        .and_then(|(mut warnings, config)| {
            Trust::load(&config.policies).map_err(|e| format!("policies.trusted_signers: {e}"))?;
            warnings.extend(trust::warning(&config.policies));
            Ok(warnings)
        });
    match checked {
        Ok(warnings) => {
            println!("OK");
            for w in warnings {
                println!("warning: {w}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn storage(config: &Config) -> Result<Storage, Box<dyn std::error::Error>> {
    Ok(Application::open_storage(config).await?)
}

async fn run(command: Command, config: &mut Config) -> Result<(), Box<dyn std::error::Error>> {
    match command {
        Command::Serve {
            listen,
            tls_cert,
            tls_key,
            tls_self_signed,
        } => {
            if let Some(l) = listen {
                config.listen = l;
            }
            if tls_cert.is_some() {
                config.tls.cert_file = tls_cert;
                config.tls.key_file = tls_key;
            }
            config.tls.self_signed |= tls_self_signed;
            let app = Application::build(config.clone()).await?;
            tracing::info!("mdm-server listening on {}", app.port());
            app.run_until_stopped().await?;
        }
        Command::Migrate => {
            storage(config).await?;
            println!("migrations applied");
        }
        Command::Apikey { action } => {
            let s = storage(config).await?;
            let now = SystemClock.now_ms();
            match action {
                KeyAction::Create { name, scopes } => {
                    let (rec, key) = apikeys::create(&s, &name, &scopes, now).await?;
                    eprintln!(
                        "created key {} ({}) with scopes: {}",
                        rec.id, rec.name, rec.scopes
                    );
                    eprintln!("store it now: it is not shown again");
                    println!("{key}");
                }
                KeyAction::List => {
                    for k in api_keys::list(&s.read()).await? {
                        let state = if k.revoked_at.is_some() {
                            "revoked"
                        } else {
                            "active"
                        };
                        println!(
                            "{}\t{}\t{}…\t{}\t{}",
                            k.id, k.name, k.prefix, k.scopes, state
                        );
                    }
                }
                KeyAction::Revoke { id } => {
                    if !api_keys::revoke(&s, &id, now).await? {
                        return Err(format!("no active key {id}").into());
                    }
                    println!("revoked {id}");
                }
            }
        }
        Command::Audit {
            action: AuditAction::Verify { expect_head },
        } => {
            let s = storage(config).await?;
            // What the server recorded and has not chained yet is chained first, as the server would.
            let sealed = audit_log::seal(&s).await?;
            if sealed > 0 {
                println!("chained {sealed} pending entries");
            }
            match audit_log::verify(&s.read()).await? {
                Verification::Intact { rows, head } => {
                    if let Some(expected) = expect_head {
                        if !audit_log::contains_hash(&s.read(), &expected).await? {
                            return Err(format!(
                                "audit log does not contain the expected head {expected}: rows after it were removed or the chain was rewritten"
                            )
                            .into());
                        }
                    }
                    println!("audit log intact: {rows} rows, head {head}");
                }
                Verification::Broken { id, reason } => {
                    return Err(format!("audit log broken at row {id}: {reason}").into());
                }
            }
        }
        // Secrets are left out (see `Config::to_toml`).
        Command::Config { .. } => print!("{}", config.to_toml()?),
        Command::Policy { action } => policy(action)?,
        Command::Plugin { action } => plugin(action).await?,
    }
    Ok(())
}
