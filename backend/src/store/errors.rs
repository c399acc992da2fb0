//! Sorting database errors into what the domain can act on: which uniqueness rule a write
//! broke, a database that is down (503, try later), a transaction that lost a race (the
//! store runs it again), anything else (opaque 500).

use std::ops::Deref;

use sea_orm::{DbErr, RuntimeErr};

use crate::domain::ports::{Constraint, StoreError};

/// Unique indexes the domain gives a reason of its own. PostgreSQL names the index; SQLite
/// names the table and columns.
const CONSTRAINTS: &[(&str, &str, Constraint)] = &[
    (
        "ux_projects_organization_name",
        "projects.organization_id, projects.name",
        Constraint::ProjectName,
    ),
    (
        "ux_encryption_keys_project_provider_region",
        "encryption_keys.project_id, encryption_keys.provider, encryption_keys.region",
        Constraint::KeyPerRegion,
    ),
    // The same rule among the keys not replaced (migration 000020).
    (
        "ux_encryption_keys_region_key",
        "encryption_keys.project_id, encryption_keys.provider, encryption_keys.region",
        Constraint::KeyPerRegion,
    ),
    (
        "ux_clusters_project_name",
        "clusters.project_id, clusters.name",
        Constraint::ClusterName,
    ),
    (
        "ux_invitations_pending",
        "invitations.organization_id, invitations.email",
        Constraint::PendingInvitation,
    ),
];

/// SQLITE_CORRUPT (and its extended codes), SQLITE_NOTADB: a damaged file.
const DAMAGED: &[&str] = &["11", "267", "523", "779", "26"];

/// The audit chain's positions: a write that collides here lost a race, it broke no rule.
const AUDIT_CHAIN: &[&str] = &["audit_events_pkey", "audit_events.seq"];

fn constraint(name: Option<&str>, message: &str) -> Constraint {
    CONSTRAINTS
        .iter()
        .find(|(index, columns, _)| name == Some(*index) || message.ends_with(columns))
        .map(|(_, _, c)| c.clone())
        .unwrap_or_else(|| Constraint::Other(name.unwrap_or(message).to_owned()))
}

impl From<DbErr> for StoreError {
    fn from(err: DbErr) -> Self {
        let sqlx_error = match &err {
            // A damaged file can fail a connection's first statement (its PRAGMAs).
            DbErr::Conn(RuntimeErr::SqlxError(e))
                if matches!(e.deref(), sqlx::Error::Database(d)
                    if d.code().is_some_and(|c| DAMAGED.contains(&c.deref()))) =>
            {
                return StoreError::Damaged(e.to_string());
            }
            DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => {
                return StoreError::Unavailable(err.to_string());
            }
            DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
                e.deref()
            }
            _ => return StoreError::Database(err.to_string()),
        };
        let database = match sqlx_error {
            sqlx::Error::Database(database) => database,
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_) => return StoreError::Unavailable(err.to_string()),
            _ => return StoreError::Database(err.to_string()),
        };
        let code = database.code().unwrap_or_default();
        let message = database.message();
        match code.deref() {
            // PostgreSQL: unique_violation.
            "23505" => unique_violation(database.constraint(), message),
            // foreign_key_violation; SQLITE_CONSTRAINT_FOREIGNKEY: a row still refers to it.
            "23503" | "787" => StoreError::Conflict(Constraint::InUse),
            // SQLite: SQLITE_CONSTRAINT_UNIQUE and SQLITE_CONSTRAINT_PRIMARYKEY.
            "2067" | "1555" => unique_violation(None, message),
            c if DAMAGED.contains(&c) => StoreError::Damaged(message.to_owned()),
            // serialization_failure, deadlock_detected; SQLITE_BUSY and its extended codes.
            // lock_not_available (lock_timeout) too.
            "40001" | "40P01" | "55P03" | "5" | "261" | "517" | "773" | "6" | "262" => {
                StoreError::Contention(message.to_owned())
            }
            // connection_exception (08xxx), admin_shutdown, crash_shutdown, cannot_connect_now.
            c if c.starts_with("08") || matches!(c, "57P01" | "57P02" | "57P03") => {
                StoreError::Unavailable(message.to_owned())
            }
            _ => StoreError::Database(err.to_string()),
        }
    }
}

fn unique_violation(name: Option<&str>, message: &str) -> StoreError {
    if AUDIT_CHAIN
        .iter()
        .any(|c| name == Some(*c) || message.ends_with(c))
    {
        return StoreError::Contention(message.to_owned());
    }
    StoreError::Conflict(constraint(name, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_and_postgres_name_the_same_rule() {
        assert_eq!(
            constraint(
                None,
                "UNIQUE constraint failed: projects.organization_id, projects.name"
            ),
            Constraint::ProjectName
        );
        assert_eq!(
            constraint(Some("ux_projects_organization_name"), "duplicate key"),
            Constraint::ProjectName
        );
        assert_eq!(
            constraint(Some("ux_encryption_keys_project_provider_region"), "dup"),
            Constraint::KeyPerRegion
        );
    }

    #[test]
    fn a_taken_audit_position_is_a_lost_race_not_a_broken_rule() {
        assert!(matches!(
            unique_violation(None, "UNIQUE constraint failed: audit_events.seq"),
            StoreError::Contention(_)
        ));
        assert!(matches!(
            unique_violation(Some("audit_events_pkey"), "duplicate key"),
            StoreError::Contention(_)
        ));
    }

    #[test]
    fn an_unknown_index_is_named_as_the_database_named_it() {
        assert_eq!(
            constraint(Some("ux_something_else"), "duplicate key"),
            Constraint::Other("ux_something_else".into())
        );
    }
}
