//! The bounds on what the server accepts from the office API and from phones enrolling, in one
//! place. Each check answers with a stable code (the HTTP layer sends it as a 400 problem) and is
//! run before anything is written, so a refused request stores nothing.
//!
//! | what | bound | code |
//! |---|---|---|
//! | a visit's planned start and end | from [`EARLIEST_VISIT`] (2000-01-01) to [`LATEST_VISIT`] (2100-01-01), UTC | `out_of_range` |
//! | a visit's length | end after start, at most [`MAX_VISIT_MINUTES`] (24 h) | `out_of_range` |
//! | tasks on one visit | at most [`MAX_TASKS_PER_VISIT`], each 1 to [`MAX_TASK_CHARS`] characters | `too_many`, `too_long` |
//! | carers on one visit | one, or two different carers (a double-up) | `invalid` |
//! | a name (person, team, client, contract, commissioner) | 1 to [`MAX_NAME_CHARS`] characters | `too_long` / `invalid` |
//! | door tags on one client | at most [`MAX_TAGS_PER_CLIENT`], each 1 to [`MAX_TAG_CHARS`], no commas | `too_many`, `too_long` |
//! | a device's name at enrolment | at most [`MAX_DEVICE_NAME_CHARS`] (blank means "phone") | `too_long` |
//! | any of those texts | no control characters (NUL, tab, line breaks...) and no bidirectional embedding, override or isolate characters (U+202A–U+202E, U+2066–U+2069), which can make a name display as something else | `invalid_characters` |
//! | a supervisor's team | must exist | `unknown_team` |
//!
//! Lengths count characters (Unicode scalar values), not bytes, so a name in any script gets the
//! same room. The request body limit (8 MiB; 16 KiB for enrolment) bounds everything else.

use crate::store::Team;
use caresync_core::domain::{Millis, TeamId};
use caresync_core::visit_document::Schedule;

/// Earliest planned start or end: 2000-01-01T00:00:00Z. Older records are not visits to plan.
pub const EARLIEST_VISIT: Millis = 946_684_800_000;
/// Latest planned start or end: 2100-01-01T00:00:00Z.
pub const LATEST_VISIT: Millis = 4_102_444_800_000;
/// The longest visit: a day (a waking night or a 24-hour live-in shift fits; a 1,000-year one
/// does not).
pub const MAX_VISIT_MINUTES: i64 = 24 * 60;
pub const MAX_TASKS_PER_VISIT: usize = 50;
pub const MAX_TASK_CHARS: usize = 200;
pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_TAGS_PER_CLIENT: usize = 50;
pub const MAX_TAG_CHARS: usize = 100;
pub const MAX_DEVICE_NAME_CHARS: usize = 100;

/// A value refused: a stable `code` and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Invalid {
    pub code: &'static str,
    pub message: String,
}

fn invalid(code: &'static str, message: impl Into<String>) -> Invalid {
    Invalid {
        code,
        message: message.into(),
    }
}

/// Characters that change how the text around them is displayed or parsed: bidirectional
/// embeddings and overrides (U+202A–U+202E) and isolates (U+2066–U+2069). Left-to-right and
/// right-to-left marks (U+200E, U+200F) are allowed: names in Arabic or Hebrew need them.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// No control characters (NUL, tab, CR, LF and the rest of Unicode's Cc) and no bidi controls.
pub fn plain_text(what: &str, text: &str) -> Result<(), Invalid> {
    if let Some(c) = text.chars().find(|c| c.is_control() || is_bidi_control(*c)) {
        return Err(invalid(
            "invalid_characters",
            format!(
                "{what} contains U+{:04X}: control and bidirectional-override characters are not allowed",
                c as u32
            ),
        ));
    }
    Ok(())
}

/// Plain text of 1 to `max` characters once trimmed.
fn bounded_text(what: &str, text: &str, max: usize) -> Result<(), Invalid> {
    plain_text(what, text)?;
    let chars = text.trim().chars().count();
    if chars == 0 {
        return Err(invalid("invalid", format!("{what} is empty")));
    }
    if chars > max {
        return Err(invalid(
            "too_long",
            format!("{what} has {chars} characters; at most {max}"),
        ));
    }
    Ok(())
}

/// A person's, team's, client's or contract's name, or a commissioner's.
pub fn name(what: &str, text: &str) -> Result<(), Invalid> {
    bounded_text(what, text, MAX_NAME_CHARS)
}

/// A device's name at enrolment: blank is allowed (the server calls it "phone").
pub fn validate_device_name(device_name: &str) -> Result<(), Invalid> {
    if device_name.trim().is_empty() {
        return Ok(());
    }
    bounded_text("the device name", device_name, MAX_DEVICE_NAME_CHARS)
}

/// A visit's planned start and end.
pub fn visit_times(start: Millis, end: Millis) -> Result<(), Invalid> {
    for (what, t) in [("planned start", start), ("planned end", end)] {
        if !(EARLIEST_VISIT..=LATEST_VISIT).contains(&t) {
            return Err(invalid(
                "out_of_range",
                format!("the {what} must be between 2000-01-01 and 2100-01-01"),
            ));
        }
    }
    if end <= start {
        return Err(invalid(
            "out_of_range",
            "the planned end must be after the planned start",
        ));
    }
    if end - start > MAX_VISIT_MINUTES * 60_000 {
        return Err(invalid(
            "out_of_range",
            format!("a visit lasts at most {MAX_VISIT_MINUTES} minutes"),
        ));
    }
    Ok(())
}

/// A visit's task titles.
pub fn tasks<S: AsRef<str>>(titles: &[S]) -> Result<(), Invalid> {
    if titles.len() > MAX_TASKS_PER_VISIT {
        return Err(invalid(
            "too_many",
            format!(
                "{} tasks; a visit has at most {MAX_TASKS_PER_VISIT}",
                titles.len()
            ),
        ));
    }
    for title in titles {
        bounded_text("a task title", title.as_ref(), MAX_TASK_CHARS)?;
    }
    Ok(())
}

/// A visit's carers: one, or two different ones for a double-up.
pub fn carers<T: PartialEq>(carers: &[T]) -> Result<(), Invalid> {
    if carers.is_empty() || carers.len() > 2 || (carers.len() == 2 && carers[0] == carers[1]) {
        return Err(invalid(
            "invalid",
            "a visit has one carer, or two different carers for a double-up",
        ));
    }
    Ok(())
}

/// A new visit's times, carers and task titles, before its schedule is built.
pub fn new_visit<T: PartialEq, S: AsRef<str>>(
    start: Millis,
    end: Millis,
    carer_ids: &[T],
    titles: &[S],
) -> Result<(), Invalid> {
    visit_times(start, end)?;
    carers(carer_ids)?;
    tasks(titles)
}

/// A whole schedule as the office writes it.
pub fn schedule(s: &Schedule) -> Result<(), Invalid> {
    let titles: Vec<&str> = s.tasks.iter().map(|t| t.title.as_str()).collect();
    new_visit(s.planned_start, s.planned_end, &s.carers, &titles)
}

/// The parts of a schedule an edit changed (times, carers, tasks), each held to its bounds.
pub fn schedule_change(before: &Schedule, after: &Schedule) -> Result<(), Invalid> {
    if (before.planned_start, before.planned_end) != (after.planned_start, after.planned_end) {
        visit_times(after.planned_start, after.planned_end)?;
    }
    if before.carers != after.carers {
        carers(&after.carers)?;
    }
    if before.tasks != after.tasks {
        let titles: Vec<&str> = after.tasks.iter().map(|t| t.title.as_str()).collect();
        tasks(&titles)?;
    }
    Ok(())
}

/// A person's team, when they have one, is one the office created.
pub fn known_team(team: Option<TeamId>, teams: &[Team]) -> Result<(), Invalid> {
    match team {
        Some(id) if !teams.iter().any(|t| t.id == id) => {
            Err(invalid("unknown_team", format!("no team {id}")))
        }
        _ => Ok(()),
    }
}

/// A client's door tags (NFC or QR ids).
pub fn tags<S: AsRef<str>>(tags: &[S]) -> Result<(), Invalid> {
    if tags.len() > MAX_TAGS_PER_CLIENT {
        return Err(invalid(
            "too_many",
            format!("{} tags; a client has at most {MAX_TAGS_PER_CLIENT}", tags.len()),
        ));
    }
    for tag in tags {
        let tag = tag.as_ref();
        bounded_text("a tag id", tag, MAX_TAG_CHARS)?;
        if tag.contains(',') {
            return Err(invalid("invalid_characters", "tag ids have no commas"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_bound_is_inclusive_and_one_past_it_is_refused() {
        let code = |r: Result<(), Invalid>| r.err().map(|e| e.code);
        assert_eq!(code(name("a name", &"x".repeat(MAX_NAME_CHARS))), None);
        assert_eq!(
            code(name("a name", &"x".repeat(MAX_NAME_CHARS + 1))),
            Some("too_long")
        );
        // Characters, not bytes.
        assert_eq!(code(name("a name", &"é".repeat(MAX_NAME_CHARS))), None);
        assert_eq!(code(name("a name", "  ")), Some("invalid"));
        assert_eq!(code(name("a name", "Ann\0")), Some("invalid_characters"));
        assert_eq!(code(name("a name", "Ann\u{202E}nna")), Some("invalid_characters"));
        assert_eq!(code(name("a name", "Ann\u{2067}x")), Some("invalid_characters"));
        assert_eq!(code(name("a name", "\u{5D0}\u{200F}Ann")), None);
        assert_eq!(code(validate_device_name("")), None);
        assert_eq!(
            code(validate_device_name(&"p".repeat(MAX_DEVICE_NAME_CHARS))),
            None
        );
        assert_eq!(
            code(validate_device_name(&"p".repeat(MAX_DEVICE_NAME_CHARS + 1))),
            Some("too_long")
        );

        let day = MAX_VISIT_MINUTES * 60_000;
        assert_eq!(code(visit_times(EARLIEST_VISIT, EARLIEST_VISIT + day)), None);
        assert_eq!(
            code(visit_times(EARLIEST_VISIT - 1, EARLIEST_VISIT + 1)),
            Some("out_of_range")
        );
        assert_eq!(
            code(visit_times(LATEST_VISIT - 1, LATEST_VISIT + 1)),
            Some("out_of_range")
        );
        assert_eq!(
            code(visit_times(EARLIEST_VISIT, EARLIEST_VISIT + day + 1)),
            Some("out_of_range")
        );
        assert_eq!(
            code(visit_times(EARLIEST_VISIT, EARLIEST_VISIT)),
            Some("out_of_range")
        );

        let fifty = vec!["Breakfast"; MAX_TASKS_PER_VISIT];
        assert_eq!(code(tasks(&fifty)), None);
        assert_eq!(
            code(tasks(&vec!["Breakfast"; MAX_TASKS_PER_VISIT + 1])),
            Some("too_many")
        );
        assert_eq!(code(tasks(&["x".repeat(MAX_TASK_CHARS + 1)])), Some("too_long"));
        assert_eq!(code(tags(&vec!["t"; MAX_TAGS_PER_CLIENT])), None);
        assert_eq!(code(tags(&vec!["t"; MAX_TAGS_PER_CLIENT + 1])), Some("too_many"));
        assert_eq!(code(tags(&["a,b"])), Some("invalid_characters"));
        assert_eq!(code(carers(&[1, 1])), Some("invalid"));
        assert_eq!(code(carers::<u8>(&[])), Some("invalid"));
        assert_eq!(code(carers(&[1, 2])), None);
    }
}
