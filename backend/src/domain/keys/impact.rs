//! What a key protects, and what each action on it would break, before anyone takes it: the
//! clusters (and what the project's revocation policy would do to each if the key were
//! revoked now), the backups, the data keys per key version, and a verdict per action —
//! delete it here, disable it in the KMS, disable one of its versions.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::versions::VersionInUse;
use super::{EncryptionKey, Keys};
use crate::domain::DomainError;
use crate::domain::clusters::{BackupState, ClusterState, Keys as KeysSay, Reaction};
use crate::domain::identity::Caller;

/// What a revocation of the key, confirmed now, would do to a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IfRevoked {
    /// `stop`: its data keys are dropped and it becomes inaccessible.
    BecomesInaccessible,
    /// `keep_running`: it runs on, but would not resume once paused.
    WouldNotResume,
    /// Nothing changes for it now (paused, already inaccessible, being deleted, ...); it
    /// could not resume or be restored while the key stays revoked.
    Unchanged,
}

impl IfRevoked {
    pub fn as_str(self) -> &'static str {
        match self {
            IfRevoked::BecomesInaccessible => "becomes_inaccessible",
            IfRevoked::WouldNotResume => "would_not_resume",
            IfRevoked::Unchanged => "unchanged",
        }
    }
}

#[derive(Clone, Debug)]
pub struct ClusterImpact {
    pub id: Uuid,
    pub name: String,
    pub state: ClusterState,
    pub if_revoked: IfRevoked,
}

#[derive(Clone, Debug)]
pub struct BackupImpact {
    pub id: Uuid,
    pub cluster_id: Uuid,
    pub cluster_name: String,
    pub state: BackupState,
    pub key_version: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// One action and whether it is safe now; when not, what it would break.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// `delete`, `disable_key`, or `disable_version` (with `version`).
    pub action: &'static str,
    pub version: Option<String>,
    pub safe: bool,
    pub reason: String,
}

#[derive(Clone, Debug)]
pub struct KeyImpact {
    pub key: EncryptionKey,
    pub clusters: Vec<ClusterImpact>,
    pub backups: Vec<BackupImpact>,
    pub versions: Vec<VersionInUse>,
    pub verdicts: Vec<Verdict>,
}

/// "a, b and 2 more": names in a sentence.
fn some_of(names: &[String]) -> String {
    match names {
        [] => String::new(),
        [one] => one.clone(),
        [first, second] => format!("{first} and {second}"),
        [first, second, rest @ ..] => format!("{first}, {second} and {} more", rest.len()),
    }
}

/// The verdicts, from what the key protects (pure: the rule, tested alone).
pub fn verdicts(
    clusters: &[ClusterImpact],
    backups: &[BackupImpact],
    versions: &[VersionInUse],
) -> Vec<Verdict> {
    let cluster_names: Vec<String> = clusters
        .iter()
        .map(|c| format!("cluster \"{}\"", c.name))
        .collect();
    let backup_names: Vec<String> = backups.iter().map(|b| format!("backup {}", b.id)).collect();
    let users: Vec<String> = cluster_names.iter().chain(&backup_names).cloned().collect();
    let mut verdicts = vec![Verdict {
        action: "delete",
        version: None,
        safe: users.is_empty(),
        reason: if users.is_empty() {
            "Nothing uses this key: it can be deleted.".into()
        } else {
            format!(
                "Refused while {} use{} it: delete or restore elsewhere what it protects first.",
                some_of(&users),
                if users.len() == 1 { "s" } else { "" }
            )
        },
    }];
    let mut breaks = Vec::new();
    let of = |effect: IfRevoked| -> Vec<String> {
        clusters
            .iter()
            .filter(|c| c.if_revoked == effect)
            .map(|c| format!("\"{}\"", c.name))
            .collect()
    };
    let stopped = of(IfRevoked::BecomesInaccessible);
    if !stopped.is_empty() {
        breaks.push(format!("{} would become inaccessible", some_of(&stopped)));
    }
    let marked = of(IfRevoked::WouldNotResume);
    if !marked.is_empty() {
        breaks.push(format!(
            "{} would keep running but could not resume",
            some_of(&marked)
        ));
    }
    let idle = of(IfRevoked::Unchanged);
    if !idle.is_empty() {
        breaks.push(format!("{} could not resume", some_of(&idle)));
    }
    if !backups.is_empty() {
        breaks.push(format!("{} could not be restored", some_of(&backup_names)));
    }
    verdicts.push(Verdict {
        action: "disable_key",
        version: None,
        safe: breaks.is_empty(),
        reason: if breaks.is_empty() {
            "Nothing the console holds is wrapped under this key: disabling it in your KMS breaks nothing here.".into()
        } else {
            format!("Disabling it in your KMS: {}.", breaks.join("; "))
        },
    });
    for version in versions {
        let mut wraps: Vec<String> = version
            .clusters
            .iter()
            .map(|name| format!("cluster \"{name}\""))
            .collect();
        wraps.extend(version.backups.iter().map(|id| format!("backup {id}")));
        verdicts.push(Verdict {
            action: "disable_version",
            version: Some(version.version.clone()),
            safe: version.data_keys == 0,
            reason: format!(
                "Version {} wraps {} data key{} ({}): disabling it would break {}.",
                version.version,
                version.data_keys,
                if version.data_keys == 1 { "" } else { "s" },
                some_of(&wraps),
                if wraps.len() == 1 { "it" } else { "them" }
            ),
        });
    }
    verdicts
}

impl Keys {
    /// The same, for a key named by its id alone (the command line).
    pub async fn key_impact_of(
        &self,
        caller: &Caller,
        key_id: Uuid,
    ) -> Result<KeyImpact, DomainError> {
        let key = self
            .keys
            .key(caller.organization_id, key_id)
            .await?
            .ok_or(DomainError::NotFound("encryption key"))?;
        self.key_impact(caller, key.project_id, key.id).await
    }

    /// What the key protects and what each action on it would break (any role may read it,
    /// as the key's page).
    pub async fn key_impact(
        &self,
        caller: &Caller,
        project_id: Uuid,
        key_id: Uuid,
    ) -> Result<KeyImpact, DomainError> {
        let project = self.project(caller, project_id).await?;
        let key = self.encryption_key(caller, project_id, key_id).await?;
        let policy = crate::domain::clusters::effective_policy(&project, key.key_ref.provider());
        let (clusters, backups) = match self.clusters.get() {
            Some(store) => (
                store
                    .clusters_using_key(caller.organization_id, key.id)
                    .await?,
                store
                    .backups_using_key(caller.organization_id, key.id)
                    .await?,
            ),
            None => (Vec::new(), Vec::new()),
        };
        let clusters: Vec<ClusterImpact> = clusters
            .into_iter()
            .map(|c| {
                let marked = c.will_not_resume.is_some();
                let if_revoked = match crate::domain::clusters::reaction(
                    policy,
                    KeysSay::Revoked,
                    c.state,
                    marked,
                ) {
                    Reaction::MakeInaccessible => IfRevoked::BecomesInaccessible,
                    Reaction::MarkWillNotResume => IfRevoked::WouldNotResume,
                    _ if marked && c.state == ClusterState::Available => IfRevoked::WouldNotResume,
                    _ => IfRevoked::Unchanged,
                };
                ClusterImpact {
                    id: c.id,
                    name: c.name.as_str().to_owned(),
                    state: c.state,
                    if_revoked,
                }
            })
            .collect();
        let backups: Vec<BackupImpact> = backups
            .into_iter()
            .map(|b| BackupImpact {
                id: b.id,
                cluster_id: b.cluster_id,
                cluster_name: b.cluster_name,
                state: b.state,
                key_version: b.region.key_version,
                created_at: b.created_at,
            })
            .collect();
        let versions = self.key_versions(caller, &key).await?;
        let verdicts = verdicts(&clusters, &backups, &versions);
        Ok(KeyImpact {
            key,
            clusters,
            backups,
            versions,
            verdicts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::keys::KeyStatus;

    fn cluster(name: &str, if_revoked: IfRevoked) -> ClusterImpact {
        ClusterImpact {
            id: Uuid::now_v7(),
            name: name.into(),
            state: ClusterState::Available,
            if_revoked,
        }
    }

    fn version(name: &str, clusters: &[&str], backups: usize) -> VersionInUse {
        VersionInUse {
            version: name.into(),
            data_keys: (clusters.len() + backups) as u64,
            status: KeyStatus::Active,
            suspected: None,
            last_checked_at: None,
            last_error: None,
            clusters: clusters.iter().map(|c| (*c).to_owned()).collect(),
            backups: (0..backups).map(|_| Uuid::now_v7()).collect(),
        }
    }

    #[test]
    fn a_key_nothing_uses_is_safe_to_delete_and_to_disable() {
        let verdicts = verdicts(&[], &[], &[]);

        assert_eq!(verdicts.len(), 2);
        assert!(verdicts.iter().all(|v| v.safe), "{verdicts:?}");
    }

    #[test]
    fn each_verdict_names_what_would_break() {
        let clusters = [
            cluster("orders", IfRevoked::BecomesInaccessible),
            cluster("ledger", IfRevoked::WouldNotResume),
        ];
        let backup = BackupImpact {
            id: Uuid::now_v7(),
            cluster_id: clusters[0].id,
            cluster_name: "orders".into(),
            state: BackupState::Available,
            key_version: Some("2".into()),
            created_at: Utc::now(),
        };
        let versions = [version("1", &["orders", "ledger"], 0), version("2", &[], 1)];

        let verdicts = verdicts(&clusters, std::slice::from_ref(&backup), &versions);

        let delete = &verdicts[0];
        assert!(!delete.safe);
        assert!(
            delete.reason.contains("cluster \"orders\""),
            "{}",
            delete.reason
        );
        let disable = &verdicts[1];
        assert!(!disable.safe);
        assert!(
            disable
                .reason
                .contains("\"orders\" would become inaccessible"),
            "{}",
            disable.reason
        );
        assert!(
            disable
                .reason
                .contains("\"ledger\" would keep running but could not resume")
        );
        assert!(
            disable
                .reason
                .contains(&format!("backup {} could not be restored", backup.id))
        );
        let v1 = &verdicts[2];
        assert_eq!(v1.version.as_deref(), Some("1"));
        assert!(!v1.safe);
        assert!(v1.reason.contains("2 data keys"), "{}", v1.reason);
        let v2 = &verdicts[3];
        assert!(v2.reason.contains("1 data key ("), "{}", v2.reason);
    }
}
