//! The in-memory ProjectStore: projects and their unique names.

use super::*;

#[async_trait]
impl ProjectStore for MemoryStore {
    async fn insert_project(&self, project: &Project, audit: AuditDraft) -> Result<(), StoreError> {
        self.write(audit, |s| {
            let taken = s
                .projects
                .iter()
                .any(|p| p.organization_id == project.organization_id && p.name == project.name);
            if taken {
                return Err(StoreError::Conflict(Constraint::ProjectName));
            }
            s.projects.push(project.clone());
            Ok(((), true))
        })
    }

    async fn project(
        &self,
        organization_id: Uuid,
        id: Uuid,
    ) -> Result<Option<Project>, StoreError> {
        Ok(self
            .state()
            .projects
            .iter()
            .find(|p| p.id == id && p.organization_id == organization_id)
            .cloned())
    }

    async fn projects(
        &self,
        organization_id: Uuid,
        request: PageRequest,
    ) -> Result<Vec<Project>, StoreError> {
        let state = self.state();
        let mine: Vec<Project> = state
            .projects
            .iter()
            .filter(|p| p.organization_id == organization_id)
            .cloned()
            .collect();
        Ok(page(&mine, request, |p| p.id))
    }

    async fn update_project(&self, project: &Project, audit: AuditDraft) -> Result<(), StoreError> {
        self.write(audit, |s| {
            let taken = s.projects.iter().any(|p| {
                p.id != project.id
                    && p.organization_id == project.organization_id
                    && p.name == project.name
            });
            if taken {
                return Err(StoreError::Conflict(Constraint::ProjectName));
            }
            if let Some(p) = s.projects.iter_mut().find(|p| p.id == project.id) {
                *p = project.clone();
            }
            Ok(((), true))
        })
    }
    async fn project_names_of(
        &self,
        organization_id: Uuid,
        ids: &[Uuid],
    ) -> Result<Vec<(Uuid, String)>, StoreError> {
        Ok(self
            .state()
            .projects
            .iter()
            .filter(|p| p.organization_id == organization_id && ids.contains(&p.id))
            .map(|p| (p.id, p.name.as_str().to_owned()))
            .collect())
    }
}
