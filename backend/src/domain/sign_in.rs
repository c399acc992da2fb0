//! Signing in and staying signed in: the one-time link for the first owner (issued by
//! `serve` and `sign-in-link`; single use, 15 minutes, and issuing one never breaks one
//! already printed), browser sessions with idle and absolute expiry, signing out, and the
//! sign-in rate limit shared by every console process. Single sign-on (`sso`) opens the
//! same sessions.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::DomainError;
use crate::domain::audit::{AuditDraft, Outcome};
use crate::domain::identity::{Actor, Caller, Session, SignInLink, User};
use crate::domain::identity_service::Identity;
use crate::domain::secrets::{NewSecret, hash_secret};

fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// A sign-in link works once, for this long.
pub const SIGN_IN_LINK_TTL: chrono::Duration = chrono::Duration::minutes(15);

/// Sign-in attempts (links, SSO callbacks) allowed per source address in one window, counted
/// in the database so the limit holds however many console processes serve.
pub const SIGN_IN_ATTEMPTS: u32 = 20;

pub const SIGN_IN_WINDOW: chrono::Duration = chrono::Duration::minutes(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkRefusal {
    Unknown,
    Used,
    Expired,
}

impl LinkRefusal {
    pub fn message(self) -> &'static str {
        match self {
            LinkRefusal::Unknown => "This sign-in link is not valid.",
            LinkRefusal::Used => "This sign-in link has already been used.",
            LinkRefusal::Expired => "This sign-in link has expired.",
        }
    }
}

pub enum SignIn {
    /// The session token for the cookie.
    Opened {
        token: String,
    },
    Refused(LinkRefusal),
}

impl Identity {
    pub(crate) fn new_session(&self, user_id: Uuid, now: DateTime<Utc>) -> (Session, String) {
        let secret = NewSecret::generate("");
        let session = Session {
            id: Uuid::now_v7(),
            user_id,
            token_hash: secret.hash,
            created_at: now,
            last_seen_at: now,
            expires_at: now + to_chrono(self.policy.sessions.max_age),
        };
        (session, secret.plaintext)
    }
    /// What `serve` does at start: the first organization, and a sign-in link for its owner
    /// until that owner has signed in once. Links issued earlier keep working until they are
    /// used or expire. Returns the link's token when one was issued.
    pub async fn bootstrap(&self) -> Result<Option<String>, DomainError> {
        let owner = self.ensure_organization().await?;
        if owner.last_sign_in_at.is_some() {
            return Ok(None);
        }
        Ok(Some(self.issue_sign_in_link(&owner).await?))
    }

    /// Counts a sign-in attempt from `address`; when it is over the limit, how long until the
    /// window ends.
    pub async fn count_sign_in_attempt(
        &self,
        address: &str,
    ) -> Result<Option<std::time::Duration>, DomainError> {
        let counted = self
            .windows
            .count(
                &format!("sign-in:{}", bucket_of(address)),
                SIGN_IN_WINDOW.num_seconds(),
            )
            .await?;
        Ok((counted.count > SIGN_IN_ATTEMPTS).then_some(counted.retry_after))
    }

    /// A fresh single-use link for a user (the operator's `sign-in-link` command uses it too).
    pub async fn issue_sign_in_link(&self, user: &User) -> Result<String, DomainError> {
        let now = self.clock.now();
        let secret = NewSecret::generate("");
        let link = SignInLink {
            id: Uuid::now_v7(),
            user_id: user.id,
            token_hash: secret.hash,
            created_at: now,
            expires_at: now + SIGN_IN_LINK_TTL,
            used_at: None,
        };
        let audit = AuditDraft::new(
            Actor::System.label(),
            Some(user.organization_id),
            now,
            "sign_in_link.issued",
            format!("user/{}", user.id),
        )
        .detail(serde_json::json!({ "expires_at": link.expires_at }));
        self.credentials.insert_sign_in_link(&link, audit).await?;
        Ok(secret.plaintext)
    }

    /// Redeems a sign-in link: valid, unused and unexpired opens a session, once.
    pub async fn sign_in_with_link(
        &self,
        token: &str,
        source_ip: Option<String>,
    ) -> Result<SignIn, DomainError> {
        let now = self.clock.now();
        let link = self.credentials.sign_in_link(&hash_secret(token)).await?;
        let refusal = match &link {
            None => Some(LinkRefusal::Unknown),
            Some(l) if l.used_at.is_some() => Some(LinkRefusal::Used),
            Some(l) if l.expires_at <= now => Some(LinkRefusal::Expired),
            Some(_) => None,
        };
        let user = match &link {
            Some(l) => self.members.user(l.user_id).await?,
            None => None,
        };
        let (link, user) = match (link, user, refusal) {
            (Some(link), Some(user), None) => (link, user),
            (link, user, refusal) => {
                let refusal = refusal.unwrap_or(LinkRefusal::Unknown);
                let actor = user.as_ref().map(User::actor).unwrap_or(Actor::System);
                let target = link
                    .map(|l| format!("sign_in_link/{}", l.id))
                    .unwrap_or_else(|| "sign_in_link/unknown".into());
                let organization_id = user.as_ref().map(|u| u.organization_id);
                let reason = format!("{refusal:?}").to_lowercase();
                self.record(
                    AuditDraft::new(
                        actor.label(),
                        organization_id,
                        now,
                        "session.sign_in",
                        target,
                    )
                    .from_address(source_ip)
                    .outcome(Outcome::Denied)
                    .detail(serde_json::json!({ "method": "link", "reason": reason })),
                )
                .await?;
                return Ok(SignIn::Refused(refusal));
            }
        };
        let (session, token) = self.new_session(user.id, now);
        let audit = AuditDraft::signed_in(&user, now, source_ip)
            .detail(serde_json::json!({ "method": "link", "session": session.id }));
        if self
            .credentials
            .redeem_sign_in_link(link.id, now, &session, audit)
            .await?
        {
            Ok(SignIn::Opened { token })
        } else {
            Ok(SignIn::Refused(LinkRefusal::Used))
        }
    }

    /// The caller behind a session cookie, if the session is live; refreshes its idle timer.
    pub async fn authenticate_session(
        &self,
        token: &str,
        source_ip: Option<String>,
    ) -> Result<Option<Caller>, DomainError> {
        let now = self.clock.now();
        let Some(session) = self.credentials.session(&hash_secret(token)).await? else {
            return Ok(None);
        };
        let idle_deadline = session.last_seen_at + to_chrono(self.policy.sessions.idle);
        if session.expires_at <= now || idle_deadline <= now {
            return Ok(None);
        }
        let Some(user) = self.members.user(session.user_id).await? else {
            return Ok(None);
        };
        // Writing on every request would make reads write, so the idle timer moves in steps:
        // a minute, or a quarter of the idle time-out when that is shorter, so an active
        // session never runs out however short the time-out is.
        let step = chrono::Duration::minutes(1).min(to_chrono(self.policy.sessions.idle) / 4);
        if now - session.last_seen_at >= step {
            self.credentials.touch_session(session.id, now).await?;
        }
        Ok(Some(Caller {
            organization_id: user.organization_id,
            actor: Actor::User {
                id: user.id,
                name: user.display_name,
            },
            role: user.role,
            source_ip,
            session_id: Some(session.id),
        }))
    }

    /// Ends the browser session; for a single sign-on member, also returns where to end the
    /// session at the identity provider (when it supports that), coming back to `return_to`.
    pub async fn sign_out(
        &self,
        caller: &Caller,
        return_to: &str,
    ) -> Result<Option<String>, DomainError> {
        let Some(session_id) = caller.session_id else {
            return Ok(None);
        };
        let audit = AuditDraft::by(
            caller,
            self.clock.now(),
            "session.sign_out",
            format!("session/{session_id}"),
        );
        self.credentials.delete_session(session_id, audit).await?;
        let Actor::User { id, .. } = &caller.actor else {
            return Ok(None);
        };
        let sso_member = self
            .members
            .user(*id)
            .await?
            .is_some_and(|u| u.identity.is_some());
        match (&self.sso, sso_member) {
            (Some(provider), true) => Ok(provider.end_session_url(return_to).await.unwrap_or_else(|err| {
                tracing::warn!(error = %err, "could not end the session at the identity provider");
                None
            })),
            _ => Ok(None),
        }
    }
}

/// The rate-limit bucket of an address: itself for IPv4, its /64 for IPv6 (one subscriber
/// holds a whole /64, so single addresses would give one attacker endless buckets).
fn bucket_of(address: &str) -> String {
    match address.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        _ => address.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::bucket_of;

    #[test]
    fn ipv6_addresses_of_one_64_share_a_bucket() {
        assert_eq!(
            bucket_of("2001:db8:1:2::1"),
            bucket_of("2001:db8:1:2:ffff::9")
        );
        assert_ne!(bucket_of("2001:db8:1:2::1"), bucket_of("2001:db8:1:3::1"));
        assert_eq!(bucket_of("192.0.2.7"), "192.0.2.7");
    }
}
