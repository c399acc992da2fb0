//! S3's unfinished multipart uploads. `object_store` lists only finished objects, so what a
//! process killed in the middle of an upload leaves (its parts, billed by S3) is found by
//! asking S3 itself: ListMultipartUploads under the console's prefix, then
//! AbortMultipartUpload for each begun longer ago than the sweeper's grace period. Requests are
//! signed with SigV4 (the AWS crate that signs for the SDKs), with the same credentials and
//! endpoint as the rest of the console's AWS calls.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::ProvideCredentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use chrono::{DateTime, Utc};
use quick_xml::events::Event;
use secrecy::ExposeSecret;

use crate::domain::blobs::BlobError;
use crate::settings::AwsSettings;

/// One unfinished upload, as S3 lists it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Unfinished {
    pub key: String,
    pub upload_id: String,
    pub initiated: DateTime<Utc>,
}

/// A page of ListMultipartUploads.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Listing {
    pub uploads: Vec<Unfinished>,
    /// Where the next page starts (key marker, upload id marker), when there is one.
    pub next: Option<(String, String)>,
}

fn unavailable(what: impl std::fmt::Display) -> BlobError {
    BlobError::Unavailable(format!("S3 multipart uploads: {what}"))
}

/// Reads a ListMultipartUploads answer.
pub(super) fn parse_listing(xml: &str) -> Result<Listing, BlobError> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut listing = Listing::default();
    let mut path: Vec<String> = Vec::new();
    let mut text = String::new();
    let (mut key, mut upload_id, mut initiated) = (None, None, None);
    let (mut truncated, mut key_marker, mut id_marker) = (false, None, None);
    loop {
        match reader.read_event().map_err(unavailable)? {
            Event::Start(start) => {
                path.push(String::from_utf8_lossy(start.local_name().as_ref()).into_owned());
                text.clear();
            }
            Event::Text(t) => text.push_str(&t.decode().map_err(unavailable)?),
            Event::GeneralRef(r) => {
                let name = r.decode().map_err(unavailable)?;
                text.push_str(match name.as_ref() {
                    "amp" => "&",
                    "lt" => "<",
                    "gt" => ">",
                    "quot" => "\"",
                    "apos" => "'",
                    _ => "",
                });
            }
            Event::End(_) => {
                let value = std::mem::take(&mut text);
                let parent = path.len().checked_sub(2).and_then(|i| path.get(i));
                match (parent.map(String::as_str), path.last().map(String::as_str)) {
                    (Some("Upload"), Some("Key")) => key = Some(value),
                    (Some("Upload"), Some("UploadId")) => upload_id = Some(value),
                    (Some("Upload"), Some("Initiated")) => {
                        initiated = DateTime::parse_from_rfc3339(&value)
                            .ok()
                            .map(|t| t.with_timezone(&Utc));
                    }
                    (_, Some("Upload")) => {
                        if let (Some(key), Some(upload_id), Some(initiated)) =
                            (key.take(), upload_id.take(), initiated.take())
                        {
                            listing.uploads.push(Unfinished {
                                key,
                                upload_id,
                                initiated,
                            });
                        }
                    }
                    (Some("ListMultipartUploadsResult"), Some("IsTruncated")) => {
                        truncated = value == "true";
                    }
                    (Some("ListMultipartUploadsResult"), Some("NextKeyMarker")) => {
                        key_marker = Some(value);
                    }
                    (Some("ListMultipartUploadsResult"), Some("NextUploadIdMarker")) => {
                        id_marker = Some(value);
                    }
                    _ => {}
                }
                path.pop();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if truncated && let (Some(k), Some(i)) = (key_marker, id_marker) {
        listing.next = Some((k, i));
    }
    Ok(listing)
}

/// What the sweeper needs of S3 beyond `object_store`.
pub(super) struct S3Uploads {
    client: reqwest::Client,
    /// `<endpoint>/<bucket>` (path-style, as `object_store` addresses the bucket).
    base: String,
    /// The console's key prefix in the bucket (`""` or `prefix/`).
    prefix: String,
    region: String,
    aws: AwsSettings,
}

impl S3Uploads {
    pub(super) fn new(bucket: &str, prefix: &str, aws: &AwsSettings) -> Result<Self, BlobError> {
        let region = aws.region.clone().unwrap_or_else(|| "us-east-1".into());
        let endpoint = aws
            .endpoint_url
            .clone()
            .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(unavailable)?;
        Ok(Self {
            client,
            base: format!("{}/{bucket}", endpoint.trim_end_matches('/')),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{}/", prefix.trim_end_matches('/'))
            },
            region,
            aws: aws.clone(),
        })
    }

    async fn credentials(&self) -> Result<Credentials, BlobError> {
        if let (Some(id), Some(secret)) = (&self.aws.access_key_id, &self.aws.secret_access_key) {
            return Ok(Credentials::new(
                id,
                secret.expose_secret(),
                self.aws
                    .session_token
                    .as_ref()
                    .map(|t| t.expose_secret().to_owned()),
                None,
                "cmek-console settings",
            ));
        }
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .load()
            .await;
        let provider = config
            .credentials_provider()
            .ok_or_else(|| unavailable("no AWS credentials"))?;
        provider.provide_credentials().await.map_err(unavailable)
    }

    /// A request signed with SigV4 for S3 (no body).
    async fn send(&self, method: &str, url: &str) -> Result<reqwest::Response, BlobError> {
        let identity: Identity = self.credentials().await?.into();
        let mut settings = SigningSettings::default();
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(unavailable)?
            .into();
        let signable =
            SignableRequest::new(method, url, std::iter::empty(), SignableBody::Bytes(&[]))
                .map_err(unavailable)?;
        let (instructions, _) = sign(signable, &params).map_err(unavailable)?.into_parts();
        let (headers, query) = instructions.into_parts();
        let mut request = self
            .client
            .request(method.parse().map_err(unavailable)?, url);
        for header in headers {
            request = request.header(header.name(), header.value());
        }
        if !query.is_empty() {
            request = request.query(&query);
        }
        let response = request.send().await.map_err(unavailable)?;
        if !response.status().is_success() {
            return Err(unavailable(format!(
                "{method} answered {}",
                response.status()
            )));
        }
        Ok(response)
    }

    /// Aborts the uploads under the console's prefix begun before `before`; how many.
    pub(super) async fn abort_begun_before(&self, before: DateTime<Utc>) -> Result<u64, BlobError> {
        let prefix = encode(&self.prefix);
        let mut aborted = 0;
        let mut marker: Option<(String, String)> = None;
        loop {
            let mut url = format!("{}?prefix={prefix}&uploads=", self.base);
            if let Some((key, id)) = &marker {
                url = format!(
                    "{}?key-marker={}&prefix={prefix}&upload-id-marker={}&uploads=",
                    self.base,
                    encode(key),
                    encode(id)
                );
            }
            let body = self
                .send("GET", &url)
                .await?
                .text()
                .await
                .map_err(unavailable)?;
            let listing = parse_listing(&body)?;
            for upload in listing.uploads.iter().filter(|u| u.initiated < before) {
                let url = format!(
                    "{}/{}?uploadId={}",
                    self.base,
                    encode_path(&upload.key),
                    encode(&upload.upload_id)
                );
                self.send("DELETE", &url).await?;
                aborted += 1;
            }
            match listing.next {
                Some(next) => marker = Some(next),
                None => return Ok(aborted),
            }
        }
    }
}

/// RFC 3986 unreserved characters stay; everything else is percent-encoded (as SigV4 wants).
fn encode(raw: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(raw, SET).to_string()
}

/// A key in a path: each segment encoded, the slashes kept.
fn encode_path(key: &str) -> String {
    key.split('/').map(encode).collect::<Vec<_>>().join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_gives_each_upload_and_where_the_next_page_starts() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>b</Bucket>
  <KeyMarker></KeyMarker>
  <NextKeyMarker>console/clusters/b&amp;c</NextKeyMarker>
  <NextUploadIdMarker>id-2</NextUploadIdMarker>
  <IsTruncated>true</IsTruncated>
  <Upload>
    <Key>console/clusters/a</Key>
    <UploadId>id-1</UploadId>
    <Initiator><ID>x</ID></Initiator>
    <Initiated>2026-12-07T10:00:00.000Z</Initiated>
  </Upload>
  <Upload>
    <Key>console/clusters/b&amp;c</Key>
    <UploadId>id-2</UploadId>
    <Initiated>2026-12-07T11:00:00Z</Initiated>
  </Upload>
</ListMultipartUploadsResult>"#;

        let listing = parse_listing(xml).unwrap();

        assert_eq!(listing.uploads.len(), 2);
        assert_eq!(listing.uploads[0].key, "console/clusters/a");
        assert_eq!(listing.uploads[0].upload_id, "id-1");
        assert_eq!(
            listing.uploads[0].initiated,
            DateTime::parse_from_rfc3339("2026-12-07T10:00:00Z").unwrap()
        );
        assert_eq!(listing.uploads[1].key, "console/clusters/b&c");
        assert_eq!(
            listing.next,
            Some(("console/clusters/b&c".into(), "id-2".into()))
        );
        let last = parse_listing("<ListMultipartUploadsResult><IsTruncated>false</IsTruncated></ListMultipartUploadsResult>").unwrap();
        assert_eq!(last, Listing::default());
    }

    #[test]
    fn keys_and_markers_are_encoded_as_sigv4_expects() {
        assert_eq!(encode("a b/c~d"), "a%20b%2Fc~d");
        assert_eq!(
            encode_path("console/clusters/x y"),
            "console/clusters/x%20y"
        );
    }
}
