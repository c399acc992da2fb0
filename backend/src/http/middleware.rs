//! Cross-cutting request handling: request ids, logs and metrics; security headers; and the
//! same-origin check that protects cookie-authenticated writes from cross-site requests.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;

use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use actix_web::web::Bytes;
use futures_util::Stream;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::{ConnectionType, Method};
use actix_web::middleware::Next;
use actix_web::{Error, ResponseError, web};
use tracing::Instrument;
use uuid::Uuid;

use crate::http::AppState;
use crate::http::auth::{SESSION_COOKIE, bearer};
use crate::http::errors::{ApiError, PageError};
use crate::http::shared::request_id::CURRENT_REQUEST;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A request id in a span around the request, in the `x-request-id` response header, and in
/// one log line per request; then the metrics.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let started = Instant::now();
    let request_id = Uuid::now_v7().to_string();
    let method = method_label(req.method());
    let path = req.path().to_owned();
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let span = tracing::info_span!("request", id = %request_id, %method, %path);
    let mut res = CURRENT_REQUEST
        .scope(request_id.clone(), next.call(req).instrument(span.clone()))
        .await?
        .map_into_boxed_body();
    let status = res.status().as_u16();
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "(unmatched)".to_owned());
    let elapsed = started.elapsed();
    if let Some(state) = state {
        state.metrics.observe(&method, &route, status, elapsed);
    }
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        res.headers_mut().insert(REQUEST_ID, value);
    }
    span.in_scope(|| {
        tracing::info!(
            status,
            route,
            elapsed_ms = elapsed.as_secs_f64() * 1000.0,
            "answered"
        );
    });
    Ok(res)
}

/// `HEAD` is answered wherever `GET` is: routed as a `GET`, and the server sends the headers
/// without the body (the connection knows the request was a `HEAD`).
pub async fn head_as_get(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    if req.method() == Method::HEAD {
        req.head_mut().method = Method::GET;
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

/// Request heads larger than this (all header names and values) are refused with 431.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Bounds what a client can hold: a request head larger than `MAX_HEADER_BYTES` is refused,
/// and the body must arrive within `CMEK_BODY_TIMEOUT` of the head (which itself has 5 s), so
/// a client that sends part of a body and stops holds nothing for long: the handler reading
/// it gets a time-out error, answers 408, and the connection closes.
pub async fn bound_request(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let head_bytes: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if head_bytes > MAX_HEADER_BYTES {
        let response = if req.path().starts_with("/api/") {
            ApiError::HeadersTooLarge {
                limit: MAX_HEADER_BYTES,
            }
            .error_response()
        } else {
            PageError::HeadersTooLarge.error_response()
        };
        return Ok(req.into_response(response));
    }
    let timeout = req
        .app_data::<web::Data<AppState>>()
        .map_or(std::time::Duration::from_secs(30), |s| s.body_timeout);
    let has_body = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() != "0")
        || req.headers().contains_key(header::TRANSFER_ENCODING);
    let finished = Rc::new(Cell::new(false));
    let upload = is_object_upload(req.method(), req.path());
    let (_, payload) = req.parts_mut();
    let inner = std::mem::replace(payload, Payload::None);
    let bounded: Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>> =
        Box::pin(BodyDeadline {
            inner,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            expired: false,
            finished: finished.clone(),
            upload: upload.then(|| Upload {
                started: tokio::time::Instant::now(),
                timeout,
                received: 0,
            }),
        });
    req.set_payload(Payload::from(bounded));
    let mut res = next.call(req).await?.map_into_boxed_body();
    if has_body && !finished.get() {
        // The handler answered without reading the whole body (refused before it, or the
        // body was too slow): close rather than wait for the rest with no time limit.
        res.response_mut()
            .head_mut()
            .set_connection_type(ConnectionType::Close);
    }
    Ok(res)
}

/// Object uploads may take longer than `CMEK_BODY_TIMEOUT`, as long as they keep a
/// minimum rate: each byte received buys time at this rate.
pub const UPLOAD_MIN_RATE: u64 = 256 * 1024;

/// Object uploads: `PUT /api/v1/clusters/{id}/objects/{name}` and the cluster page's form.
fn is_object_upload(method: &Method, path: &str) -> bool {
    let object_api = method == Method::PUT
        && path.starts_with("/api/v1/clusters/")
        && path.contains("/objects/");
    let object_form =
        method == Method::POST && path.starts_with("/clusters/") && path.ends_with("/objects");
    object_api || object_form
}

struct Upload {
    started: tokio::time::Instant,
    timeout: std::time::Duration,
    received: u64,
}

/// A request body that fails with `TimedOut` once its deadline passes, and says whether it
/// was read to its end. For an upload the deadline moves as bytes arrive.
struct BodyDeadline {
    inner: Payload,
    deadline: Pin<Box<tokio::time::Sleep>>,
    expired: bool,
    finished: Rc<Cell<bool>>,
    upload: Option<Upload>,
}

impl Stream for BodyDeadline {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.expired {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(None) => {
                self.finished.set(true);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(chunk))) => {
                if let Some(upload) = self.upload.as_mut() {
                    upload.received += chunk.len() as u64;
                    let earned = std::time::Duration::from_secs_f64(
                        upload.received as f64 / UPLOAD_MIN_RATE as f64,
                    );
                    // Time earned by bytes, but never more than one time-out of silence.
                    let until = (upload.started + upload.timeout + earned)
                        .min(tokio::time::Instant::now() + upload.timeout);
                    self.deadline.as_mut().reset(until);
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(item) => Poll::Ready(item),
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    self.expired = true;
                    Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the request body did not arrive in time",
                    )))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

/// The method as a metrics label: the standard ones by name, anything else as `OTHER`, so a
/// client inventing methods cannot grow the number of series.
fn method_label(method: &Method) -> String {
    match *method {
        Method::GET
        | Method::HEAD
        | Method::POST
        | Method::PUT
        | Method::PATCH
        | Method::DELETE
        | Method::OPTIONS => method.as_str().to_owned(),
        _ => "OTHER".to_owned(),
    }
}

/// Headers every response carries; the CSP allows only our own scripts and styles.
pub async fn security_headers(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let hsts = req
        .app_data::<web::Data<AppState>>()
        .is_some_and(|s| s.secure_cookies);
    let mut res = next.call(req).await?;
    let headers = res.headers_mut();
    let fixed = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "same-origin"),
    ];
    for (name, value) in fixed {
        // A page that needs its own policy (the API reference) has set it already.
        if name == header::CONTENT_SECURITY_POLICY && headers.contains_key(&name) {
            continue;
        }
        headers.insert(name, HeaderValue::from_static(value));
    }
    if hsts {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    Ok(res)
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The origin the request claims to come from: `Origin`, else the origin of `Referer`.
fn claimed_origin(req: &ServiceRequest) -> Option<String> {
    let headers = req.headers();
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        return Some(origin.to_owned());
    }
    let referer = headers.get(header::REFERER)?.to_str().ok()?;
    let (scheme, rest) = referer.split_once("://")?;
    let host = rest.split('/').next()?;
    Some(format!("{scheme}://{host}"))
}

/// The origin the request was addressed to: the Host header, or what a trusted proxy says.
fn own_origin(req: &ServiceRequest, state: &AppState) -> String {
    if state.proxies.from_proxy(req.request()) {
        let info = req.connection_info();
        return crate::http::forwarded::origin_of(&format!("{}://{}", info.scheme(), info.host()));
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    crate::http::forwarded::origin_of(&format!("http://{host}"))
}

/// Writes that ride on a browser's session cookie, and sign-in itself, must come from the
/// console's own origin: `CMEK_PUBLIC_URL`'s when it is set, else the Host the request was sent
/// to. Forwarding headers (`X-Forwarded-Host`, `Forwarded`) count only from a trusted proxy.
/// Bearer calls carry no ambient credential and are exempt. SameSite cookies alone are not
/// relied on.
pub async fn same_origin(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    // The decoded path, as the router sees it: `/%73ign-in/link` is sign-in too.
    let ambient =
        req.cookie(SESSION_COOKIE).is_some() || req.match_info().as_str().starts_with("/sign-in");
    if is_safe(req.method()) || bearer(req.request()).is_some() || !ambient {
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let allowed = match (claimed_origin(&req), state) {
        (Some(origin), Some(state)) => {
            let origin = crate::http::forwarded::origin_of(&origin);
            origin == state.public_origin
                || (!state.public_url_configured && origin == own_origin(&req, &state))
        }
        _ => false,
    };
    if allowed {
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    tracing::warn!(path = req.path(), "cross-site write refused");
    let response = if req.path().starts_with("/api/") {
        ApiError::CrossSite.error_response()
    } else {
        PageError::CrossSite.error_response()
    };
    Ok(req.into_response(response))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::shared::error_page::error_page;

    #[tokio::test]
    async fn a_server_error_page_names_the_request_to_quote() {
        let (server, not_found) = CURRENT_REQUEST
            .scope("0199-request".into(), async {
                (
                    error_page(500, "Internal error", "x"),
                    error_page(404, "Not found", "x"),
                )
            })
            .await;

        assert!(server.contains("0199-request"));
        assert!(
            !not_found.contains("0199-request"),
            "only server errors name it"
        );
    }
}
