//! The `freesky` command: parse the CLI, set up logging, load the config, then serve
//! or run a one-shot command. Everything else lives in the library.

#![forbid(unsafe_code)]

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use freesky::config::Config;
use freesky::services::registry::{Registry, Step};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

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
        #[arg(long, value_parser = listen_address)]
        bind: Option<String>,
    },
    /// Validate the config without serving; exit 2 with one line per problem.
    Check {
        /// Problems as a JSON array of {file, line, field, message} on stdout.
        #[arg(long)]
        json: bool,
    },
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
        /// Base URL of the `/logos/` links with `[logos] mode = "proxy"` or `"cache"`
        /// [default: as for `playlist`].
        #[arg(long, value_parser = base_url)]
        base_url: Option<String>,
    },
    /// Copy the SQLite store in `state_dir` (channel ids and numbers, mappings, service
    /// switches, accounts made through the API, movie and series ids, guide-match
    /// decisions, the tuner's identity) into the PostgreSQL database `server.state`
    /// names, which must hold no freesky state yet.
    CopyState,
    /// Write the merged M3U playlist to stdout.
    Playlist {
        /// Base URL the stream links should use [default: the config's
        /// `server.public_url`, else `http://` and `server.bind` (127.0.0.1 for an
        /// unspecified address)].
        #[arg(long, value_parser = base_url)]
        base_url: Option<String>,
    },
}

/// `--bind`: an address and port, as `server.bind` must be (no name to look up).
fn listen_address(s: &str) -> Result<String, String> {
    s.parse::<std::net::SocketAddr>()
        .map(|_| s.to_string())
        .map_err(|_| format!("`{s}` is not an address like 0.0.0.0:8005"))
}

/// `--base-url`: an http(s) URL with a host, as players will be given it.
fn base_url(s: &str) -> Result<String, String> {
    match url::Url::parse(s) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(s.to_string()),
        _ => Err(format!("`{s}` is not a URL like http://192.168.1.10:8005")),
    }
}

/// `check`'s warning lines on stderr: `warning: file:line: field: message`.
fn print_warnings(file: &str, warnings: &[freesky::config::Problem]) {
    for w in warnings {
        let _ = writeln!(
            std::io::stderr(),
            "warning: {file}:{}: {}: {}",
            w.line,
            w.field,
            w.message
        );
    }
}

/// mimalloc, not glibc malloc: see the note on the dependency in Cargo.toml.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    // `check` writes what it found and exits with its code, whatever reads it (a pipe
    // closed early by `head` is no crash).
    let check_json = matches!(cli.command, Some(Command::Check { json: true }));
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) if check_json => {
            let problems: Vec<_> = e
                .problems
                .iter()
                .map(|p| {
                    serde_json::json!({
                        "file": e.file, "line": p.line, "field": p.field, "message": p.message,
                    })
                })
                .collect();
            let _ = writeln!(std::io::stdout(), "{}", serde_json::Value::Array(problems));
            return ExitCode::from(2);
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "{e}");
            // What the file would also be warned of: fixing the errors alone would not
            // say it.
            print_warnings(&e.file, &e.warnings);
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Check { json }) = cli.command {
        print_warnings(&config.source, &config.warnings);
        if json {
            let _ = writeln!(std::io::stdout(), "[]");
        } else {
            let warned = match config.warnings.len() {
                0 => String::new(),
                1 => ", 1 warning".to_string(),
                n => format!(", {n} warnings"),
            };
            let services = match config.services.len() {
                1 => "1 service".to_string(),
                n => format!("{n} services"),
            };
            let _ = writeln!(
                std::io::stdout(),
                "{}: ok ({services}{warned})",
                config.source
            );
        }
        return ExitCode::SUCCESS;
    }
    config.log_warnings();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(run(cli.command, config));
    // Tasks still running (a connection closed by the exit) are dropped, not awaited.
    rt.shutdown_timeout(Duration::from_secs(1));
    match result {
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
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(|| LogWriter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn run(command: Option<Command>, mut config: Config) -> anyhow::Result<()> {
    survive_file_size_limit()?;
    match command.unwrap_or(Command::Serve { bind: None }) {
        Command::Serve { bind } => {
            // Applied again to each reloaded config.
            let overrides = move |c: &mut Config| {
                if let Some(b) = &bind {
                    c.server.bind.clone_from(b);
                }
            };
            overrides(&mut config);
            let bind = config.server.bind.clone();
            tracing::info!(config = %config.source, services = config.services.len(), "starting");
            // Checked and bound first: a bad key or a busy port leaves no state_dir
            // behind.
            freesky::preflight(&config)?;
            let listener = tokio::net::TcpListener::bind(&bind)
                .await
                .with_context(|| {
                    format!(
                        "cannot listen on {bind} (another server there? `serve --bind \
                         0.0.0.0:8006` or `[server] bind` gives this one another port)"
                    )
                })?;
            // Held until the process ends.
            let _lock = lock_state_dir(&config)?;
            let state = freesky::state(config)?;
            // Installed before serving: from here on a signal is handled, not fatal.
            let (first, second) = stop_signals()?;
            let reloader = freesky::reload::Reloader::start(state, overrides);
            reload_on_hangup(&reloader)?;
            tracing::info!("serving on http://{}", listener.local_addr()?);
            freesky::serve(listener, reloader, first, second).await?;
            tracing::info!("stopped");
            Ok(())
        }
        Command::Check { .. } => Ok(()),
        Command::Channels { search, json } => {
            let command = CommandState::open(config)?;
            let state = &command.state;
            let progress = Progress::start(&state.registry, "fetching channels");
            let observe = |name: &str, step: Step<'_>| {
                if let Some(p) = &progress {
                    p.step(name, step, false);
                }
            };
            let lineup = state.registry.lineup_observed(Some(&observe)).await?;
            if progress.is_none() {
                for s in state.registry.status().iter().filter(|s| s.enabled) {
                    if let Some(err) = &s.last_error {
                        eprintln!("warning: service {}: {err}", s.name);
                    }
                }
            }
            drop(progress); // the last progress line ends before the table starts
            let chosen: Vec<_> = match &search {
                Some(q) => lineup.search(q),
                None => lineup.channels.iter().collect(),
            };
            // Buffered: stdout alone is line-buffered, a write call per line (millions
            // for the JSON of a big lineup).
            let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
            if json {
                serde_json::to_writer_pretty(&mut out, &chosen)?;
                writeln!(out)?;
            } else {
                writeln!(out, "{:>5}  {:<32} {:<20} SOURCES", "NO.", "NAME", "GROUP")?;
                // Upstream text: its control characters (terminal escapes) are not
                // the terminal's to read.
                let clean =
                    |s: &str| -> String { s.chars().map(freesky::m3u::printable).collect() };
                for c in chosen {
                    let sources: Vec<_> = c.sources.iter().map(|s| s.service.as_str()).collect();
                    writeln!(
                        out,
                        "{:>5}  {:<32} {:<20} {}",
                        c.number,
                        clean(&c.name),
                        clean(&c.group),
                        clean(&sources.join(", "))
                    )?;
                }
            }
            out.flush()?;
            command.note();
            Ok(())
        }
        Command::Guide { gzip, base_url } => {
            let base_url = base_url.unwrap_or_else(|| freesky::http::own_base_url(&config));
            let command = CommandState::open(config)?;
            let state = &command.state;
            let progress = Progress::start(&state.registry, "fetching channels");
            let observe = |name: &str, step: Step<'_>| {
                if let Some(p) = &progress {
                    p.step(name, step, true);
                }
            };
            let guide = state.guides.refresh_observed(Some(&observe)).await?;
            let mut failed = Vec::new();
            for s in state.registry.status().iter().filter(|s| s.enabled) {
                if let Some(err) = state.guides.status_of(&s.name).and_then(|g| g.last_error) {
                    failed.push(format!("guide of {}: {err}", s.name));
                }
            }
            for (name, status) in state.guides.extra_status() {
                if let Some(err) = status.last_error {
                    failed.push(format!("guide {name} ([[guides]]): {err}"));
                }
            }
            if progress.is_some() {
                drop(progress);
                eprintln!(
                    "guide: {}, {}",
                    count(guide.channels, "channel"),
                    count(guide.programmes, "programme")
                );
            } else {
                for f in &failed {
                    eprintln!("warning: {f}");
                }
            }
            // Every guide failed: no empty guide on stdout (`freesky guide > epg.xml`
            // in a script would replace a good one), and a failing exit.
            if guide.programmes == 0 && !failed.is_empty() {
                anyhow::bail!("no guide was read: {}", failed.join("; "));
            }
            // Icons where `[logos] mode` points them, as `/epg.xml` writes them.
            let lineup = state.registry.lineup().await?;
            let base = base_url.trim_end_matches('/');
            let bytes = if gzip { &guide.gz } else { &guide.xml };
            let bytes = state.logos.guide(base, bytes, &lineup, gzip);
            std::io::stdout().lock().write_all(&bytes)?;
            command.note();
            Ok(())
        }
        Command::CopyState => {
            let url = config.server.state.expose().trim();
            if url.is_empty() || url == "sqlite" {
                anyhow::bail!(
                    "server.state is not a PostgreSQL URL: set it (in {}) to the database to copy into",
                    config.source
                );
            }
            let dir = &config.server.state_dir;
            // A server writing the store meanwhile: the copy could miss its last
            // changes, and the server goes on with the SQLite store.
            if let Some(holder) = freesky::store::StateLock::holder(dir)? {
                anyhow::bail!(
                    "state_dir {} is in use by a running server ({holder}): stop it first, so \
                     that the copy holds its last changes",
                    dir.display()
                );
            }
            let copied = freesky::store::Store::copy_sqlite_to_postgres(dir, url).await?;
            println!(
                "copied {copied} from {} into PostgreSQL",
                dir.join("freesky.db").display()
            );
            Ok(())
        }
        Command::Playlist { base_url } => {
            let base_url = base_url.unwrap_or_else(|| freesky::http::own_base_url(&config));
            let command = CommandState::open(config)?;
            let state = &command.state;
            let base = base_url.trim_end_matches('/');
            // Logos where `[logos] mode` points them, as `/playlist.m3u` writes them.
            let lineup = state.logos.lineup(base, state.registry.lineup().await?);
            let text = freesky::http::render_playlist(&lineup, base);
            std::io::stdout().lock().write_all(text.as_bytes())?;
            command.note();
            Ok(())
        }
    }
}

/// The state_dir lock (`StateLock`) for as long as the server runs: a second server
/// on the same state_dir is refused, naming the first. With the SQLite store, two would
/// give channels conflicting numbers; instances sharing a PostgreSQL database need a
/// state_dir each too, as it holds the instance's id (under which the connections of
/// its viewers' accounts are counted for the others), its logo cache and its lists.
fn lock_state_dir(config: &Config) -> anyhow::Result<Option<freesky::store::StateLock>> {
    let dir = &config.server.state_dir;
    match freesky::store::StateLock::acquire(dir)? {
        Ok(lock) => Ok(Some(lock)),
        Err(holder) if freesky::store::uses_sqlite(config.server.state.expose()) => anyhow::bail!(
            "state_dir {} is in use by another server ({holder}): stop it, or give \
             this one a state_dir of its own (two servers on one SQLite store would give \
             channels conflicting numbers)",
            dir.display()
        ),
        Err(holder) => anyhow::bail!(
            "state_dir {} is in use by another server ({holder}): give each instance \
             sharing the database a state_dir of its own (it holds the instance's id, \
             under which its viewers' connections are counted, and its logo cache)",
            dir.display()
        ),
    }
}

/// The state of a one-shot command (`channels`, `playlist`, `guide`). Beside a running
/// server on the same SQLite state_dir the store is opened for display only: new
/// channels get numbers here that are not kept, and the server's are the ones that
/// last (`CommandState::note` says so when it happened).
struct CommandState {
    state: freesky::AppState,
    /// The server that holds the state_dir, and the state_dir.
    beside: Option<(String, std::path::PathBuf)>,
}

impl CommandState {
    fn open(config: Config) -> anyhow::Result<CommandState> {
        if freesky::store::uses_sqlite(config.server.state.expose()) {
            let dir = config.server.state_dir.clone();
            if let Some(holder) = freesky::store::StateLock::holder(&dir)? {
                return Ok(CommandState {
                    state: freesky::state_display_only(config)?,
                    beside: Some((holder.to_string(), dir)),
                });
            }
        }
        Ok(CommandState {
            state: freesky::state(config)?,
            beside: None,
        })
    }

    /// On stderr, when channels were numbered for display only.
    fn note(&self) {
        let numbered = self.state.registry.store().numbered_for_display();
        if let (Some((holder, dir)), 1..) = (&self.beside, numbered) {
            eprintln!(
                "note: a server ({holder}) uses this state_dir ({}): {numbered} channel(s) it \
                 has not seen yet are numbered here for display only; the server numbers \
                 them when it lists them",
                dir.display()
            );
        }
    }
}

/// The progress lines while they are drawn: log lines are written through them (see
/// `LogWriter`) so a log line does not tear a line being redrawn.
static BARS: Mutex<Option<MultiProgress>> = Mutex::new(None);

fn bars() -> Option<MultiProgress> {
    BARS.lock().ok().and_then(|b| b.clone())
}

/// Log lines to stderr, above the progress lines when those are drawn.
struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match bars() {
            Some(bars) => bars.suspend(|| std::io::stderr().write(buf)),
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// One line per enabled service on stderr while `channels` or `guide` fetches: what it
/// is doing, then how many channels/programmes it gave or its error, and how long it
/// took. Only on a terminal: stdout is data, and piped stderr stays free of redraws.
struct Progress {
    bars: Vec<(String, ProgressBar, Instant)>,
}

impl Progress {
    /// `None` unless stderr is a terminal.
    fn start(registry: &Registry, first: &str) -> Option<Self> {
        if !std::io::stderr().is_terminal() {
            return None;
        }
        let mut services: Vec<_> = registry
            .status()
            .into_iter()
            .filter(|s| s.enabled)
            .collect();
        services.sort_by_key(|s| s.priority);
        let width = services.iter().map(|s| s.name.len()).max().unwrap_or(0);
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        *BARS.lock().ok()? = Some(multi.clone());
        let style =
            ProgressStyle::with_template("{spinner:.cyan} {prefix:.bold} {msg} ({elapsed})")
                .expect("the progress template is valid");
        let bars = services
            .into_iter()
            .map(|s| {
                let bar = multi.add(
                    ProgressBar::new_spinner()
                        .with_style(style.clone())
                        .with_prefix(format!("{:<width$}", s.name))
                        .with_message(first.to_string()),
                );
                bar.enable_steady_tick(Duration::from_millis(100));
                (s.name, bar, Instant::now())
            })
            .collect();
        Some(Self { bars })
    }

    /// Shows `step` of service `name`; with `guide_next`, a channel list is not the end.
    fn step(&self, name: &str, step: Step<'_>, guide_next: bool) {
        let Some((_, bar, started)) = self.bars.iter().find(|(n, _, _)| n == name) else {
            return;
        };
        // (finished, failed, message)
        let (done, failed, message) = match step {
            Step::Channels(Ok(n)) if guide_next => {
                let message = format!("{}, fetching guide", count(n, "channel"));
                (false, false, message)
            }
            Step::Channels(Err(e)) if guide_next => (
                false,
                true,
                format!("channel list failed ({e}), fetching guide"),
            ),
            Step::Channels(Ok(n)) => (true, false, count(n, "channel")),
            Step::Channels(Err(e)) => (true, true, format!("error: {e}")),
            Step::Guide(Ok(None)) => (true, false, "no guide".to_string()),
            Step::Guide(Ok(Some((channels, programmes)))) => {
                let message = format!(
                    "{} for {}",
                    count(programmes, "programme"),
                    count(channels, "channel")
                );
                (true, false, message)
            }
            Step::Guide(Err(e)) => (true, true, format!("error: {e}")),
        };
        if done {
            let mark = if failed { "✗" } else { "✓" };
            bar.set_style(
                ProgressStyle::with_template(&format!("{mark} {{prefix:.bold}} {{msg}}"))
                    .expect("the progress template is valid"),
            );
            bar.finish_with_message(format!(
                "{message} ({:.1}s)",
                started.elapsed().as_secs_f64()
            ));
        } else {
            bar.set_message(message);
        }
    }
}

impl Drop for Progress {
    /// Leaves the lines as they are (stopping any never told anything: a cached
    /// lineup, or an error) and ends the last one; later log lines go straight to stderr.
    fn drop(&mut self) {
        for (_, bar, _) in &self.bars {
            if !bar.is_finished() {
                bar.finish();
            }
        }
        if let Ok(mut bars) = BARS.lock() {
            *bars = None;
        }
        if !self.bars.is_empty() {
            eprintln!();
        }
    }
}

/// "1 channel", "2 channels".
fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("{n} {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// SIGTERM or SIGINT (Ctrl-C): the first resolves the first future (stop gracefully),
/// the next one the second (stop at once).
fn stop_signals() -> anyhow::Result<(
    impl std::future::Future<Output = ()> + Send + 'static,
    impl std::future::Future<Output = ()> + Send + 'static,
)> {
    #[cfg(unix)]
    let (mut term, mut int) = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
        )
    };
    let (first_tx, first) = tokio::sync::oneshot::channel::<()>();
    let (second_tx, second) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        for (i, tx) in [first_tx, second_tx].into_iter().enumerate() {
            #[cfg(unix)]
            let name = tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            };
            #[cfg(not(unix))]
            let name = {
                let _ = tokio::signal::ctrl_c().await;
                "Ctrl-C"
            };
            if i == 0 {
                tracing::info!(signal = name, "signal received: stopping");
            } else {
                tracing::warn!(signal = name, "second signal received: stopping at once");
            }
            let _ = tx.send(());
        }
    });
    // A sender dropped unsent (never, while the task runs) must not stop anything.
    let wait = |rx: tokio::sync::oneshot::Receiver<()>| async move {
        if rx.await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    Ok((wait(first), wait(second)))
}

/// SIGXFSZ, sent when a write goes past the file-size limit (`ulimit -f`), is handled
/// (and logged) instead of killing the process: the write then fails with `EFBIG`
/// ("File too large") and takes the path of any failed write (an error answered, the
/// last good state kept). tokio keeps the handler for the life of the process.
fn survive_file_size_limit() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut xfsz =
            signal(SignalKind::from_raw(libc::SIGXFSZ)).context("cannot handle SIGXFSZ")?;
        tokio::spawn(async move {
            while xfsz.recv().await.is_some() {
                tracing::warn!(
                    signal = "SIGXFSZ",
                    "a write went past the file-size limit (ulimit -f): it fails, freesky goes on"
                );
            }
        });
    }
    Ok(())
}

/// SIGHUP reloads the config file (as `POST /api/config/reload` does; a refused file
/// is logged problem by problem and the running config stays).
fn reload_on_hangup(reloader: &std::sync::Arc<freesky::reload::Reloader>) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("cannot handle SIGHUP")?;
        // Weak: the reloader (and the state it holds) ends with serving.
        let reloader = std::sync::Arc::downgrade(reloader);
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!(signal = "SIGHUP", "signal received: reloading the config");
                let Some(r) = reloader.upgrade() else { return };
                // No one else sees a refusal here: it is logged now, each problem on
                // its own line (`POST /api/config/reload` answers it instead).
                match r.reload() {
                    Ok(_) => {}
                    Err(freesky::reload::ReloadError::Config(e)) => {
                        for line in e.to_string().lines() {
                            tracing::error!(problem = line, "config reload refused");
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "config reload failed"),
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = reloader;
    Ok(())
}
