//! The server binary: configuration from the environment (and a `.env` file in the working
//! directory), signals for shutdown.

use std::process::ExitCode;

use wagate::config::Config;

#[global_allocator]
static ALLOCATOR: wagate::Allocator = wagate::Allocator;

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wagate: {e}");
            return ExitCode::from(2);
        }
    };
    // Kept to the end of `main`: the log file writer flushes when it is dropped.
    let _log_files = match wagate::telemetry::init(&config) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("wagate: {e}");
            return ExitCode::from(2);
        }
    };
    match &config.env_file {
        Some(file) => tracing::info!(file = %file.display(), "settings read from a .env file"),
        None => tracing::info!("no .env file in the working directory"),
    }
    if let Some(dir) = &config.log_dir {
        tracing::info!(directory = %dir.display(), "logging to daily files too");
    }
    let listener = match tokio::net::TcpListener::bind(config.listen_addr()).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(address = %config.listen_addr(), error = %e, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    match wagate::app::run(config, listener, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server stopped with an error");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}
