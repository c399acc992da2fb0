//! A key's status over time as a small SVG drawn on the server (no script, no library): one
//! band per period between status changes, coloured by status, with the times at both ends.

use chrono::{DateTime, Utc};

use crate::domain::keys::{KeyStatus, StatusChange};

const WIDTH: f64 = 720.0;
const BAND_TOP: f64 = 8.0;
const BAND_HEIGHT: f64 = 28.0;

fn colour(status: KeyStatus) -> &'static str {
    match status {
        KeyStatus::Active => "#2e7d32",
        KeyStatus::Unreachable => "#f9a825",
        KeyStatus::AccessDenied => "#c62828",
        KeyStatus::Disabled => "#6a1b9a",
        KeyStatus::PendingDeletion => "#ad1457",
        KeyStatus::NotFound => "#424242",
    }
}

/// `changes` newest first, as the history gives them; `since` is when the key was created.
/// With `complete` false (the history had more pages than were read), the window starts at
/// the oldest change read: before it, the status is not known here.
pub fn svg(
    since: DateTime<Utc>,
    now: DateTime<Utc>,
    current: KeyStatus,
    changes: &[StatusChange],
    complete: bool,
) -> String {
    let mut oldest_first: Vec<&StatusChange> = changes.iter().collect();
    oldest_first.reverse();
    let start = match oldest_first.first() {
        Some(oldest) if !complete => oldest.at,
        _ => since,
    }
    .min(now);
    let span = (now - start).num_milliseconds().max(1) as f64;
    let x = |t: DateTime<Utc>| ((t - start).num_milliseconds().max(0) as f64 / span) * WIDTH;
    let mut periods = Vec::new();
    let mut status = oldest_first.first().map_or(current, |c| c.from);
    let mut from = start;
    for change in &oldest_first {
        // A partial history starts at its oldest change: what came before is not known.
        if complete || change.at > from {
            periods.push((from, change.at, status));
        }
        status = change.to;
        from = change.at;
    }
    periods.push((from, now, status));
    let mut out = format!(
        "<svg class=\"timeline\" role=\"img\" viewBox=\"0 0 {WIDTH} 60\" width=\"100%\" \
         preserveAspectRatio=\"none\" xmlns=\"http://www.w3.org/2000/svg\" \
         aria-label=\"Status over time: {} change(s), now {}\">",
        changes.len(),
        current.as_str()
    );
    for (from, to, status) in periods {
        let left = x(from);
        let width = (x(to) - left).max(1.0);
        out.push_str(&format!(
            "<rect x=\"{left:.1}\" y=\"{BAND_TOP}\" width=\"{width:.1}\" height=\"{BAND_HEIGHT}\" \
             fill=\"{}\" data-status=\"{}\"><title>{} from {} to {}</title></rect>",
            colour(status),
            status.as_str(),
            status.as_str(),
            from.format("%Y-%m-%d %H:%M:%S UTC"),
            to.format("%Y-%m-%d %H:%M:%S UTC"),
        ));
    }
    out.push_str(&format!(
        "<text x=\"0\" y=\"54\" font-size=\"11\">{}</text>\
         <text x=\"{WIDTH}\" y=\"54\" font-size=\"11\" text-anchor=\"end\">now</text></svg>",
        start.format("%Y-%m-%d %H:%M UTC")
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use uuid::Uuid;

    #[test]
    fn one_band_per_period_coloured_by_status() {
        let start = Utc::now() - Duration::hours(4);
        let change = |hours: i64, from, to| StatusChange {
            id: Uuid::now_v7(),
            at: start + Duration::hours(hours),
            from,
            to,
            message: None,
        };
        let changes = vec![
            change(3, KeyStatus::AccessDenied, KeyStatus::Active),
            change(1, KeyStatus::Active, KeyStatus::AccessDenied),
        ];
        let drawn = svg(
            start,
            start + Duration::hours(4),
            KeyStatus::Active,
            &changes,
            true,
        );
        assert_eq!(drawn.matches("<rect").count(), 3);
        let statuses: Vec<&str> = drawn
            .split("data-status=\"")
            .skip(1)
            .map(|s| s.split('"').next().unwrap_or_default())
            .collect();
        assert_eq!(statuses, ["active", "access_denied", "active"]);
        // The denied period is the second quarter of the window: 2 of 4 hours wide.
        assert!(drawn.contains("x=\"180.0\""), "{drawn}");
        assert!(drawn.contains("width=\"360.0\""), "{drawn}");
    }

    #[test]
    fn a_partial_history_starts_at_its_oldest_change() {
        let start = Utc::now() - Duration::hours(10);
        let changes = vec![StatusChange {
            id: Uuid::now_v7(),
            at: start + Duration::hours(8),
            from: KeyStatus::AccessDenied,
            to: KeyStatus::Active,
            message: None,
        }];
        let drawn = svg(
            start,
            start + Duration::hours(10),
            KeyStatus::Active,
            &changes,
            false,
        );
        // Only the last two hours are known: one band, active, over the whole width.
        assert_eq!(drawn.matches("<rect").count(), 1, "{drawn}");
        assert!(
            drawn.contains("x=\"0.0\" y=\"8\" width=\"720.0\""),
            "{drawn}"
        );
        assert!(drawn.contains("data-status=\"active\""));
    }

    #[test]
    fn a_key_that_never_changed_is_one_band() {
        let start = Utc::now() - Duration::hours(1);
        let drawn = svg(start, Utc::now(), KeyStatus::Active, &[], true);
        assert_eq!(drawn.matches("<rect").count(), 1);
    }
}
