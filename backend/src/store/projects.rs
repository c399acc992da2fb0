//! Projects, scoped by organization in every query.

use super::SeaStore;
use crate::domain::audit::AuditDraft;
use crate::domain::ports::ProjectStore;
use async_trait::async_trait;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use uuid::Uuid;

use super::entities::projects;
use crate::domain::page::PageRequest;
use crate::domain::ports::StoreError;
use crate::domain::projects::{Project, ProjectName, RevocationPolicy};

fn from_model(m: projects::Model) -> Result<Project, StoreError> {
    let corrupt = |what: String| StoreError::Corrupt(format!("project {}: {what}", m.id));
    Ok(Project {
        id: m.id,
        organization_id: m.organization_id,
        name: ProjectName::parse(&m.name).map_err(|e| corrupt(e.reason))?,
        cmek_enabled: m.cmek_enabled,
        revocation_policy: m
            .revocation_policy
            .as_deref()
            .map(RevocationPolicy::parse)
            .transpose()
            .map_err(|e| corrupt(e.reason))?,
        created_by: m.created_by,
        created_at: m.created_at,
        updated_at: m.updated_at,
    })
}

fn to_active(p: &Project) -> projects::ActiveModel {
    projects::ActiveModel {
        id: Set(p.id),
        organization_id: Set(p.organization_id),
        name: Set(p.name.as_str().to_owned()),
        cmek_enabled: Set(p.cmek_enabled),
        revocation_policy: Set(p.revocation_policy.map(|r| r.as_str().to_owned())),
        created_by: Set(p.created_by.clone()),
        created_at: Set(p.created_at),
        updated_at: Set(p.updated_at),
    }
}

pub async fn insert(db: &impl ConnectionTrait, project: &Project) -> Result<(), StoreError> {
    projects::Entity::insert(to_active(project))
        .exec_without_returning(db)
        .await?;
    Ok(())
}

pub async fn update(db: &impl ConnectionTrait, project: &Project) -> Result<(), StoreError> {
    // `cmek_enabled` is deliberately not written: R1 holds in storage too.
    projects::Entity::update_many()
        .set(projects::ActiveModel {
            name: Set(project.name.as_str().to_owned()),
            revocation_policy: Set(project.revocation_policy.map(|r| r.as_str().to_owned())),
            updated_at: Set(project.updated_at),
            ..Default::default()
        })
        .filter(projects::Column::Id.eq(project.id))
        .filter(projects::Column::OrganizationId.eq(project.organization_id))
        .exec(db)
        .await?;
    Ok(())
}

pub async fn get(
    db: &impl ConnectionTrait,
    organization_id: Uuid,
    id: Uuid,
) -> Result<Option<Project>, StoreError> {
    projects::Entity::find_by_id(id)
        .filter(projects::Column::OrganizationId.eq(organization_id))
        .one(db)
        .await?
        .map(from_model)
        .transpose()
}

pub async fn list(
    db: &impl ConnectionTrait,
    organization_id: Uuid,
    page: PageRequest,
) -> Result<Vec<Project>, StoreError> {
    let mut query = projects::Entity::find()
        .filter(projects::Column::OrganizationId.eq(organization_id))
        .order_by_asc(projects::Column::Id)
        .limit(page.fetch_limit());
    if let Some(after) = page.after {
        query = query.filter(projects::Column::Id.gt(after));
    }
    query.all(db).await?.into_iter().map(from_model).collect()
}

#[async_trait]
impl ProjectStore for SeaStore {
    async fn insert_project(&self, project: &Project, audit: AuditDraft) -> Result<(), StoreError> {
        audited!(self, audit, |txn| {
            super::projects::insert(txn, project).await?;
            ((), true)
        })
    }

    async fn project(
        &self,
        organization_id: Uuid,
        id: Uuid,
    ) -> Result<Option<Project>, StoreError> {
        // Only projects that exist: ids someone guesses do not fill the cache.
        cached_if_found!(
            self,
            project,
            (organization_id, id),
            super::projects::get(&self.db, organization_id, id).await?
        )
    }

    async fn projects(
        &self,
        organization_id: Uuid,
        page: PageRequest,
    ) -> Result<Vec<Project>, StoreError> {
        cached!(
            self,
            projects,
            (organization_id, page.after, page.size),
            super::projects::list(&self.db, organization_id, page).await?
        )
    }

    async fn update_project(&self, project: &Project, audit: AuditDraft) -> Result<(), StoreError> {
        audited!(self, audit, |txn| {
            super::projects::update(txn, project).await?;
            ((), true)
        })
    }

    async fn project_names_of(
        &self,
        organization_id: Uuid,
        ids: &[Uuid],
    ) -> Result<Vec<(Uuid, String)>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        cached!(
            self,
            project_names,
            (organization_id, ids.to_vec()),
            projects::Entity::find()
                .select_only()
                .column(projects::Column::Id)
                .column(projects::Column::Name)
                .filter(projects::Column::OrganizationId.eq(organization_id))
                .filter(projects::Column::Id.is_in(ids.to_vec()))
                .into_tuple()
                .all(&self.db)
                .await?
        )
    }
}
