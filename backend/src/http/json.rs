//! The JSON body extractor of the API: checks the media type and the size limit, and turns
//! every decoding failure into a problem that names the field (via `serde_path_to_error`).

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use serde::de::DeserializeOwned;

use crate::domain::{DomainError, FieldError};
use crate::http::errors::ApiError;

/// Request bodies larger than this are refused with 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for ApiJson<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                let v = v.trim().to_ascii_lowercase();
                v == "application/json" || v.ends_with("+json")
            });
        let body = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            if !json {
                return Err(ApiError::UnsupportedMediaType);
            }
            let bytes = body
                .await
                .map_err(|err| match err.as_error::<PayloadError>() {
                    Some(PayloadError::Overflow) => ApiError::TooLarge {
                        limit: MAX_BODY_BYTES,
                    },
                    Some(PayloadError::Io(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                        ApiError::BodyTimeout
                    }
                    _ => ApiError::Malformed {
                        detail: "The request body could not be read.".into(),
                        field: None,
                    },
                })?;
            decode(&bytes).map(ApiJson)
        })
    }
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Every body of the API is an object: serde would otherwise read an array as a struct's
    // fields in order. JSON that is not an object is refused before its fields are read (422),
    // and what does not start as an object and is not JSON either is malformed (400).
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b != b'{') {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
                Ok(_) => ApiError::Domain(DomainError::Invalid(vec![FieldError::new(
                    "body",
                    "must be a JSON object",
                )])),
                Err(e) => malformed(&e),
            },
        );
    }
    // Straight from the bytes, not through a `Value` (whose map keeps the last of two equal
    // keys): a field given twice is refused, as serde's derive does.
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let inner = err.inner();
        if inner.is_syntax() || inner.is_eof() {
            return malformed(inner);
        }
        let message = inner.to_string();
        // serde reports a missing or repeated field at the parent's path; name the field.
        let field = match message.split('`').nth(1) {
            Some(name)
                if message.starts_with("missing field")
                    || message.starts_with("duplicate field") =>
            {
                name.to_owned()
            }
            _ => err.path().to_string(),
        };
        let reason = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_owned();
        ApiError::Domain(DomainError::Invalid(vec![FieldError::new(field, reason)]))
    })?;
    de.end().map_err(|e| malformed(&e))?;
    Ok(value)
}

fn malformed(err: &serde_json::Error) -> ApiError {
    ApiError::Malformed {
        detail: format!("The body is not valid JSON ({err})."),
        field: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        enabled: bool,
    }

    fn field_of(err: ApiError) -> Option<String> {
        match err {
            ApiError::Domain(DomainError::Invalid(f)) => f.first().map(|f| f.field.clone()),
            _ => None,
        }
    }

    #[test]
    fn a_wrong_type_names_its_field() {
        let err = decode::<Body>(br#"{"name":"a","enabled":"yes"}"#).err();
        assert_eq!(err.and_then(field_of), Some("enabled".into()));
    }

    #[test]
    fn only_an_object_is_a_body_and_a_field_given_twice_is_refused() {
        let err = decode::<Body>(br#"["a", true]"#).err();
        assert_eq!(err.and_then(field_of), Some("body".into()));
        let err = decode::<Body>(br#"{"name":"a","enabled":true,"name":"b"}"#).err();
        assert_eq!(err.and_then(field_of), Some("name".into()));
        assert!(matches!(
            decode::<Body>(b"[1,"),
            Err(ApiError::Malformed { .. })
        ));
    }

    #[test]
    fn a_missing_field_is_named() {
        let err = decode::<Body>(br#"{"name":"a"}"#).err();
        assert_eq!(err.and_then(field_of), Some("enabled".into()));
    }

    #[test]
    fn broken_json_is_malformed() {
        let err = decode::<Body>(br#"{"name": "#).err();
        assert!(matches!(err, Some(ApiError::Malformed { .. })));
    }
}
