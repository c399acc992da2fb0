//! Signing in with a one-time link, and signing out. Opening the link shows a button rather
//! than signing in at once: link scanners and previews that fetch URLs must not use it up.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use crate::domain::identity::SignIn;
use crate::http::AppState;
use crate::http::auth::{PageCaller, expired_session_cookie, session_cookie, source_ip};
use crate::http::errors::PageError;
use crate::http::pages::render::{html, html_status, see_other};

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage<'a> {
    message: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "sign_in_link.html")]
struct ConfirmPage<'a> {
    token: &'a str,
}

#[derive(Deserialize)]
pub struct LinkParams {
    token: Option<String>,
}

pub async fn page() -> Result<HttpResponse, PageError> {
    html(&SignInPage { message: None })
}

pub async fn confirm(query: web::Query<LinkParams>) -> Result<HttpResponse, PageError> {
    match query.token.as_deref().filter(|t| !t.is_empty()) {
        Some(token) => html(&ConfirmPage { token }),
        None => html_status(
            StatusCode::BAD_REQUEST,
            &SignInPage {
                message: Some("This sign-in link is incomplete: copy the whole link."),
            },
        ),
    }
}

pub async fn redeem(
    req: HttpRequest,
    state: web::Data<AppState>,
    form: web::Form<LinkParams>,
) -> Result<HttpResponse, PageError> {
    let token = form.token.as_deref().unwrap_or_default();
    match state
        .console
        .sign_in_with_link(token, source_ip(&req))
        .await?
    {
        SignIn::Opened { token, .. } => {
            let cookie = session_cookie(
                token,
                state.secure_cookies,
                state.console.session_policy().max_age,
            );
            let mut response = see_other("/projects");
            response
                .add_cookie(&cookie)
                .map_err(|e| PageError::BadRequest(e.to_string()))?;
            Ok(response)
        }
        SignIn::Refused(refusal) => html_status(
            StatusCode::UNAUTHORIZED,
            &SignInPage {
                message: Some(refusal.message()),
            },
        ),
    }
}

pub async fn sign_out(
    state: web::Data<AppState>,
    caller: PageCaller,
) -> Result<HttpResponse, PageError> {
    state.console.sign_out(&caller.0).await?;
    let mut response = see_other("/sign-in");
    response
        .add_cookie(&expired_session_cookie(state.secure_cookies))
        .map_err(|e| PageError::BadRequest(e.to_string()))?;
    Ok(response)
}
