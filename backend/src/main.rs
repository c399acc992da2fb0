use std::process::ExitCode;

use clap::Parser;
use cmek_console::cli::{self, Cli};
use cmek_console::settings::Settings;
use cmek_console::telemetry;

#[actix_web::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let (settings, warnings) = match Settings::load(cli.config.as_deref()) {
        Ok(loaded) => loaded,
        Err(err) => {
            eprintln!("cmek-console: {err}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(settings.log_format);
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    match cli::run(cli, settings).await {
        Ok(code) => code,
        Err(err) => {
            tracing::error!(error = %err, "cmek-console failed");
            eprintln!("cmek-console: {err}");
            ExitCode::FAILURE
        }
    }
}
