//! The HTML page of an error, for pages and for what the middleware refuses before a handler
//! runs. Its text comes from the problem's title and detail; never internal error text.

use askama::Template;

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    title: &'a str,
    detail: &'a str,
    /// Shown on server errors, for the user to quote when reporting them.
    request_id: Option<String>,
}

pub fn error_page(status: u16, title: &str, detail: &str) -> String {
    ErrorPage {
        request_id: (status >= 500)
            .then(super::request_id::current_request_id)
            .flatten(),
        status,
        title,
        detail,
    }
    .render()
    .unwrap_or_else(|_| format!("{status} {title}"))
}
