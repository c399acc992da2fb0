//! Projects as a service: create, list, read and change them. The project's types and their
//! rules (names, R1, the revocation policy) are in `projects.rs`.

use uuid::Uuid;

use crate::domain::DomainError;
use crate::domain::audit::AuditDraft;
use crate::domain::error::{Constraint, Rule, StoreError};
use crate::domain::identity::Caller;
use crate::domain::page::{Page, PageRequest};
use crate::domain::projects::{NewProject, Project, ProjectChanges, ProjectName, RevocationPolicy};

/// The caller's project: another organization's is "not found", never "forbidden" (ids are
/// not confirmed). Every feature that works inside a project reads it through this.
pub(crate) async fn find(
    projects: &dyn crate::domain::ports::ProjectStore,
    caller: &Caller,
    id: Uuid,
) -> Result<Project, DomainError> {
    projects
        .project(caller.organization_id, id)
        .await?
        .ok_or(DomainError::NotFound("project"))
}

fn name_taken(name: &ProjectName) -> DomainError {
    DomainError::Conflict {
        rule: Rule::ProjectNameTaken,
        field: Some("name"),
        detail: format!(
            "A project named \"{}\" already exists in this organization.",
            name.as_str()
        ),
    }
}

fn map_conflict(err: StoreError, name: &ProjectName) -> DomainError {
    match err {
        StoreError::Conflict(Constraint::ProjectName) => name_taken(name),
        other => other.into(),
    }
}

/// Projects as a service: create, list, read and change them (R1: CMEK is chosen once; R2:
/// owners only), over the project, audit, key and job ports and the clock.
#[derive(Clone)]
pub struct Projects {
    pub(crate) projects: std::sync::Arc<dyn crate::domain::ports::ProjectStore>,
    pub(crate) audit: std::sync::Arc<dyn crate::domain::ports::AuditStore>,
    /// A changed revocation policy queues the reconciliation of the project's keys.
    pub(crate) keys: std::sync::Arc<dyn crate::domain::ports::KeyStore>,
    pub(crate) jobs: std::sync::Arc<dyn crate::domain::ports::JobStore>,
    pub(crate) clock: std::sync::Arc<dyn crate::domain::clock::Clock>,
    /// Wakes this process's reconciliation worker when a policy change queued one.
    pub(crate) reactions: std::sync::Arc<tokio::sync::Notify>,
}

impl Projects {
    pub(crate) async fn record(&self, draft: AuditDraft) -> Result<(), DomainError> {
        Ok(self.audit.append_audit(draft).await?)
    }

    pub(crate) fn wake_reactions(&self) {
        self.reactions.notify_one();
    }

    pub async fn create_project(
        &self,
        caller: &Caller,
        new: NewProject,
    ) -> Result<Project, DomainError> {
        caller.require_owner("create projects")?;
        let now = self.clock.now();
        let project = Project {
            id: Uuid::now_v7(),
            organization_id: caller.organization_id,
            name: new.name,
            cmek_enabled: new.cmek_enabled,
            revocation_policy: new.revocation_policy,
            created_by: caller.actor.label(),
            created_at: now,
            updated_at: now,
        };
        let audit = AuditDraft::by(
            caller,
            now,
            "project.created",
            format!("project/{}", project.id),
        )
        .detail(serde_json::json!({
            "name": project.name.as_str(),
            "cmek_enabled": project.cmek_enabled,
            "revocation_policy": project.revocation_policy.map(RevocationPolicy::as_str),
        }));
        self.projects
            .insert_project(&project, audit)
            .await
            .map_err(|e| map_conflict(e, &project.name))?;
        Ok(project)
    }

    pub async fn projects(
        &self,
        caller: &Caller,
        page: PageRequest,
    ) -> Result<Page<Project>, DomainError> {
        let items = self.projects.projects(caller.organization_id, page).await?;
        Ok(page.finish(items, |p| p.id))
    }

    /// Every project of the organization as (id, name), for pickers and reports; read a page
    /// at a time.
    pub async fn project_names(&self, caller: &Caller) -> Result<Vec<(Uuid, String)>, DomainError> {
        let mut names = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .projects(
                    caller,
                    PageRequest {
                        size: crate::domain::page::MAX_PAGE_SIZE,
                        after,
                    },
                )
                .await?;
            names.extend(
                page.items
                    .iter()
                    .map(|p| (p.id, p.name.as_str().to_owned())),
            );
            match (page.next, page.items.last()) {
                (Some(_), Some(last)) => after = Some(last.id),
                _ => return Ok(names),
            }
        }
    }

    /// Another organization's project is "not found", never "forbidden": ids are not confirmed.
    pub async fn project(&self, caller: &Caller, id: Uuid) -> Result<Project, DomainError> {
        find(self.projects.as_ref(), caller, id).await
    }

    pub async fn update_project(
        &self,
        caller: &Caller,
        id: Uuid,
        changes: ProjectChanges,
    ) -> Result<Project, DomainError> {
        let current = self.project(caller, id).await?;
        caller.require_owner("change projects")?;
        let now = self.clock.now();
        let updated = match current.apply(&changes, now) {
            Ok(updated) => updated,
            Err(
                refused @ DomainError::Conflict {
                    rule: Rule::CmekImmutable,
                    ..
                },
            ) => {
                let audit = AuditDraft::by(caller, now, "project.updated", format!("project/{id}"))
                    .outcome(crate::domain::audit::Outcome::Denied)
                    .detail(serde_json::json!({ "rule": Rule::CmekImmutable.slug() }));
                self.record(audit).await?;
                return Err(refused);
            }
            Err(other) => return Err(other),
        };
        let audit = AuditDraft::by(caller, now, "project.updated", format!("project/{id}")).detail(
            serde_json::json!({
                "name": { "from": current.name.as_str(), "to": updated.name.as_str() },
                "revocation_policy": updated.revocation_policy.map(RevocationPolicy::as_str),
            }),
        );
        self.projects
            .update_project(&updated, audit)
            .await
            .map_err(|e| map_conflict(e, &updated.name))?;
        if updated.revocation_policy != current.revocation_policy {
            // What the project's clusters should be may have changed with the policy: their
            // keys are reconciled now rather than at the next periodic pass (which still
            // catches it if this process stops first).
            for key in self.keys.keys(caller.organization_id, id).await? {
                self.jobs
                    .enqueue_job(
                        crate::domain::jobs::JobKind::ReconcileKey,
                        caller.organization_id,
                        key.id,
                        now,
                    )
                    .await?;
            }
            self.wake_reactions();
        }
        Ok(updated)
    }
}
