//! Our CSS, JavaScript and icon, and the API reference's renderer (Redoc, see
//! `frontend/static/vendor/README.md`), compiled into the binary so one file is the whole
//! console and no page calls the internet.

use actix_web::http::header;
use actix_web::{HttpResponse, ResponseError, web};

use crate::domain::DomainError;
use crate::http::errors::PageError;

const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../../../../frontend/static/app.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../../frontend/static/app.js"),
    ),
    (
        "vendor/redoc.standalone.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../../frontend/static/vendor/redoc.standalone.js"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("../../../../frontend/static/favicon.svg"),
    ),
];

/// `/api/docs`: the API reference, drawn by Redoc from `/api/v1/openapi.json`. Redoc injects
/// its styles and runs its search in a worker made from a blob, so this page alone allows
/// inline styles and blob workers; scripts still come only from the console.
pub async fn api_docs() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
             img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; \
             connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
             frame-ancestors 'none'",
        ))
        .body(include_str!("../../../../frontend/static/api-docs.html"))
}

pub async fn serve(file: web::Path<String>) -> HttpResponse {
    match ASSETS.iter().find(|(name, _, _)| *name == file.as_str()) {
        Some((_, content_type, body)) => HttpResponse::Ok()
            .content_type(*content_type)
            .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
            .body(*body),
        None => PageError::Domain(DomainError::NotFound("file")).error_response(),
    }
}

/// Browsers ask for `/favicon.ico` whatever the page says; they accept the SVG.
pub async fn favicon() -> HttpResponse {
    serve(web::Path::from("favicon.svg".to_owned())).await
}
