//! The webhook sender: signs each message as Standard Webhooks specifies (the
//! `standardwebhooks` crate: `webhook-id`, `webhook-timestamp`, `webhook-signature`) and
//! posts it with reqwest, bounded by the attempt time-out, following no redirect (a
//! redirect could lead a signed alert somewhere the owner did not configure).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use standardwebhooks::{
    HEADER_WEBHOOK_ID, HEADER_WEBHOOK_SIGNATURE, HEADER_WEBHOOK_TIMESTAMP, Webhook,
};

use crate::domain::Environment;
use crate::domain::alerts::{ATTEMPT_TIMEOUT, Outgoing, Sent, WebhookSender, is_internal};

pub struct HttpSender {
    client: reqwest::Client,
    /// Production: only public addresses, for resolved names (the resolver) and for address
    /// literals (checked here at each send: the resolver never sees them, and a webhook
    /// stored before a refusal rule existed must meet it too).
    public_only: bool,
}

/// Resolves names as the system does, then refuses every address that is not on the public
/// internet (production: a name such as `metadata.example` pointing at 169.254.169.254 must
/// not turn webhooks into a probe of the platform's network).
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|addr| !is_internal(addr.ip()))
                .collect();
            if found.is_empty() {
                return Err(format!(
                    "{host} resolves to no public address (internal addresses are refused)"
                )
                .into());
            }
            Ok(Box::new(found.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

impl HttpSender {
    /// In production only public addresses are connected to.
    pub fn new(environment: Environment) -> Result<Self, reqwest::Error> {
        let mut builder = reqwest::Client::builder();
        if environment == Environment::Production {
            // No proxy either: through one, only the proxy's name would meet the resolver.
            builder = builder
                .dns_resolver(std::sync::Arc::new(PublicOnly))
                .no_proxy();
        }
        let client = builder
            .timeout(ATTEMPT_TIMEOUT)
            .connect_timeout(std::time::Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!(
                "cmek-console/",
                env!("CARGO_PKG_VERSION"),
                " (webhooks)"
            ))
            .build()?;
        Ok(Self {
            client,
            public_only: environment == Environment::Production,
        })
    }
}

/// Whether the URL names its host by an address that is not public.
fn literal_is_internal(url: &str) -> bool {
    match url::Url::parse(url)
        .ok()
        .and_then(|u| u.host().map(|h| h.to_owned()))
    {
        Some(url::Host::Ipv4(ip)) => is_internal(std::net::IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => is_internal(std::net::IpAddr::V6(ip)),
        _ => false,
    }
}

/// A reqwest error in a sentence, without the URL's query (which may carry a token).
fn describe(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        format!("timed out after {} s", ATTEMPT_TIMEOUT.as_secs())
    } else if err.is_connect() {
        "could not connect to the endpoint".into()
    } else if err.is_redirect() {
        "the endpoint answered with a redirect, which is not followed".into()
    } else {
        "the request failed before an answer came".into()
    }
}

#[async_trait]
impl WebhookSender for HttpSender {
    async fn send(&self, message: &Outgoing<'_>) -> Sent {
        let started = Instant::now();
        let elapsed = || u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        if self.public_only && literal_is_internal(message.url) {
            return Sent {
                status_code: None,
                error: Some("the endpoint's address is not public: refused in production".into()),
                duration_ms: elapsed(),
            };
        }
        // The signing time is the sending time: receivers check it against their clock.
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
        let signature = match Webhook::from_bytes(message.secret.to_vec())
            .and_then(|hook| hook.sign(message.message_id, timestamp, message.payload.as_bytes()))
        {
            Ok(signature) => signature,
            Err(err) => {
                return Sent {
                    status_code: None,
                    error: Some(format!("could not sign the message: {err}")),
                    duration_ms: elapsed(),
                };
            }
        };
        let response = self
            .client
            .post(message.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(HEADER_WEBHOOK_ID, message.message_id)
            .header(HEADER_WEBHOOK_TIMESTAMP, timestamp.to_string())
            .header(HEADER_WEBHOOK_SIGNATURE, signature)
            .body(message.payload.to_owned())
            .send()
            .await;
        match response {
            Ok(response) => {
                let status = response.status();
                Sent {
                    status_code: Some(status.as_u16()),
                    error: (!status.is_success()).then(|| {
                        if status.is_redirection() {
                            format!("HTTP {}: redirects are not followed", status.as_u16())
                        } else {
                            format!("HTTP {}", status.as_u16())
                        }
                    }),
                    duration_ms: elapsed(),
                }
            }
            Err(err) => Sent {
                status_code: None,
                error: Some(describe(&err)),
                duration_ms: elapsed(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    #[test]
    fn stored_urls_with_internal_address_literals_are_caught_at_send_time() {
        assert!(super::literal_is_internal("https://[64:ff9b::a9fe:a9fe]/x"));
        assert!(super::literal_is_internal("https://224.0.0.1/x"));
        assert!(super::literal_is_internal("https://169.254.169.254/latest"));
        assert!(!super::literal_is_internal("https://1.1.1.1/x"));
        assert!(!super::literal_is_internal("https://hooks.example.com/x"));
    }

    use reqwest::dns::{Name, Resolve};

    use super::PublicOnly;

    #[tokio::test]
    async fn names_that_resolve_to_internal_addresses_are_refused() {
        let refused = PublicOnly
            .resolve(Name::from_str("localhost").expect("a name"))
            .await;
        let err = refused.err().expect("localhost is refused");
        assert!(err.to_string().contains("no public address"), "{err}");
    }
}
