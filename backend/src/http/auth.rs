//! Who is calling: a bearer API key, or a browser session cookie. The API accepts both; pages
//! accept the session only. Cross-site protection for cookie-authenticated writes lives in
//! `middleware::same_origin`.

use std::future::Future;
use std::pin::Pin;

use actix_web::cookie::{Cookie, SameSite, time::Duration as CookieDuration};
use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};

use crate::domain::DomainError;
use crate::domain::identity::Caller;
use crate::http::AppState;
use crate::http::errors::{ApiError, PageError};

pub const SESSION_COOKIE: &str = "cmek_session";

/// The client's address for audit events and rate limits (see `forwarded`).
pub fn source_ip(req: &HttpRequest) -> Option<String> {
    let state = req.app_data::<web::Data<AppState>>()?;
    state.proxies.client_ip(req).map(|ip| ip.to_string())
}

/// The bearer token, if the request carries an `Authorization: Bearer` header.
pub fn bearer(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn state(req: &HttpRequest) -> Result<web::Data<AppState>, DomainError> {
    req.app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or(DomainError::Unauthenticated)
}

async fn authenticate(req: HttpRequest, allow_bearer: bool) -> Result<Caller, DomainError> {
    let state = state(&req)?;
    let ip = source_ip(&req);
    if req.headers().contains_key(header::AUTHORIZATION) {
        // A credential that was sent but is wrong never falls back to the cookie.
        let token = bearer(&req).filter(|_| allow_bearer);
        return match token {
            Some(token) => {
                state
                    .console
                    .identity()
                    .authenticate_api_key(token, ip)
                    .await?
            }
            None => None,
        }
        .ok_or(DomainError::Unauthenticated);
    }
    match req.cookie(SESSION_COOKIE) {
        Some(cookie) => state
            .console
            .identity()
            .authenticate_session(cookie.value(), ip)
            .await?
            .ok_or(DomainError::Unauthenticated),
        None => Err(DomainError::Unauthenticated),
    }
}

/// An authenticated API caller (API key or session).
pub struct ApiCaller(pub Caller);

impl FromRequest for ApiCaller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { Ok(ApiCaller(authenticate(req, true).await?)) })
    }
}

/// A signed-in browser user; signed-out visitors are redirected to the sign-in page.
pub struct PageCaller(pub Caller);

impl FromRequest for PageCaller {
    type Error = PageError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, PageError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { Ok(PageCaller(authenticate(req, false).await?)) })
    }
}

pub fn session_cookie(
    token: String,
    secure: bool,
    max_age: std::time::Duration,
) -> Cookie<'static> {
    Cookie::build(SESSION_COOKIE, token)
        .path("/")
        .http_only(true)
        .secure(secure)
        .same_site(SameSite::Lax)
        .max_age(CookieDuration::seconds(
            i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX),
        ))
        .finish()
}

pub fn expired_session_cookie(secure: bool) -> Cookie<'static> {
    let mut cookie = session_cookie(String::new(), secure, std::time::Duration::ZERO);
    cookie.make_removal();
    cookie
}
