//! Fixed-window counters in the database, so a limit holds across every console process.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseBackend, Statement};

use crate::domain::ports::StoreError;

/// Windows this much older than the current one are deleted now and then.
const KEEP_WINDOWS: chrono::TimeDelta = chrono::TimeDelta::hours(1);

pub async fn count(
    db: &impl ConnectionTrait,
    bucket: &str,
    window_start: DateTime<Utc>,
) -> Result<u32, StoreError> {
    let backend = db.get_database_backend();
    let sql = match backend {
        DatabaseBackend::Postgres => {
            "INSERT INTO rate_limit_hits (bucket, window_start, hits) VALUES ($1, $2, 1) \
             ON CONFLICT (bucket, window_start) DO UPDATE SET hits = rate_limit_hits.hits + 1 \
             RETURNING hits"
        }
        _ => {
            "INSERT INTO rate_limit_hits (bucket, window_start, hits) VALUES (?, ?, 1) \
             ON CONFLICT (bucket, window_start) DO UPDATE SET hits = rate_limit_hits.hits + 1 \
             RETURNING hits"
        }
    };
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [bucket.into(), window_start.into()],
        ))
        .await?
        .ok_or_else(|| StoreError::Database("rate limit upsert returned no row".into()))?;
    let hits: i32 = row.try_get("", "hits")?;
    if hits == 1 {
        // The first hit of a window is a cheap moment to forget old windows.
        let delete = match backend {
            DatabaseBackend::Postgres => "DELETE FROM rate_limit_hits WHERE window_start < $1",
            _ => "DELETE FROM rate_limit_hits WHERE window_start < ?",
        };
        db.execute_raw(Statement::from_sql_and_values(
            backend,
            delete,
            [(window_start - KEEP_WINDOWS).into()],
        ))
        .await?;
    }
    Ok(u32::try_from(hits).unwrap_or(u32::MAX))
}
