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
    // A server's failure goes to its log; a command's is said once, on its standard error.
    let serving = matches!(cli.command, None | Some(cli::Command::Serve));
    match cli::run(cli, settings).await {
        Ok(code) => code,
        Err(err) => {
            if serving {
                tracing::error!(error = %err, "cmek-console failed");
            }
            eprintln!("cmek-console: {err}");
            ExitCode::FAILURE
        }
    }
}
