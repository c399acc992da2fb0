//! `/problems`, `/problems/<slug>` and `/rules/<slug>`: every problem type of the API, as
//! `http/problems.rs` documents them. Public: a type URI must open for anyone who meets it.

use actix_web::{HttpResponse, web};
use askama::Template;

use crate::domain::DomainError;
use crate::http::errors::PageError;
use crate::http::problems::{ProblemDoc, all};

#[derive(Template)]
#[template(path = "problems.html")]
struct ProblemsPage {
    docs: Vec<ProblemDoc>,
    one: bool,
}

fn render(docs: Vec<ProblemDoc>, one: bool) -> Result<HttpResponse, PageError> {
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(ProblemsPage { docs, one }.render()?))
}

/// `/problems`: every type.
pub async fn index() -> Result<HttpResponse, PageError> {
    render(all(), false)
}

/// `/problems/{slug}` and `/rules/{slug}`: one type.
pub async fn one(path: web::Path<(String, String)>) -> Result<HttpResponse, PageError> {
    let (family, slug) = path.into_inner();
    let doc = all()
        .into_iter()
        .find(|d| d.family == family && d.slug == slug)
        .ok_or(PageError::Domain(DomainError::NotFound("problem type")))?;
    render(vec![doc], true)
}
