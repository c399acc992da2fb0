//! Our CSS, JavaScript and icon, compiled into the binary so one file is the whole console.

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
        "favicon.svg",
        "image/svg+xml",
        include_str!("../../../../frontend/static/favicon.svg"),
    ),
];

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
