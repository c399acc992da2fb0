//! Signing in with a one-time link, and signing out. Opening the link shows a button rather
//! than signing in at once: link scanners and previews that fetch URLs must not use it up.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use crate::domain::secrets::constant_time_eq;
use crate::domain::sign_in::SignIn;
use crate::http::AppState;
use crate::http::auth::{PageCaller, expired_session_cookie, session_cookie, source_ip};
use crate::http::errors::PageError;
use crate::http::pages::render::{html, html_status, see_other};
use actix_web::cookie::{Cookie, SameSite, time::Duration as CookieDuration};

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage<'a> {
    message: Option<&'a str>,
    sso: bool,
}

const SSO_COOKIE: &str = "cmek_sso";

fn sign_in_page(
    state: &AppState,
    status: StatusCode,
    message: Option<&str>,
) -> Result<HttpResponse, PageError> {
    html_status(
        status,
        &SignInPage {
            message,
            sso: state.console.sso_enabled(),
        },
    )
}

/// Refuses an address that tried to sign in too often.
async fn limited(req: &HttpRequest, state: &AppState) -> Result<Option<HttpResponse>, PageError> {
    let Some(address) = source_ip(req) else {
        return Ok(None);
    };
    match state
        .console
        .identity()
        .count_sign_in_attempt(&address)
        .await?
    {
        None => Ok(None),
        Some(retry) => {
            let mut response = sign_in_page(
                state,
                StatusCode::TOO_MANY_REQUESTS,
                Some(
                    "Too many sign-in attempts from your address. Wait a few minutes and try again.",
                ),
            )?;
            if let Ok(value) =
                actix_web::http::header::HeaderValue::from_str(&retry.as_secs().max(1).to_string())
            {
                response
                    .headers_mut()
                    .insert(actix_web::http::header::RETRY_AFTER, value);
            }
            Ok(Some(response))
        }
    }
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

pub async fn page(state: web::Data<AppState>) -> Result<HttpResponse, PageError> {
    sign_in_page(&state, StatusCode::OK, None)
}

pub async fn confirm(
    state: web::Data<AppState>,
    query: web::Query<LinkParams>,
) -> Result<HttpResponse, PageError> {
    match query.token.as_deref().filter(|t| !t.is_empty()) {
        Some(token) => html(&ConfirmPage { token }),
        None => sign_in_page(
            &state,
            StatusCode::BAD_REQUEST,
            Some("This sign-in link is incomplete: copy the whole link."),
        ),
    }
}

pub async fn redeem(
    req: HttpRequest,
    state: web::Data<AppState>,
    form: web::Form<LinkParams>,
) -> Result<HttpResponse, PageError> {
    if let Some(refused) = limited(&req, &state).await? {
        return Ok(refused);
    }
    let token = form.token.as_deref().unwrap_or_default();
    match state
        .console
        .identity()
        .sign_in_with_link(token, source_ip(&req))
        .await?
    {
        SignIn::Opened { token, .. } => signed_in(&state, token),
        SignIn::Refused(refusal) => {
            sign_in_page(&state, StatusCode::UNAUTHORIZED, Some(refusal.message()))
        }
    }
}

/// A fresh session cookie (a new id at every sign-in: no fixation) and on to the console.
fn signed_in(state: &AppState, token: String) -> Result<HttpResponse, PageError> {
    let cookie = session_cookie(
        token,
        state.secure_cookies,
        state.console.session_policy().max_age,
    );
    let mut response = see_other("/projects");
    response.add_cookie(&cookie).map_err(PageError::internal)?;
    let mut gone = Cookie::build(SSO_COOKIE, "").path("/sign-in/sso").finish();
    gone.make_removal();
    response.add_cookie(&gone).map_err(PageError::internal)?;
    Ok(response)
}

fn redirect_uri(state: &AppState) -> String {
    format!("{}/sign-in/sso/callback", state.public_url)
}

/// Sign in with SSO: remember state, nonce and PKCE verifier in a short-lived cookie, and
/// send the browser to the provider.
pub async fn sso(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, PageError> {
    if let Some(refused) = limited(&req, &state).await? {
        return Ok(refused);
    }
    let start = match state
        .console
        .identity()
        .sso_start(&redirect_uri(&state))
        .await?
    {
        Ok(start) => start,
        Err(err) => {
            tracing::warn!(error = %err, "single sign-on could not start");
            return sign_in_page(
                &state,
                StatusCode::BAD_GATEWAY,
                Some("The identity provider could not be reached. Try again in a moment."),
            );
        }
    };
    let value = format!("{}.{}.{}", start.state, start.nonce, start.pkce_verifier);
    let cookie = Cookie::build(SSO_COOKIE, value)
        .path("/sign-in/sso")
        .http_only(true)
        .secure(state.secure_cookies)
        .same_site(SameSite::Lax)
        .max_age(CookieDuration::minutes(10))
        .finish();
    let mut response = see_other(&start.authorize_url);
    response.add_cookie(&cookie).map_err(PageError::internal)?;
    Ok(response)
}

#[derive(Deserialize)]
pub struct CallbackParams {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

const START_AGAIN: &str = "This sign-in expired or was started in another browser. Start again.";

pub async fn sso_callback(
    req: HttpRequest,
    state: web::Data<AppState>,
    params: web::Query<CallbackParams>,
) -> Result<HttpResponse, PageError> {
    if let Some(refused) = limited(&req, &state).await? {
        return Ok(refused);
    }
    if params.error.is_some() {
        let message = "The identity provider did not sign you in.";
        return sign_in_page(&state, StatusCode::UNAUTHORIZED, Some(message));
    }
    let remembered = req
        .cookie(SSO_COOKIE)
        .map(|c| c.value().to_owned())
        .unwrap_or_default();
    let mut parts = remembered.splitn(3, '.');
    let (Some(expected), Some(nonce), Some(verifier)) = (parts.next(), parts.next(), parts.next())
    else {
        return sign_in_page(&state, StatusCode::BAD_REQUEST, Some(START_AGAIN));
    };
    let (Some(code), Some(returned)) = (params.code.as_deref(), params.state.as_deref()) else {
        return sign_in_page(&state, StatusCode::BAD_REQUEST, Some(START_AGAIN));
    };
    if !constant_time_eq(returned.as_bytes(), expected.as_bytes()) {
        state
            .console
            .identity()
            .sso_refused("state mismatch", source_ip(&req))
            .await?;
        let message = "This sign-in could not be verified (its state does not match). Start again.";
        return sign_in_page(&state, StatusCode::BAD_REQUEST, Some(message));
    }
    let redirect = redirect_uri(&state);
    match state
        .console
        .identity()
        .sso_finish(&redirect, code, verifier, nonce, source_ip(&req))
        .await?
    {
        Ok(token) => signed_in(&state, token),
        Err(message) => sign_in_page(&state, StatusCode::UNAUTHORIZED, Some(&message)),
    }
}

pub async fn sign_out(
    state: web::Data<AppState>,
    caller: PageCaller,
) -> Result<HttpResponse, PageError> {
    let return_to = format!("{}/sign-in", state.public_url);
    let provider = state
        .console
        .identity()
        .sign_out(&caller.0, &return_to)
        .await?;
    let mut response = see_other(provider.as_deref().unwrap_or("/sign-in"));
    response
        .add_cookie(&expired_session_cookie(state.secure_cookies))
        .map_err(PageError::internal)?;
    Ok(response)
}
