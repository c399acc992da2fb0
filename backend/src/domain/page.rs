//! Keyset pagination: ids are UUIDv7 (time-ordered), so "the items after id X" is a stable
//! cursor on both databases. A token is the cursor's id in 32 hex digits; clients pass it
//! back as given (the API's document publishes its form so tools can generate one).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use uuid::Uuid;

use crate::domain::error::DomainError;

pub const DEFAULT_PAGE_SIZE: u64 = 20;
pub const MAX_PAGE_SIZE: u64 = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRequest {
    pub size: u64,
    pub after: Option<Uuid>,
}

pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

impl PageRequest {
    /// Parses the `page_size` and `page_token` query parameters as clients sent them.
    pub fn parse(size: Option<&str>, token: Option<&str>) -> Result<Self, DomainError> {
        let size = match size.filter(|s| !s.is_empty()) {
            None => DEFAULT_PAGE_SIZE,
            Some(text) => text.parse().map_err(|_| {
                DomainError::invalid(
                    "page_size",
                    format!("must be a whole number from 1 to {MAX_PAGE_SIZE}"),
                )
            })?,
        };
        if !(1..=MAX_PAGE_SIZE).contains(&size) {
            return Err(DomainError::invalid(
                "page_size",
                format!("must be between 1 and {MAX_PAGE_SIZE}"),
            ));
        }
        let after = match token.filter(|t| !t.is_empty()) {
            None => None,
            Some(token) => Some(decode(token).ok_or_else(|| {
                DomainError::invalid(
                    "page_token",
                    "is not a page token: pass back a next_page_token as it was given",
                )
            })?),
        };
        Ok(Self { size, after })
    }

    /// Asks the store for one item more than the page holds, to know if another page exists.
    pub fn fetch_limit(&self) -> u64 {
        self.size + 1
    }

    pub fn finish<T>(&self, mut items: Vec<T>, id_of: impl Fn(&T) -> Uuid) -> Page<T> {
        let has_more = items.len() as u64 > self.size;
        items.truncate(self.size as usize);
        let next = if has_more {
            items.last().map(|last| encode(id_of(last)))
        } else {
            None
        };
        Page { items, next }
    }
}

/// A token is the cursor's id as 32 lower-case hex digits (`PAGE_TOKEN_PATTERN`). Any such
/// token is a valid cursor: the next page is what comes after that id in the list's order,
/// within the caller's organization (for the audit log, an id that names none of its events
/// ends the listing), so a made-up one reveals nothing and costs one page.
fn encode(id: Uuid) -> String {
    id.simple().to_string()
}

pub const PAGE_TOKEN_PATTERN: &str = "^[0-9a-f]{32}$";

fn decode(token: &str) -> Option<Uuid> {
    if token.len() == 32
        && token
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Uuid::try_parse(token).ok();
    }
    // Tokens handed out before 1.1.0 (base64url of `after:<id>`), for a list being paged
    // through during an upgrade.
    let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    Uuid::parse_str(text.strip_prefix("after:")?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_round_trips_and_a_forged_one_is_refused() {
        let id = Uuid::now_v7();
        let page = PageRequest::parse(Some("2"), Some(&encode(id))).ok();
        assert_eq!(page.and_then(|p| p.after), Some(id));
        assert!(PageRequest::parse(None, Some("not-a-token")).is_err());
        assert!(PageRequest::parse(None, Some(&"A".repeat(32))).is_err());
        let legacy = URL_SAFE_NO_PAD.encode(format!("after:{id}"));
        assert_eq!(
            PageRequest::parse(None, Some(&legacy)).unwrap().after,
            Some(id)
        );
        assert!(PageRequest::parse(Some("0"), None).is_err());
        assert!(PageRequest::parse(Some("101"), None).is_err());
        assert!(PageRequest::parse(Some("ten"), None).is_err());
    }

    #[test]
    fn the_next_token_exists_only_when_more_items_were_found() {
        let request = PageRequest {
            size: 2,
            after: None,
        };
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        let page = request.finish(ids.clone(), |id| *id);
        assert_eq!(page.items.len(), 2);
        assert_eq!(page.next.as_deref().and_then(decode), Some(ids[1]));
        let last = request.finish(ids[..2].to_vec(), |id| *id);
        assert!(last.next.is_none());
    }
}
