//! What the API and the pages both use, so that `api/` and `pages/` are leaves that never
//! borrow from each other: query strings (the filters' parsers, paging, links), the error
//! page, object streaming and the id of the request being answered. Nothing here imports
//! `api/`, `pages/`, `errors.rs` or the middleware.

pub mod error_page;
pub mod query;
pub mod request_id;
pub mod stream;
