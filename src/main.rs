//! The `freesky` command: parse the CLI, set up logging, load the config, then serve
//! or run a one-shot command. Everything else lives in the library.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use freesky::config::Config;

#[derive(Parser)]
#[command(
    name = "freesky",
    version,
    about = "IPTV bridge: many upstream services, one M3U/HLS source"
)]
struct Cli {
    /// Config file (default: config/freesky.toml if present, else the built-in demo config).
    #[arg(long, global = true, env = "FREESKY_CONFIG")]
    config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve {
        /// Listen address, overriding `server.bind`.
        #[arg(long)]
        bind: Option<String>,
    },
    /// Validate the config without serving; exit 2 with one line per problem.
    Check,
    /// Fetch every enabled service once and print the merged lineup.
    Channels {
        /// Only channels whose name, group or tags match.
        #[arg(long)]
        search: Option<String>,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Fetch every enabled service's guide once and write the merged XMLTV to stdout.
    Guide {
        /// Gzip the output.
        #[arg(long)]
        gzip: bool,
    },
    /// Write the merged M3U playlist to stdout.
    Playlist {
        /// Base URL the stream links should use.
        #[arg(long, default_value = "http://127.0.0.1:8005")]
        base_url: String,
    },
}

/// mimalloc, not glibc malloc: see the note on the dependency in Cargo.toml.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if matches!(cli.command, Some(Command::Check)) {
        println!("{}: ok ({} services)", config.source, config.services.len());
        return ExitCode::SUCCESS;
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,hyper=warn,reqwest=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn run(command: Option<Command>, mut config: Config) -> anyhow::Result<()> {
    match command.unwrap_or(Command::Serve { bind: None }) {
        Command::Serve { bind } => {
            if let Some(b) = bind {
                config.server.bind = b;
            }
            let bind = config.server.bind.clone();
            tracing::info!(config = %config.source, services = config.services.len(), "starting");
            let state = freesky::state(config)?;
            let listener = tokio::net::TcpListener::bind(&bind)
                .await
                .with_context(|| format!("cannot listen on {bind}"))?;
            tracing::info!("serving on http://{}", listener.local_addr()?);
            freesky::run(listener, state, shutdown_signal()).await?;
            tracing::info!("stopped");
            Ok(())
        }
        Command::Check => Ok(()),
        Command::Channels { search, json } => {
            let state = freesky::state(config)?;
            let progress = std::io::stderr().is_terminal();
            if progress {
                eprint!("fetching channel lists...");
            }
            let lineup = state.registry.lineup().await?;
            if progress {
                eprintln!(" done");
            }
            for s in state.registry.status().iter().filter(|s| s.enabled) {
                if let Some(err) = &s.last_error {
                    eprintln!("warning: service {}: {err}", s.name);
                }
            }
            let chosen: Vec<_> = match &search {
                Some(q) => lineup.search(q),
                None => lineup.channels.iter().collect(),
            };
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(&mut out, &chosen)?;
                writeln!(out)?;
            } else {
                for c in chosen {
                    let sources: Vec<_> = c.sources.iter().map(|s| s.service.as_str()).collect();
                    writeln!(
                        out,
                        "{:>5}  {:<32} {:<20} {}",
                        c.number,
                        c.name,
                        c.group,
                        sources.join(", ")
                    )?;
                }
            }
            Ok(())
        }
        Command::Guide { gzip } => {
            let state = freesky::state(config)?;
            let progress = std::io::stderr().is_terminal();
            if progress {
                eprint!("fetching guides...");
            }
            let guide = state.guides.refresh().await?;
            if progress {
                eprintln!(
                    " {} channels, {} programmes",
                    guide.channels, guide.programmes
                );
            }
            for s in state.registry.status().iter().filter(|s| s.enabled) {
                if let Some(err) = state.guides.status_of(&s.name).and_then(|g| g.last_error) {
                    eprintln!("warning: guide of {}: {err}", s.name);
                }
            }
            let bytes = if gzip { &guide.gz } else { &guide.xml };
            std::io::stdout().lock().write_all(bytes)?;
            Ok(())
        }
        Command::Playlist { base_url } => {
            let state = freesky::state(config)?;
            let lineup = state.registry.lineup().await?;
            let text = freesky::http::render_playlist(&lineup, base_url.trim_end_matches('/'));
            std::io::stdout().lock().write_all(text.as_bytes())?;
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
