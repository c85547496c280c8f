//! Properties of what the edge parses from requests: phone numbers and JIDs, page
//! parameters and dates. Arbitrary input is answered with an error, never a panic.

use axum::http::StatusCode;
use chrono::{DateTime, FixedOffset, NaiveDate, SecondsFormat, TimeZone, Utc};
use proptest::prelude::*;
use wagate_actors::domain::normalize_phone;

use super::extract::chat_address;
use super::{DateRangePage, MAX_PAGE_LIMIT, PageParams, Pagination, page_limit, parse_date_param};

/// Arbitrary text, and text shaped like what the parameter expects.
fn text_like(shaped: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), shaped]
}

/// Strings matching a pattern of the OpenAPI document (`^…$`, whole strings).
fn documented(pattern: &str) -> impl Strategy<Value = String> {
    let inner = pattern
        .strip_prefix('^')
        .and_then(|p| p.strip_suffix('$'))
        .expect("an anchored pattern");
    proptest::string::string_regex(inner).expect("a pattern proptest can generate from")
}

/// Instants from year 1 to 9999 at millisecond precision.
fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    (-62_135_596_800_000i64..253_402_300_799_000)
        .prop_map(|ms| Utc.timestamp_millis_opt(ms).single().expect("in range"))
}

/// The address a client's text names, as the API stores it.
fn target_jid(field: &str, value: &str) -> Result<String, super::error::ApiError> {
    chat_address(field, value).map(|jid| jid.into_string())
}

proptest! {
    #[test]
    fn chat_targets_never_panic_and_are_jids(
        input in text_like("[+]?[0-9 ().-]{0,20}(@(s\\.whatsapp\\.net|c\\.us|g\\.us|x))?")
    ) {
        match target_jid("phone", &input) {
            Ok(jid) => {
                prop_assert!(
                    jid.ends_with("@s.whatsapp.net") || jid.ends_with("@g.us"),
                    "{jid}"
                );
                // A JID the API produced is taken back as itself.
                prop_assert_eq!(target_jid("phone", &jid).ok(), Some(jid.clone()));
            }
            Err(e) => {
                prop_assert_eq!(e.status, StatusCode::BAD_REQUEST);
                prop_assert!(e.message.starts_with("phone"), "{}", e.message);
            }
        }
    }

    /// Whatever the document's chat address pattern allows, the server takes: a client
    /// generated from the document never sends an address it will refuse.
    #[test]
    fn the_documented_chat_address_pattern_is_accepted(input in documented(super::openapi::CHAT_ADDRESS_PATTERN)) {
        prop_assert!(target_jid("phone", &input).is_ok(), "{input:?}");
    }

    #[test]
    fn the_documented_phone_pattern_is_accepted(input in documented(super::openapi::PHONE_PATTERN)) {
        prop_assert!(normalize_phone(&input).is_ok(), "{input:?}");
    }

    #[test]
    fn a_phone_number_targets_its_normalised_jid(input in "[+]?[0-9 ().-]{0,20}") {
        let jid = target_jid("phone", &input).ok();
        let expected = normalize_phone(&input).ok().map(|d| format!("{d}@s.whatsapp.net"));
        prop_assert_eq!(jid, expected);
    }

    #[test]
    fn user_jids_on_either_server_name_the_same_chat(number in "[0-9]{7,15}") {
        let jid = format!("{number}@s.whatsapp.net");
        prop_assert_eq!(target_jid("to", &format!("{number}@c.us")).ok(), Some(jid.clone()));
        prop_assert_eq!(target_jid("to", &format!(" {jid} ")).ok(), Some(jid));
    }

    #[test]
    fn limits_outside_1_to_max_are_refused(limit in any::<Option<u32>>(), default in 1..=MAX_PAGE_LIMIT) {
        match page_limit(limit, default) {
            Ok(l) => {
                prop_assert!((1..=MAX_PAGE_LIMIT).contains(&l));
                prop_assert_eq!(l, limit.unwrap_or(default));
            }
            Err(e) => {
                prop_assert_eq!(e.status, StatusCode::BAD_REQUEST);
                prop_assert!(limit.is_some_and(|l| l == 0 || l > MAX_PAGE_LIMIT));
            }
        }
        let params = PageParams { limit, skip: None };
        if let Ok((l, skip)) = params.resolve(default) {
            prop_assert_eq!((l, skip), (limit.unwrap_or(default), 0));
        }
    }

    #[test]
    fn pagination_never_overflows(total in any::<u64>(), limit in any::<u32>(), skip in any::<u64>()) {
        let p = Pagination::new(total, limit, skip);
        let end = u128::from(skip) + u128::from(limit);
        // Saturating: an end beyond u64::MAX is past every total.
        prop_assert_eq!(p.has_more, end < u128::from(total));
    }

    #[test]
    fn dates_never_panic_and_name_the_parameter(
        input in text_like("[0-9]{1,5}-[0-9]{1,2}-[0-9]{1,2}(T[0-9]{1,2}:[0-9]{2}(:[0-9]{2}(\\.[0-9]{1,9})?)?)?(Z|[+-][0-9]{2}:[0-9]{2})?")
    ) {
        if let Err(e) = parse_date_param("startDate", &input) {
            prop_assert_eq!(e.status, StatusCode::BAD_REQUEST);
            prop_assert!(e.message.starts_with("startDate"), "{}", e.message);
        }
    }

    #[test]
    fn rfc3339_instants_round_trip_in_any_offset(t in instant(), offset_min in -14 * 60..=14 * 60i32) {
        let zone = FixedOffset::east_opt(offset_min * 60).expect("offset");
        let written = t.with_timezone(&zone).to_rfc3339_opts(SecondsFormat::Millis, false);
        prop_assert_eq!(parse_date_param("since", &written).ok(), Some(t));
        let zulu = t.to_rfc3339_opts(SecondsFormat::Millis, true);
        prop_assert_eq!(parse_date_param("since", &zulu).ok(), Some(t));
        // Without a zone a date-time is read as UTC.
        let naive = t.format("%Y-%m-%dT%H:%M:%S%.3f").to_string();
        prop_assert_eq!(parse_date_param("since", &naive).ok(), Some(t));
    }

    #[test]
    fn a_date_is_its_midnight_utc(days in 0i32..3_652_000) {
        let day = NaiveDate::from_num_days_from_ce_opt(days + 1).expect("date");
        let parsed = parse_date_param("endDate", &day.format("%Y-%m-%d").to_string());
        prop_assert_eq!(parsed.ok(), day.and_hms_opt(0, 0, 0).map(|t| t.and_utc()));
    }

    #[test]
    fn date_ranges_are_ordered_or_refused(
        limit in any::<Option<u32>>(),
        skip in any::<Option<u64>>(),
        start in prop::option::of(text_like("2024-0[1-9]-[12][0-9]")),
        end in prop::option::of(text_like("2024-0[1-9]-[12][0-9]")),
    ) {
        match DateRangePage::parse(limit, skip, start.as_deref(), end.as_deref(), 50) {
            Ok(page) => {
                if let (Some(s), Some(e)) = (page.start, page.end) {
                    prop_assert!(s <= e);
                }
                prop_assert_eq!(page.skip, skip.unwrap_or(0));
                prop_assert_eq!(page.start.is_some(), start.is_some());
                prop_assert_eq!(page.end.is_some(), end.is_some());
            }
            Err(e) => prop_assert_eq!(e.status, StatusCode::BAD_REQUEST),
        }
    }

    #[test]
    fn a_reversed_range_is_refused(a in instant(), b in instant()) {
        prop_assume!(a != b);
        let (early, late) = if a < b { (a, b) } else { (b, a) };
        let iso = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
        let reversed = DateRangePage::parse(None, None, Some(&iso(late)), Some(&iso(early)), 50);
        prop_assert!(reversed.is_err());
        let ordered = DateRangePage::parse(None, None, Some(&iso(early)), Some(&iso(late)), 50)
            .expect("ordered");
        prop_assert_eq!((ordered.start, ordered.end), (Some(early), Some(late)));
    }
}
