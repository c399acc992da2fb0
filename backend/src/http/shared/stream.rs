//! Object bodies in and out of HTTP, for the API and the cluster page alike: a request body as
//! the domain reads it, and an object streamed out with flat memory.

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use futures_util::StreamExt;

use crate::domain::DomainError;
use crate::domain::clusters::BodyError;
use crate::http::shared::query::query_value;

/// The body's length as the client declared it.
pub fn declared_length(request: &actix_web::HttpRequest) -> Option<u64> {
    request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// A request body as the domain reads it: chunks, or why it stopped.
pub fn body_stream(payload: web::Payload) -> crate::domain::clusters::ObjectBody<'static> {
    Box::pin(payload.map(|chunk| {
        chunk.map_err(|err| match err {
            actix_web::error::PayloadError::Overflow => BodyError::TooLarge,
            actix_web::error::PayloadError::Io(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                BodyError::TimedOut
            }
            _ => BodyError::Broken,
        })
    }))
}

/// Streams an object out. The first segment is opened before the status is sent, so an
/// object that fails its integrity check at once gets a problem, not a 200; a later failure
/// cuts the connection short (the length header shows the body incomplete).
pub async fn download(
    read: crate::domain::clusters::ObjectRead,
) -> Result<HttpResponse, DomainError> {
    let mut body = read.body;
    let first = match body.next().await {
        Some(Ok(first)) => Some(first),
        Some(Err(err)) => return Err(err),
        None => None,
    };
    let name = read.object.name.as_str();
    let file = name.rsplit('/').next().unwrap_or(name);
    let rest = futures_util::stream::iter(first.map(Ok)).chain(body.map(|chunk| {
        chunk.map_err(|err| {
            tracing::error!(error = %err, "an object stopped streaming");
            actix_web::error::ErrorBadGateway("stored data failed its integrity check")
        })
    }));
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename*=UTF-8''{}", query_value(file)),
        ))
        .insert_header((header::ETAG, format!("\"{}\"", read.object.version)))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .no_chunking(read.object.size_bytes)
        .streaming(rest))
}
