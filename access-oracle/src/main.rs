//! The `access-oracle` binary: parses the command line, sets up logging, runs.

use std::process::ExitCode;

use access_oracle::admin;
use access_oracle::cli::{Cli, Command, LogFormat};
use access_oracle::commands::demo;
use access_oracle::config::{self, Overrides};
use access_oracle::server::{self, ConfigSource};
use clap::Parser;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo prints its own account of what happens; the oracle's logs would repeat it.
    let default_level = match cli.command {
        Command::Demo { .. } => "error",
        _ => "info",
    };
    init_logging(cli.log_format, default_level);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("access-oracle: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // Colours only on a terminal: a log file or the journal gets plain text, so the only
    // escapes in it are the ones the formatter writes for what outsiders sent.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn audit(
    mut at: access_oracle::commands::audit::Location,
    command: access_oracle::cli::AuditCommand,
) -> anyhow::Result<ExitCode> {
    use access_oracle::audit::search::Query;
    use access_oracle::cli::AuditCommand;
    use access_oracle::commands::audit::{run_search, run_verify};
    match command {
        AuditCommand::Verify { key_file, json } => {
            at.key_file = key_file;
            run_verify(&at, json)
        }
        AuditCommand::Search {
            user,
            ip,
            since,
            until,
            kind,
            limit,
            json,
            key_file,
        } => {
            at.key_file = key_file;
            let ip = ip
                .map(|text| {
                    text.parse::<ipnet::IpNet>()
                        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                        .map_err(|_| {
                            anyhow::anyhow!("--ip {text:?} is not an address or a network")
                        })
                })
                .transpose()?;
            let kinds = kind
                .iter()
                .map(|k| {
                    serde_json::from_value(serde_json::Value::String(k.clone())).map_err(|_| {
                        anyhow::anyhow!(
                            "--kind {k:?}: expected auth, sent, logout, mailbox, admin, alert, release or unblock"
                        )
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let query = Query {
                user,
                ip,
                since,
                until,
                kinds,
            };
            run_search(&at, &query, limit, json)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve {
            config,
            socket,
            admin_socket,
            state_dir,
        } => {
            let overrides = Overrides {
                exim_socket: socket,
                admin_socket,
                state_dir,
            };
            let cfg = config::load(config.as_deref(), &overrides)?;
            let source = ConfigSource {
                path: config,
                overrides,
            };
            // Scheduled reports ([reports], read at start) run beside the server; they
            // stop with it.
            let reports = cfg.clone();
            runtime()?.block_on(async move {
                let (stop, stopped) = tokio::sync::watch::channel(false);
                let scheduled = tokio::spawn(access_oracle::commands::report::schedule::run(
                    reports, stopped,
                ));
                let result = server::run(cfg, source).await;
                let _ = stop.send(true);
                scheduled.abort();
                result
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { file } => match config::load(Some(&file), &Overrides::default()) {
            Ok(cfg) => {
                // Exactly what serve checks before it starts: the files the config names
                // (GeoIP databases, lists, the accounts file, keys), the state
                // directory, the sockets' paths.
                let preflight = server::preflight::run(&cfg);
                for w in &preflight.warnings {
                    eprintln!("{}: warning: {w}", file.display());
                }
                if let Err(problems) = preflight.into_result() {
                    eprintln!("{}: {problems}", file.display());
                    return Ok(ExitCode::FAILURE);
                }
                println!(
                    "{}: ok (exim socket {}, admin socket {}, state {})",
                    file.display(),
                    cfg.exim_socket.path.display(),
                    cfg.admin_socket.path.display(),
                    cfg.state_dir.display()
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(ExitCode::FAILURE)
            }
        },
        Command::Ctl {
            socket,
            config,
            json,
            request,
        } => {
            let req = request.to_request().map_err(|e| anyhow::anyhow!(e))?;
            let packaged = std::path::Path::new(admin::ctl::PACKAGED_CONFIG);
            let socket = admin::ctl::find_socket(socket, config, packaged)?;
            let data = admin::ctl::call(&socket, &req)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&data)?);
            } else {
                let view = admin::views::View::read(&req, data).map_err(|e| {
                    anyhow::anyhow!("unexpected answer from the oracle at {socket}: {e}")
                })?;
                println!("{}", admin::ctl::render(&view, admin::ctl::output_width()));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Parse {
            format,
            stats,
            dead_letters,
            files,
        } => access_oracle::commands::parse::run_cli(format, stats, files, dead_letters),
        Command::Replay {
            config,
            format,
            json,
            files,
        } => access_oracle::commands::replay::run_cli(
            &access_oracle::commands::replay::ReplayOptions {
                config,
                format,
                json,
                files,
            },
        ),
        Command::Ingest {
            config,
            state_dir,
            format,
            dead_letters,
            json,
            quiet,
            files,
        } => access_oracle::commands::ingest::run_cli(
            &access_oracle::commands::ingest::IngestOptions {
                config,
                state_dir,
                format,
                dead_letters,
                json,
                progress: !quiet,
                files,
            },
        ),
        Command::Audit {
            config,
            state_dir,
            dir,
            command,
        } => audit(
            access_oracle::commands::audit::Location {
                config,
                state_dir,
                dir,
                key_file: None,
            },
            command,
        ),
        Command::Report {
            config,
            state_dir,
            dir,
            key_file,
            since,
            until,
            period,
            user,
            format,
            output,
            pseudonymise,
            truncate_addresses,
        } => access_oracle::commands::report::run(
            &access_oracle::commands::report::Options {
                config,
                state_dir,
                dir,
                key_file,
                since,
                until,
                period,
                user,
                format,
                output,
                pseudonymise,
                truncate_addresses,
            },
            jiff::Timestamp::now(),
        ),
        Command::Demo { lib, keep } => runtime()?.block_on(demo::run(lib, keep)),
    }
}
