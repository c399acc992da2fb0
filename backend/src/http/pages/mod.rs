//! HTML pages. Every page works without JavaScript: forms post, the server redirects after a
//! change (303) or re-renders the form with inline errors (422).

pub mod alerts;
pub mod api_keys;
pub mod assets;
pub mod audit;
pub mod clusters;
pub mod key_status;
pub mod keys;
pub mod local_kms;
pub mod members;
pub mod policy_check;
pub mod problems;
pub mod projects;
pub mod render;
pub mod sign_in;
pub mod timeline;

use actix_web::{HttpResponse, web};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(home))
        .route("/static/{file:.+}", web::get().to(assets::serve))
        .route("/favicon.ico", web::get().to(assets::favicon))
        .route("/problems", web::get().to(problems::index))
        .route(
            "/{family:problems|rules}/{slug}",
            web::get().to(problems::one),
        )
        .route("/sign-in", web::get().to(sign_in::page))
        .route("/sign-in/link", web::get().to(sign_in::confirm))
        .route("/sign-in/link", web::post().to(sign_in::redeem))
        .route("/sign-in/sso", web::get().to(sign_in::sso))
        .route(
            "/sign-in/sso/callback",
            web::get().to(sign_in::sso_callback),
        )
        .route("/sign-out", web::post().to(sign_in::sign_out))
        .route("/projects", web::get().to(projects::list))
        .route("/projects", web::post().to(projects::create))
        .route("/projects/new", web::get().to(projects::new))
        .route("/projects/{project_id}", web::get().to(projects::show))
        .route("/projects/{project_id}", web::post().to(projects::rename))
        .route(
            "/projects/{project_id}/encryption-keys/new",
            web::get().to(keys::new),
        )
        .route(
            "/projects/{project_id}/encryption-keys",
            web::post().to(keys::submit),
        )
        .route(
            "/projects/{project_id}/encryption-keys/stream",
            web::post().to(keys::stream),
        )
        .route(
            "/projects/{project_id}/encryption-keys/policy/{index}",
            web::get().to(keys::download),
        )
        .route(
            "/projects/{project_id}/encryption-keys/aws-policy-check",
            web::get().to(policy_check::form),
        )
        .route(
            "/projects/{project_id}/encryption-keys/aws-policy-check",
            web::post().to(policy_check::check),
        )
        .route(
            "/projects/{project_id}/encryption-keys/azure-template",
            web::get().to(keys::azure_template),
        )
        .route(
            "/projects/{project_id}/encryption-keys/gcp-terraform",
            web::get().to(keys::gcp_terraform),
        )
        .route(
            "/projects/{project_id}/encryption-keys/{key_id}/check",
            web::post().to(keys::check),
        )
        .route(
            "/projects/{project_id}/encryption-keys/{key_id}/check/stream",
            web::post().to(keys::check_stream),
        )
        .route(
            "/projects/{project_id}/encryption-keys/{key_id}/delete",
            web::post().to(keys::delete),
        )
        .route(
            "/projects/{project_id}/encryption-keys/{key_id}/replace",
            web::post().to(keys::replace),
        )
        .route(
            "/projects/{project_id}/encryption-keys/{key_id}/replace/stream",
            web::post().to(keys::replace_stream),
        )
        .route(
            "/projects/{project_id}/encryption-keys/{key_id}/rewrap",
            web::post().to(keys::rewrap),
        )
        .route(
            "/projects/{project_id}/encryption-keys/{key_id}/repin",
            web::post().to(keys::repin),
        )
        .route(
            "/projects/{project_id}/clusters/new",
            web::get().to(clusters::new),
        )
        .route(
            "/projects/{project_id}/clusters",
            web::post().to(clusters::create),
        )
        .route("/clusters/{cluster_id}", web::get().to(clusters::show))
        .route(
            "/clusters/{cluster_id}/pause",
            web::post().to(clusters::pause),
        )
        .route(
            "/clusters/{cluster_id}/resume",
            web::post().to(clusters::resume),
        )
        .route(
            "/clusters/{cluster_id}/delete",
            web::post().to(clusters::delete),
        )
        .route(
            "/clusters/{cluster_id}/objects",
            web::post().to(clusters::upload),
        )
        .route(
            "/clusters/{cluster_id}/objects/download",
            web::get().to(clusters::download),
        )
        .route(
            "/clusters/{cluster_id}/objects/delete",
            web::post().to(clusters::delete_object),
        )
        .route(
            "/clusters/{cluster_id}/backups",
            web::post().to(clusters::backup),
        )
        .route(
            "/backups/{backup_id}/restore",
            web::post().to(clusters::restore),
        )
        .route(
            "/backups/{backup_id}/delete",
            web::post().to(clusters::delete_backup),
        )
        .route("/local-kms", web::get().to(local_kms::list))
        .route("/local-kms", web::post().to(local_kms::create))
        .route(
            "/local-kms/{key_id}/{action}",
            web::post().to(local_kms::change),
        )
        .route("/alerts", web::get().to(alerts::list))
        .route("/alerts", web::post().to(alerts::create))
        .route("/alerts/{webhook_id}", web::get().to(alerts::show))
        .route("/alerts/{webhook_id}/test", web::post().to(alerts::test))
        .route(
            "/alerts/{webhook_id}/delete",
            web::post().to(alerts::delete),
        )
        .route("/key-status", web::get().to(key_status::page))
        .route(
            "/projects/{project_id}/encryption-keys/{key_id}",
            web::get().to(keys::show),
        )
        .route("/api-keys", web::get().to(api_keys::list))
        .route("/api-keys", web::post().to(api_keys::create))
        .route(
            "/api-keys/{key_id}/revoke",
            web::post().to(api_keys::revoke),
        )
        .route("/members", web::get().to(members::list))
        .route("/members/invite", web::post().to(members::invite))
        .route(
            "/members/invitations/{invitation_id}/revoke",
            web::post().to(members::revoke_invitation),
        )
        .route(
            "/members/{user_id}/role",
            web::post().to(members::change_role),
        )
        .route("/members/{user_id}/remove", web::post().to(members::remove))
        .route("/organizations/switch", web::post().to(members::switch))
        .route("/audit", web::get().to(audit::list));
}

async fn home() -> HttpResponse {
    render::see_other("/projects")
}
