//! Key Status: every key of the organization, counts per status, what each key protects
//! (owners and auditors).

use actix_web::{HttpResponse, web};
use askama::Template;

use crate::domain::keys::EncryptionKey;
use crate::domain::keys::status_report::{KeyStatusEntry, ProtectedCluster};
use crate::http::AppState;
use crate::http::auth::PageCaller;
use crate::http::errors::PageError;
use crate::http::pages::render::{Chrome, FormErrors, html, when};
use crate::http::shared::query::KeyStatusQuery;
use crate::http::shared::query::query_string;

pub struct ClusterLine {
    pub id: String,
    pub name: String,
    pub state: &'static str,
    pub region: String,
    pub effect: &'static str,
    pub effect_title: &'static str,
}

impl From<ProtectedCluster> for ClusterLine {
    fn from(c: ProtectedCluster) -> Self {
        Self {
            id: c.id.to_string(),
            name: c.name,
            state: c.state.as_str(),
            region: c.region,
            effect: c.effect.as_str(),
            effect_title: c.effect.title(),
        }
    }
}

pub struct KeyLine {
    pub id: String,
    pub project_id: String,
    pub project_name: String,
    pub provider: &'static str,
    pub region: String,
    pub reference: String,
    pub status: &'static str,
    pub last_checked: String,
    pub last_error: String,
    pub rotation: &'static str,
    pub clusters: Vec<ClusterLine>,
    /// "version V disabled", one per version in use recorded revoked.
    pub revoked_versions: Vec<String>,
    /// A change running or failed: ("rewrapping" or "failed", "3 of 10 data keys moved").
    pub change: Option<(&'static str, String)>,
    /// Replaced by another key (it stays until nothing it wrapped remains).
    pub replaced: bool,
}

pub fn rotation_text(key: &EncryptionKey) -> &'static str {
    match key.rotation_enabled {
        Some(true) => "on",
        Some(false) => "off",
        None => "not reported",
    }
}

impl From<KeyStatusEntry> for KeyLine {
    fn from(e: KeyStatusEntry) -> Self {
        Self {
            id: e.key.id.to_string(),
            project_id: e.key.project_id.to_string(),
            project_name: e.project_name,
            provider: e.key.key_ref.provider().title(),
            region: e.key.region.as_str().to_owned(),
            reference: e.key.key_ref.display(),
            status: e.key.status.as_str(),
            last_checked: e
                .key
                .last_checked_at
                .map(when)
                .unwrap_or_else(|| "never".into()),
            last_error: e.key.last_error.clone().unwrap_or_default(),
            rotation: rotation_text(&e.key),
            replaced: e.key.replaced_by.is_some(),
            change: e
                .change
                .filter(|c| c.state != crate::domain::keys::rewrap::RewrapState::Done)
                .map(|c| {
                    (
                        c.state.as_str(),
                        format!("{} of {} data keys moved", c.done, c.total),
                    )
                }),
            clusters: e.clusters.into_iter().map(ClusterLine::from).collect(),
            revoked_versions: e
                .revoked_versions
                .into_iter()
                .map(|(version, status)| format!("version {version} {}", status.as_str()))
                .collect(),
        }
    }
}

#[derive(Template)]
#[template(path = "key_status.html")]
struct KeyStatusPage {
    chrome: Chrome,
    counts: Vec<(&'static str, usize)>,
    keys: Vec<KeyLine>,
    status: String,
    errors: FormErrors,
    next_page_token: Option<String>,
    /// Whether this is a later page (keyset pages go forward; the way back is the first).
    later_page: bool,
    filter_query: String,
    /// The filters and the page size: what the pager links keep.
    pager_query: String,
    /// The filters but the status: what each count link keeps.
    count_query: String,
}

pub async fn page(
    state: web::Data<AppState>,
    caller: PageCaller,
    query: web::Query<KeyStatusQuery>,
) -> Result<HttpResponse, PageError> {
    caller.0.require_auditor_view("see the Key Status page")?;
    let chrome = Chrome::load(&state.console, &caller.0, "key-status").await?;
    let (counts, keys, next, errors) = match query.filter() {
        Ok(filter) => {
            let report = state
                .console
                .keys()
                .key_status_report(&caller.0, &filter, query.page()?)
                .await?;
            (
                report
                    .counts
                    .iter()
                    .map(|(s, n)| (s.as_str(), *n))
                    .collect(),
                report.page.items.into_iter().map(KeyLine::from).collect(),
                report.page.next,
                FormErrors::default(),
            )
        }
        Err(err) => (Vec::new(), Vec::new(), None, FormErrors::from_domain(err)?),
    };
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    html(&KeyStatusPage {
        chrome,
        counts,
        keys,
        status: text(&query.status),
        errors,
        next_page_token: next,
        later_page: query.page_token.as_deref().is_some_and(|t| !t.is_empty()),
        pager_query: query_string(&[
            ("status", &query.status),
            ("provider", &query.provider),
            ("project_id", &query.project_id),
            ("page_size", &query.page_size),
        ]),
        count_query: query_string(&[
            ("provider", &query.provider),
            ("project_id", &query.project_id),
        ]),
        filter_query: query_string(&[
            ("status", &query.status),
            ("provider", &query.provider),
            ("project_id", &query.project_id),
        ]),
    })
}
