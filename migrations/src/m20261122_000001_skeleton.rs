//! Organizations, people and their credentials, projects, and the audit chain.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Organizations {
    Table,
    Id,
    Name,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    OrganizationId,
    Email,
    DisplayName,
    Role,
    CreatedAt,
    LastSignInAt,
}

#[derive(DeriveIden)]
enum SignInLinks {
    Table,
    Id,
    UserId,
    TokenHash,
    CreatedAt,
    ExpiresAt,
    UsedAt,
}

#[derive(DeriveIden)]
enum Sessions {
    Table,
    Id,
    UserId,
    TokenHash,
    CreatedAt,
    LastSeenAt,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    OrganizationId,
    Name,
    Role,
    Prefix,
    KeyHash,
    CreatedBy,
    CreatedAt,
    LastUsedAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum Projects {
    Table,
    Id,
    OrganizationId,
    Name,
    CmekEnabled,
    RevocationPolicy,
    CreatedBy,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    Seq,
    Id,
    OrganizationId,
    OccurredAt,
    Actor,
    Action,
    Target,
    Outcome,
    SourceIp,
    Detail,
    PrevHash,
    Hash,
}

fn id(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col)
        .uuid()
        .not_null()
        .primary_key()
        .to_owned()
}

fn uuid_ref(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).uuid().not_null().to_owned()
}

fn text(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).text().not_null().to_owned()
}

fn text_null(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).text().null().to_owned()
}

fn time(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col)
        .timestamp_with_time_zone()
        .not_null()
        .to_owned()
}

fn time_null(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col)
        .timestamp_with_time_zone()
        .null()
        .to_owned()
}

fn fk(
    name: &str,
    from: (impl IntoIden, impl IntoIden),
    to: (impl IntoIden, impl IntoIden),
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(name)
        .from(from.0, from.1)
        .to(to.0, to.1)
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Organizations::Table)
                    .col(id(Organizations::Id))
                    .col(text(Organizations::Name))
                    .col(time(Organizations::CreatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Users::Table)
                    .col(id(Users::Id))
                    .col(uuid_ref(Users::OrganizationId))
                    .col(text_null(Users::Email))
                    .col(text(Users::DisplayName))
                    .col(text(Users::Role))
                    .col(time(Users::CreatedAt))
                    .col(time_null(Users::LastSignInAt))
                    .foreign_key(&mut fk(
                        "fk_users_organization",
                        (Users::Table, Users::OrganizationId),
                        (Organizations::Table, Organizations::Id),
                    ))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(SignInLinks::Table)
                    .col(id(SignInLinks::Id))
                    .col(uuid_ref(SignInLinks::UserId))
                    .col(
                        ColumnDef::new(SignInLinks::TokenHash)
                            .text()
                            .not_null()
                            .unique_key(),
                    )
                    .col(time(SignInLinks::CreatedAt))
                    .col(time(SignInLinks::ExpiresAt))
                    .col(time_null(SignInLinks::UsedAt))
                    .foreign_key(&mut fk(
                        "fk_sign_in_links_user",
                        (SignInLinks::Table, SignInLinks::UserId),
                        (Users::Table, Users::Id),
                    ))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Sessions::Table)
                    .col(id(Sessions::Id))
                    .col(uuid_ref(Sessions::UserId))
                    .col(
                        ColumnDef::new(Sessions::TokenHash)
                            .text()
                            .not_null()
                            .unique_key(),
                    )
                    .col(time(Sessions::CreatedAt))
                    .col(time(Sessions::LastSeenAt))
                    .col(time(Sessions::ExpiresAt))
                    .foreign_key(&mut fk(
                        "fk_sessions_user",
                        (Sessions::Table, Sessions::UserId),
                        (Users::Table, Users::Id),
                    ))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ApiKeys::Table)
                    .col(id(ApiKeys::Id))
                    .col(uuid_ref(ApiKeys::OrganizationId))
                    .col(text(ApiKeys::Name))
                    .col(text(ApiKeys::Role))
                    .col(text(ApiKeys::Prefix))
                    .col(
                        ColumnDef::new(ApiKeys::KeyHash)
                            .text()
                            .not_null()
                            .unique_key(),
                    )
                    .col(text(ApiKeys::CreatedBy))
                    .col(time(ApiKeys::CreatedAt))
                    .col(time_null(ApiKeys::LastUsedAt))
                    .col(time_null(ApiKeys::RevokedAt))
                    .foreign_key(&mut fk(
                        "fk_api_keys_organization",
                        (ApiKeys::Table, ApiKeys::OrganizationId),
                        (Organizations::Table, Organizations::Id),
                    ))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Projects::Table)
                    .col(id(Projects::Id))
                    .col(uuid_ref(Projects::OrganizationId))
                    .col(text(Projects::Name))
                    .col(ColumnDef::new(Projects::CmekEnabled).boolean().not_null())
                    .col(text_null(Projects::RevocationPolicy))
                    .col(text(Projects::CreatedBy))
                    .col(time(Projects::CreatedAt))
                    .col(time(Projects::UpdatedAt))
                    .foreign_key(&mut fk(
                        "fk_projects_organization",
                        (Projects::Table, Projects::OrganizationId),
                        (Organizations::Table, Organizations::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        // Two owners racing to create the same name: the database picks one winner.
        manager
            .create_index(
                Index::create()
                    .name("ux_projects_organization_name")
                    .table(Projects::Table)
                    .col(Projects::OrganizationId)
                    .col(Projects::Name)
                    .unique()
                    .to_owned(),
            )
            .await?;

        // Lists walk an organization's projects in id (creation) order.
        manager
            .create_index(
                Index::create()
                    .name("ix_projects_organization_id")
                    .table(Projects::Table)
                    .col(Projects::OrganizationId)
                    .col(Projects::Id)
                    .to_owned(),
            )
            .await?;

        // The audit chain is install-wide and ordered by `seq`, which the writer assigns; the
        // primary key on `seq` makes a second writer that raced for the same slot fail loudly.
        manager
            .create_table(
                Table::create()
                    .table(AuditEvents::Table)
                    .col(
                        ColumnDef::new(AuditEvents::Seq)
                            .big_integer()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(AuditEvents::Id)
                            .uuid()
                            .not_null()
                            .unique_key(),
                    )
                    .col(ColumnDef::new(AuditEvents::OrganizationId).uuid().null())
                    .col(time(AuditEvents::OccurredAt))
                    .col(text(AuditEvents::Actor))
                    .col(text(AuditEvents::Action))
                    .col(text(AuditEvents::Target))
                    .col(text(AuditEvents::Outcome))
                    .col(text_null(AuditEvents::SourceIp))
                    .col(text(AuditEvents::Detail))
                    .col(text(AuditEvents::PrevHash))
                    .col(text(AuditEvents::Hash))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_audit_events_org_time")
                    .table(AuditEvents::Table)
                    .col(AuditEvents::OrganizationId)
                    .col(AuditEvents::OccurredAt)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}
