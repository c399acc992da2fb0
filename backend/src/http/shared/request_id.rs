//! The id of the request being answered, set by the middleware around each request and read
//! by whatever answers it (an error page shows it on a server error, for the user to quote).

tokio::task_local! {
    /// The id of the request being answered.
    pub static CURRENT_REQUEST: String;
}

/// The id of the request being answered, if called while answering one.
pub fn current_request_id() -> Option<String> {
    CURRENT_REQUEST.try_with(Clone::clone).ok()
}
