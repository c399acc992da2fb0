//! The operator's command line: `serve` (the default), `migrate`, `api-key create`,
//! `sign-in-link`, `organization create`, `key impact`, `audit verify`, `audit verify-export`
//! and `audit rotate-key`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use uuid::Uuid;

use crate::domain::audit::{Checkpoint, Verification};
use crate::domain::clock::SystemClock;
use crate::domain::identity::Role;
use crate::settings::Settings;
use crate::startup::{self, Application, KeyAccess, StartupError};

#[derive(Parser)]
#[command(
    name = "cmek-console",
    version,
    about = "Console and REST API for customer-managed encryption keys"
)]
pub struct Cli {
    /// A TOML settings file (also `CMEK_CONFIG`); environment variables override it.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Migrate the database and serve the console (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Manage API keys for automation.
    #[command(subcommand)]
    ApiKey(ApiKeyCommand),
    /// Print a new one-time sign-in link for the organization's first owner.
    SignInLink,
    /// Manage organizations.
    #[command(subcommand)]
    Organization(OrganizationCommand),
    /// Look at encryption keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Check the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Subcommand)]
pub enum KeyCommand {
    /// What the key protects and what each action on it would break (delete it here,
    /// disable it in the KMS, disable one of its versions). Exits 1 when no action is safe.
    Impact {
        /// The key's id (as the API and the key's page show it).
        key_id: Uuid,
        /// Needed only when the install has several organizations.
        #[arg(long)]
        organization: Option<Uuid>,
    },
}

#[derive(Subcommand)]
pub enum ApiKeyCommand {
    /// Create an API key and print it once.
    Create {
        #[arg(long, value_parser = parse_role)]
        role: Role,
        #[arg(long)]
        name: String,
        /// Needed only when the install has several organizations.
        #[arg(long)]
        organization: Option<Uuid>,
    },
}

#[derive(Subcommand)]
pub enum OrganizationCommand {
    /// Create an organization whose first owner joins by single sign-on with this email.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        owner_email: String,
    },
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Verify every row of the log (format 1's legacy segment and every organization's
    /// chain); exits 1 and names the first bad event if it is broken, 2 if it cannot verify
    /// (no signing key file, an unreadable checkpoint). Prints a signed checkpoint of format
    /// 1's chain (closed: where it ended).
    Verify {
        /// A checkpoint kept earlier, repeatable: a file holding an organization's signed
        /// checkpoint (a webhook's `audit.checkpoint` data, or an export's `checkpoint`), or
        /// a format-1 token (`cp1....`, from this command). Also checks that no event it
        /// covers was removed or replaced since, even with the log's own checkpoints and
        /// head rewritten.
        #[arg(long)]
        checkpoint: Vec<String>,
    },
    /// Add a new signing key to the signing key file, valid from now or from `--in` ahead
    /// (the key before it retires then), and a new chain key to the chain key file. Running
    /// instances read the signing key file every 10 s and sign with the new key from its
    /// time on; the chain key is used from their next start.
    RotateKey {
        /// How far ahead the new signing key becomes valid (`2m`, `10m`, `1h`; at least 2
        /// minutes, the default): every instance must hold the new key before then. Running
        /// instances read the file every 10 s; give more to copy it to instances that do not
        /// share it.
        #[arg(long = "in", value_name = "DURATION", value_parser = parse_ahead, default_value = "2m")]
        ahead: std::time::Duration,
    },
    /// Verify an organization's audit export (format cmek-console-audit/2) offline, with no
    /// database: exits 0 when intact, 1 naming the first broken event, 2 when unreadable.
    VerifyExport {
        /// The export (JSON or CSV).
        file: PathBuf,
        /// The published signing keys (`GET /api/v1/audit/signing-keys`, JSON).
        #[arg(long)]
        keys: PathBuf,
        /// A checkpoint you kept (JSON, e.g. an `audit.checkpoint` webhook's `data`);
        /// repeatable.
        #[arg(long)]
        checkpoint: Vec<PathBuf>,
        /// The export is a part of the chain (a time range): it may start after the chain's
        /// first event.
        #[arg(long)]
        partial: bool,
        /// The export holds the events a filter chose (an action, an actor, an outcome, a
        /// project): each is checked, but events may be missing between them.
        #[arg(long, conflicts_with = "partial")]
        selection: bool,
    },
}

/// `audit verify-export`: reads the keys and kept checkpoints whole, the export as a stream.
fn verify_export(
    file: &PathBuf,
    keys: &PathBuf,
    kept: &[PathBuf],
    extent: crate::crypto::audit_chain::Extent,
) -> ExitCode {
    use crate::crypto::audit_chain::{self, Checkpoint as Kept, ExportError, PublishedKey};
    #[derive(serde::Deserialize)]
    struct Keys {
        keys: Vec<PublishedKey>,
    }
    let read = |path: &PathBuf| std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()));
    let inputs = read(keys)
        .and_then(|raw| {
            let parsed = serde_json::from_slice::<Keys>(&raw)
                .map_err(|e| format!("{}: not a signing keys file: {e}", keys.display()))?;
            // A key the file cannot vouch for is a bad file (2), not a broken log (1).
            match parsed.keys.iter().find_map(PublishedKey::problem) {
                Some(problem) => Err(format!("{}: {problem}", keys.display())),
                None => Ok(parsed),
            }
        })
        .and_then(|keys| {
            let kept = kept
                .iter()
                .map(|p| {
                    read(p).and_then(|raw| {
                        serde_json::from_slice::<Kept>(&raw)
                            .map_err(|e| format!("{}: not a checkpoint: {e}", p.display()))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let export =
                std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
            Ok((keys.keys, kept, export))
        });
    let (keys, kept, export) = match inputs {
        Ok(inputs) => inputs,
        Err(problem) => {
            eprintln!("cmek-console: {problem}");
            return ExitCode::from(2);
        }
    };
    if kept.is_empty() {
        eprintln!(
            "cmek-console: no --checkpoint given: the export's own checkpoint proves nothing \
             against whoever made the export; pass the checkpoints you kept"
        );
    }
    // The CSV form starts with its header; anything else is read as JSON.
    let mut export = std::io::BufReader::new(export);
    let csv = std::io::BufRead::fill_buf(&mut export).is_ok_and(|b| b.starts_with(b"record,"));
    let verified = if csv {
        audit_chain::verify_csv_reader(export, &keys, &kept, extent)
    } else {
        audit_chain::verify_export_reader(export, &keys, &kept, extent)
    };
    match verified {
        Ok(v) => {
            println!(
                "Verified: {} events, seq {} to {}, head {}; checkpoints matched: {}.",
                v.events,
                v.first_seq.map_or("-".into(), |s| s.to_string()),
                v.last_seq.map_or("-".into(), |s| s.to_string()),
                v.head_hash.as_deref().unwrap_or("-"),
                if v.checkpoints.is_empty() {
                    "none".to_owned()
                } else {
                    format!("{:?}", v.checkpoints)
                }
            );
            if !v.unchecked.is_empty() {
                println!(
                    "Not checked (their events are not in this export): checkpoints of {:?}.",
                    v.unchecked
                );
            }
            ExitCode::SUCCESS
        }
        Err(ExportError::Broken(b)) => {
            println!("NOT VERIFIED: {b}");
            ExitCode::FAILURE
        }
        Err(e @ ExportError::Unreadable(_)) => {
            eprintln!("cmek-console: {e}");
            ExitCode::from(2)
        }
    }
}

/// At least two minutes: a running instance reads the key file every 10 s, and a round that
/// failed is retried with a backoff of up to a minute; the new key must reach every
/// instance before it becomes valid.
fn parse_ahead(text: &str) -> Result<std::time::Duration, String> {
    crate::settings::parse_duration(text)
        .filter(|d| {
            (std::time::Duration::from_secs(120)..=std::time::Duration::from_secs(30 * 86_400))
                .contains(d)
        })
        .ok_or_else(|| {
            format!("`{text}` is not a duration from 2 minutes to 30 days, like 2m, 10m or 1h")
        })
}

fn parse_role(text: &str) -> Result<Role, String> {
    Role::parse(text).ok_or_else(|| Role::CHOICES.to_owned())
}

pub async fn run(cli: Cli, settings: Settings) -> Result<ExitCode, StartupError> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Audit(AuditCommand::VerifyExport {
            file,
            keys,
            checkpoint,
            partial,
            selection,
        }) => {
            use crate::crypto::audit_chain::Extent;
            let extent = match (partial, selection) {
                (_, true) => Extent::Selection,
                (true, _) => Extent::Part,
                _ => Extent::Whole,
            };
            Ok(verify_export(&file, &keys, &checkpoint, extent))
        }
        Command::Serve => serve(settings).await,
        Command::Migrate => {
            startup::console(&settings, Arc::new(SystemClock)).await?;
            println!("Database is up to date.");
            Ok(ExitCode::SUCCESS)
        }
        Command::ApiKey(ApiKeyCommand::Create {
            role,
            name,
            organization,
        }) => {
            let console = startup::console(&settings, Arc::new(SystemClock)).await?;
            console.identity().ensure_organization().await?;
            let operator = console.identity().operator(organization).await?;
            let issued = console
                .identity()
                .create_api_key(&operator, &name, role)
                .await?;
            println!(
                "Created API key \"{}\" (role {}, id {}). It is shown only now:",
                issued.key.name,
                role.as_str(),
                issued.key.id
            );
            println!("{}", issued.secret);
            Ok(ExitCode::SUCCESS)
        }
        Command::SignInLink => {
            let console = startup::console(&settings, Arc::new(SystemClock)).await?;
            let owner = console.identity().ensure_organization().await?;
            let token = console.identity().issue_sign_in_link(&owner).await?;
            let public = settings
                .public_url
                .clone()
                .unwrap_or_else(|| format!("http://{}", settings.listen));
            println!(
                "Sign in as {} (single use, expires in 15 minutes):",
                owner.display_name
            );
            println!("{}", startup::sign_in_url(&public, &token));
            Ok(ExitCode::SUCCESS)
        }
        Command::Organization(OrganizationCommand::Create { name, owner_email }) => {
            let console = startup::console(&settings, Arc::new(SystemClock)).await?;
            console.identity().ensure_organization().await?;
            let (organization, invitation) = console
                .identity()
                .create_organization(&name, &owner_email)
                .await?;
            println!(
                "Created organization \"{}\" ({}). {} is invited as its Organization Owner until {}: they join by signing in with SSO.",
                organization.name,
                organization.id,
                invitation.email,
                invitation.expires_at.format("%Y-%m-%d %H:%M UTC")
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Key(KeyCommand::Impact {
            key_id,
            organization,
        }) => {
            let console = startup::console(&settings, Arc::new(SystemClock)).await?;
            console.identity().ensure_organization().await?;
            let operator = console.identity().operator(organization).await?;
            let impact = console.keys().key_impact_of(&operator, key_id).await?;
            println!("Key {} ({}):", impact.key.id, impact.key.key_ref.display());
            for c in &impact.clusters {
                println!(
                    "  cluster {} ({}, {}): if the key were revoked now, {}",
                    c.name,
                    c.id,
                    c.state.as_str(),
                    match c.if_revoked {
                        crate::domain::keys::IfRevoked::BecomesInaccessible =>
                            "it would become inaccessible",
                        crate::domain::keys::IfRevoked::WouldNotResume =>
                            "it would keep running but could not resume",
                        crate::domain::keys::IfRevoked::Unchanged => "it could not resume",
                    }
                );
            }
            for b in &impact.backups {
                println!(
                    "  backup {} of cluster {} ({})",
                    b.id,
                    b.cluster_name,
                    b.state.as_str()
                );
            }
            for v in &impact.versions {
                println!("  version {}: {} data key(s)", v.version, v.data_keys);
            }
            for v in &impact.verdicts {
                let what = match (v.action, &v.version) {
                    ("delete", _) => "delete".to_owned(),
                    ("disable_key", _) => "disable in the KMS".to_owned(),
                    (_, Some(version)) => format!("disable version {version}"),
                    (_, None) => "disable a version".to_owned(),
                };
                println!(
                    "{what}: {} - {}",
                    if v.safe { "safe" } else { "NOT SAFE" },
                    v.reason
                );
            }
            Ok(if impact.verdicts.iter().any(|v| v.safe) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Audit(AuditCommand::Verify { checkpoint }) => {
            let (since, kept) = match kept_checkpoints(&checkpoint) {
                Ok(found) => found,
                Err(why) => {
                    eprintln!("cmek-console: --checkpoint: {why}");
                    return Ok(ExitCode::from(2));
                }
            };
            // Without the signing keys every signature would look forged: say what is
            // missing instead of reporting a broken chain.
            if let Err(why) = signing_key_file(&settings) {
                eprintln!("cmek-console: {why}; the log is not verified");
                return Ok(ExitCode::from(2));
            }
            let console =
                startup::console_with(&settings, Arc::new(SystemClock), KeyAccess::ReadOnly)
                    .await?;
            match console.audit().verify_audit_chain(since.as_ref()).await {
                Ok(Verification::Intact { events, checkpoint }) => {
                    println!(
                        "Format 1's chain (the legacy segment, closed when the organizations' chains took over) intact: {events} events verified."
                    );
                    // The organizations' own chains (format 2), with the published keys.
                    match console.audit().verify_org_chains(None, &kept).await {
                        Ok(Ok((chains, signed))) => {
                            println!(
                                "Signed chains intact (the organizations', and the platform's): {chains} chain(s), {signed} signed events verified; {} kept checkpoint(s) matched.",
                                kept.len()
                            );
                            println!(
                                "The organizations' checkpoints reach their webhooks (audit.checkpoint): \
                                 keep them and pass them here with --checkpoint FILE. Format 1's \
                                 chain is closed and ends at this checkpoint (it shows the legacy \
                                 segment is never cut back):"
                            );
                            println!("{}", checkpoint.token());
                            Ok(ExitCode::SUCCESS)
                        }
                        Ok(Err((chain, broken))) => {
                            let which = match chain.as_str() {
                                "-" => "The log".to_owned(),
                                crate::crypto::audit_chain::PLATFORM_CHAIN => {
                                    "The platform's chain".to_owned()
                                }
                                org => format!("Organization chain {org}"),
                            };
                            eprintln!("{which} broken: {broken}.");
                            Ok(ExitCode::FAILURE)
                        }
                        Err(err) => {
                            eprintln!("The organization chains could not be read: {err}.");
                            Ok(ExitCode::FAILURE)
                        }
                    }
                }
                Ok(Verification::Broken(found)) => {
                    eprintln!(
                        "Audit chain broken at event {}: {}.",
                        found.seq, found.reason
                    );
                    Ok(ExitCode::FAILURE)
                }
                Err(err) => {
                    eprintln!(
                        "Audit log could not be read in full: {err}. The database may be damaged; \
                         the log is not verified."
                    );
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Audit(AuditCommand::RotateKey { ahead }) => {
            // Both files must be there (the first `serve` makes them), and the signing key
            // goes first: it is the one that can be refused (a key already scheduled later),
            // and then nothing is changed.
            let path = settings.audit_key_path();
            crate::store::chain_keys::load(&path)?;
            let signing = signing_key_file(&settings).map_err(StartupError::SigningKeys)?;
            let from = chrono::Utc::now() + chrono::Duration::from_std(ahead).unwrap_or_default();
            let signing_id = crate::store::signing_keys::rotate(&signing, from)
                .map_err(|e| StartupError::SigningKeys(e.to_string()))?;
            println!(
                "Added signing key {signing_id} to {}, valid from {}; the key before it retires \
                 then and stays published for what it signed. Instances using this file take \
                 the new key within 10 s; copy the file to any other instance before that time \
                 (one that lacks the new key then signs what no verifier accepts).",
                signing.display(),
                crate::crypto::audit_chain::time_text(from)
            );
            let id = crate::store::chain_keys::rotate(&path)?;
            println!(
                "Added chain key {id} to {}. Restart every instance (with this same file) to seal \
                 new events with it; keep the older lines so older events still verify.",
                path.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `audit verify --checkpoint` values: at most one format-1 token (`cp1.<seq>.<hash>...`),
/// and files of format-2 checkpoints (a webhook's `data`, or an export's `checkpoint`).
fn kept_checkpoints(
    given: &[String],
) -> Result<
    (
        Option<Checkpoint>,
        Vec<crate::crypto::audit_chain::Checkpoint>,
    ),
    String,
> {
    let (mut legacy, mut kept) = (None, Vec::new());
    for value in given {
        if value.starts_with("cp1.") {
            let parsed = Checkpoint::parse(value)
                .ok_or_else(|| format!("{value} is not a format-1 checkpoint"))?;
            if legacy.replace(parsed).is_some() {
                return Err("give one format-1 checkpoint at most".into());
            }
            continue;
        }
        let raw = std::fs::read(value).map_err(|e| {
            format!("{value}: {e} (expected a file holding a checkpoint, or cp1.<seq>.<hash>...)")
        })?;
        kept.push(
            serde_json::from_slice(&raw).map_err(|e| format!("{value}: not a checkpoint: {e}"))?,
        );
    }
    Ok((legacy, kept))
}

/// The signing key file the instances use, if it holds a key: the audit commands need it.
fn signing_key_file(settings: &Settings) -> Result<std::path::PathBuf, String> {
    let signing = settings.audit_signing_key_path();
    match crate::store::signing_keys::load(&signing) {
        Ok(keys) if !keys.is_empty() => Ok(signing),
        Ok(_) => Err(format!(
            "audit signing key file {} is missing or empty: it is made by the first `serve`; \
             give this command the file the instances use (CMEK_AUDIT_SIGNING_KEY_FILE)",
            signing.display()
        )),
        Err(err) => Err(err.to_string()),
    }
}

async fn serve(settings: Settings) -> Result<ExitCode, StartupError> {
    let app = Application::build(settings).await?;
    tracing::info!(url = app.public_url(), "cmek-console is serving");
    println!("CMEK Console is running at {}", app.public_url());
    if let Some(url) = app.sign_in_url() {
        println!("Sign in as the Organization Owner (single use, expires in 15 minutes):");
        println!("{url}");
    }
    app.run_until_stopped()
        .await
        .map_err(|source| StartupError::Listen {
            address: "server".into(),
            source,
        })?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}
