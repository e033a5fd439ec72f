//! ZITADEL Actions v2 event executions: the request body, its signature, and the mapping
//! of ZITADEL event types onto ours.
//!
//! ZITADEL calls a target with a JSON body describing one event from its event store and
//! signs it with the target's signing key:
//!
//! ```text
//! ZITADEL-Signature: t=1762077600,v1=<64 hex digits>
//! ```
//!
//! where `v1` is the hex HMAC-SHA256, keyed by the signing key, of `"<t>.<raw body>"`.
//! [`verify`] checks it (several `v1` entries may be present, for key rotation);
//! [`ActionsEvent::parse`] reads the body; [`TypeMap`] translates the type (an unmapped
//! type is ignored by the caller); [`ActionsEvent::to_event`] builds our event, with an id
//! derived from the ZITADEL event so that a redelivered webhook has the same id.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::Sha256;

use super::envelope::{Event, SPEC_VERSION};
use super::routing::{Pattern, PatternError};

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "ZITADEL-Signature";

/// How far the signature's timestamp may be from now, either way, by default.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

type HmacSha256 = Hmac<Sha256>;

/// Why a signature is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The request has no `ZITADEL-Signature` header.
    #[error("missing {SIGNATURE_HEADER} header")]
    Missing,
    /// The header is not `t=<unix seconds>,v1=<hex>[,v1=<hex>…]`.
    #[error("malformed {SIGNATURE_HEADER} header: {0}")]
    Malformed(String),
    /// The timestamp is further from now than the tolerance (a replay or a wrong clock).
    #[error(
        "{SIGNATURE_HEADER} timestamp is {} (tolerance {tolerance_secs}s)",
        describe_age(*age_secs)
    )]
    OutsideTolerance {
        /// Seconds between the timestamp and now; negative when it is in the future.
        age_secs: i64,
        /// The tolerance, in seconds.
        tolerance_secs: u64,
    },
    /// No `v1` value is the HMAC of this body under the signing key.
    #[error("no {SIGNATURE_HEADER} v1 signature matches the body and signing key")]
    NoMatch,
}

fn describe_age(age: i64) -> String {
    if age >= 0 {
        format!("{age}s old")
    } else {
        format!("{}s in the future", age.unsigned_abs())
    }
}

/// Checks a `ZITADEL-Signature` header value against the raw request body.
///
/// Passes when the timestamp is within `tolerance` of `now` (either way) and any `v1`
/// entry is the HMAC-SHA256 of `"<t>.<body>"` under `key` (compared in constant time).
/// Entries with other names (a future `v2`) are ignored. An empty key never verifies.
///
/// # Errors
/// [`SignatureError`]: missing or malformed header, timestamp outside the tolerance, or no
/// matching signature.
pub fn verify(
    header: Option<&str>,
    body: &[u8],
    key: &[u8],
    tolerance: Duration,
    now: SystemTime,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let malformed = |what: &str| SignatureError::Malformed(what.to_owned());
    if header.trim().is_empty() {
        return Err(malformed("empty value"));
    }
    let mut timestamp: Option<&str> = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let part = part.trim();
        let (name, value) = part
            .split_once('=')
            .ok_or_else(|| malformed("expected comma-separated name=value parts"))?;
        match name.trim() {
            "t" => {
                if timestamp.is_some() {
                    return Err(malformed("more than one `t`"));
                }
                timestamp = Some(value.trim());
            }
            "v1" => {
                let value = value.trim();
                let mut signature = [0u8; 32];
                hex::decode_to_slice(value, &mut signature)
                    .map_err(|_| malformed("`v1` must be 64 hex digits (an HMAC-SHA256)"))?;
                signatures.push(signature);
            }
            _ => {}
        }
    }
    let t_text = timestamp.ok_or_else(|| malformed("no `t=` timestamp"))?;
    let t: u64 = t_text
        .parse()
        .ok()
        .filter(|_| t_text.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| malformed("`t` must be unix seconds (digits only)"))?;
    if signatures.is_empty() {
        return Err(malformed("no `v1=` signature"));
    }
    let now_secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let age = i64::try_from(i128::from(now_secs) - i128::from(t)).unwrap_or(i64::MIN);
    if age.unsigned_abs() > tolerance.as_secs() {
        return Err(SignatureError::OutsideTolerance {
            age_secs: age,
            tolerance_secs: tolerance.as_secs(),
        });
    }
    if key.is_empty() {
        return Err(SignatureError::NoMatch);
    }
    let mac = signed_mac(key, t_text, body);
    if signatures
        .iter()
        .any(|s| mac.clone().verify_slice(s).is_ok())
    {
        Ok(())
    } else {
        Err(SignatureError::NoMatch)
    }
}

/// A `ZITADEL-Signature` header value for `body` at unix time `t`:
/// `t=<t>,v1=<hex HMAC-SHA256(key, "<t>.<body>")>`. Also signs outgoing webhooks.
pub fn sign(key: &[u8], t: u64, body: &[u8]) -> String {
    let t = t.to_string();
    let digest = signed_mac(key, &t, body).finalize().into_bytes();
    format!("t={t},v1={}", hex::encode(digest))
}

fn signed_mac(key: &[u8], t: &str, body: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The body of an Actions v2 event execution.
///
/// `aggregateID`, `instanceID`, `sequence` and `event_type` are required (together they
/// identify the event); ZITADEL omits empty fields, so the others default to empty.
/// Unknown fields are ignored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ActionsEvent {
    /// Id of the aggregate (user, org, project, …) the event belongs to.
    #[serde(rename = "aggregateID")]
    pub aggregate_id: String,
    /// Kind of aggregate: `user`, `org`, `project`, `session`, ….
    #[serde(rename = "aggregateType", default)]
    pub aggregate_type: String,
    /// Organisation that owns the aggregate.
    #[serde(rename = "resourceOwner", default)]
    pub resource_owner: String,
    /// ZITADEL instance.
    #[serde(rename = "instanceID")]
    pub instance_id: String,
    /// Aggregate version (`v1`, `v2`, …).
    #[serde(default)]
    pub version: String,
    /// Position of the event within its aggregate.
    pub sequence: u64,
    /// ZITADEL's event type, e.g. `user.human.added`.
    pub event_type: String,
    /// When the event was stored, RFC 3339.
    #[serde(default)]
    pub created_at: String,
    /// User who caused the event.
    #[serde(rename = "userID", default)]
    pub user_id: String,
    /// The event's own data, unparsed; absent or `null` for events without data.
    #[serde(default)]
    pub event_payload: Option<Box<RawValue>>,
}

/// A body that is not an Actions v2 event; the message names the field
/// (`body: sequence: invalid type: string "x", expected u64 at line 1 column 12`).
#[derive(Debug, Clone, thiserror::Error)]
#[error("body: {0}")]
pub struct ActionsEventError(String);

impl ActionsEvent {
    /// Parses a request body.
    ///
    /// # Errors
    /// [`ActionsEventError`] naming the field that does not fit.
    pub fn parse(body: &[u8]) -> Result<Self, ActionsEventError> {
        let mut de = serde_json::Deserializer::from_slice(body);
        let event: Self = serde_path_to_error::deserialize(&mut de)
            .map_err(|e| ActionsEventError(e.to_string()))?;
        de.end().map_err(|e| ActionsEventError(e.to_string()))?;
        Ok(event)
    }

    /// Our event for this ZITADEL event, of type `our_type` (from [`TypeMap::map`]) and
    /// with the given `source` (`events.zitadel.source`).
    ///
    /// `id` is `zitadel:{instanceID}:{aggregateID}:{sequence}`, the same for every
    /// delivery of the same ZITADEL event; `subject` is the aggregate id, `time` is
    /// `created_at`, `data` is `event_payload` as it came; the ZITADEL fields are kept as
    /// string extensions `zitadeltype`, `zitadelaggregatetype`, `zitadelaggregateid`,
    /// `zitadelresourceowner`, `zitadelinstanceid`, `zitadelsequence`, `zitadelversion` and
    /// `zitadeluserid` (empty ones are left out).
    pub fn to_event(&self, our_type: &str, source: &str) -> Event {
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let sequence = self.sequence.to_string();
        let extensions = [
            ("zitadeltype", self.event_type.as_str()),
            ("zitadelaggregatetype", &self.aggregate_type),
            ("zitadelaggregateid", &self.aggregate_id),
            ("zitadelresourceowner", &self.resource_owner),
            ("zitadelinstanceid", &self.instance_id),
            ("zitadelsequence", &sequence),
            ("zitadelversion", &self.version),
            ("zitadeluserid", &self.user_id),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.to_owned(), serde_json::Value::from(v)))
        .collect();
        Event {
            specversion: SPEC_VERSION.to_owned(),
            id: format!(
                "zitadel:{}:{}:{}",
                self.instance_id, self.aggregate_id, self.sequence
            ),
            source: source.to_owned(),
            ty: our_type.to_owned(),
            time: non_empty(&self.created_at),
            datacontenttype: None,
            dataschema: None,
            subject: non_empty(&self.aggregate_id),
            data: self.event_payload.clone(),
            priority: None,
            attempt: 0,
            extensions,
        }
    }
}

/// ZITADEL event type → our event type (`events.zitadel.typeMap`). Keys are exact types
/// or globs; an exact key wins over any glob, and among globs the one with the most
/// literal characters wins (then the first in key order).
#[derive(Clone, Debug)]
pub struct TypeMap {
    exact: HashMap<Box<str>, Box<str>>,
    globs: Vec<(Pattern, Box<str>)>,
}

impl TypeMap {
    /// A map from the configured table.
    ///
    /// # Errors
    /// [`PatternError`] for the first key that is not a valid pattern.
    pub fn new(table: &BTreeMap<String, String>) -> Result<Self, PatternError> {
        let mut exact = HashMap::with_capacity(table.len());
        let mut globs = Vec::new();
        for (from, to) in table {
            let pattern = Pattern::new(from)?;
            if pattern.is_glob() {
                globs.push((pattern, to.as_str().into()));
            } else {
                exact.insert(from.as_str().into(), to.as_str().into());
            }
        }
        // Most specific first; the sort is stable, so ties keep key order.
        globs.sort_by_key(|(p, _)| std::cmp::Reverse(p.literal_len()));
        Ok(Self { exact, globs })
    }

    /// Our type for ZITADEL type `zitadel_type`, or `None` when it is not mapped.
    pub fn map(&self, zitadel_type: &str) -> Option<&str> {
        self.exact
            .get(zitadel_type)
            .or_else(|| {
                self.globs
                    .iter()
                    .find(|(p, _)| p.matches(zitadel_type))
                    .map(|(_, to)| to)
            })
            .map(|to| &**to)
    }
}

impl Default for TypeMap {
    /// The default table ([`default_type_map`]).
    fn default() -> Self {
        Self::new(&default_type_map()).expect("default type map is valid")
    }
}

/// The default `events.zitadel.typeMap`: ZITADEL's user, session, org, project,
/// application and role events onto the types of `events.types`.
pub fn default_type_map() -> BTreeMap<String, String> {
    const TABLE: &[(&str, &str)] = &[
        ("user.human.added", "user.created"),
        ("user.human.selfregistered", "user.created"),
        ("user.machine.added", "user.created"),
        ("user.human.profile.changed", "user.updated"),
        ("user.human.email.changed", "user.updated"),
        ("user.human.email.verified", "user.updated"),
        ("user.human.phone.changed", "user.updated"),
        ("user.human.phone.verified", "user.updated"),
        ("user.human.phone.removed", "user.updated"),
        ("user.human.address.changed", "user.updated"),
        ("user.human.password.changed", "user.updated"),
        ("user.machine.changed", "user.updated"),
        ("user.username.changed", "user.updated"),
        ("user.locked", "user.updated"),
        ("user.unlocked", "user.updated"),
        ("user.deactivated", "user.updated"),
        ("user.reactivated", "user.updated"),
        ("user.removed", "user.deleted"),
        ("user.human.password.check.succeeded", "auth.login"),
        ("session.password.checked", "auth.login"),
        ("user.human.password.check.failed", "auth.failed"),
        ("user.human.signed.out", "auth.logout"),
        ("session.terminated", "auth.logout"),
        ("org.added", "org.created"),
        ("org.changed", "org.updated"),
        ("org.removed", "org.deleted"),
        ("project.added", "project.created"),
        ("project.changed", "project.updated"),
        ("project.removed", "project.deleted"),
        ("project.application.added", "app.created"),
        ("project.application.changed", "app.updated"),
        ("project.application.removed", "app.deleted"),
        ("project.role.added", "role.created"),
        ("project.role.changed", "role.updated"),
        ("project.role.removed", "role.deleted"),
    ];
    TABLE
        .iter()
        .map(|(from, to)| ((*from).to_owned(), (*to).to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::TypeFilter;

    const KEY: &[u8] = b"sk_test_9c2f1e";
    const BODY: &[u8] = br#"{"aggregateID":"3264","event_type":"user.human.added"}"#;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// The signature computed independently of `sign`, straight from the definition.
    fn hmac_hex(key: &[u8], message: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(message);
        hex::encode(mac.finalize().into_bytes())
    }

    fn header_for(key: &[u8], t: u64, body: &[u8]) -> String {
        let mut message = format!("{t}.").into_bytes();
        message.extend_from_slice(body);
        format!("t={t},v1={}", hmac_hex(key, &message))
    }

    const T: u64 = 1_762_077_600;

    fn check(
        header: Option<&str>,
        body: &[u8],
        key: &[u8],
        now: u64,
    ) -> Result<(), SignatureError> {
        verify(header, body, key, DEFAULT_TOLERANCE, at(now))
    }

    #[test]
    fn an_independently_computed_signature_is_accepted() {
        let header = header_for(KEY, T, BODY);
        check(Some(&header), BODY, KEY, T).unwrap();
        check(Some(&header), BODY, KEY, T + 300).unwrap();
        check(Some(&header), BODY, KEY, T - 300).unwrap();
        assert_eq!(sign(KEY, T, BODY), header);
        // Spaces around parts are tolerated, unknown schemes ignored.
        let spaced = header.replace(',', " , v0=ignored, ");
        check(Some(&spaced), BODY, KEY, T).unwrap();
    }

    #[test]
    fn any_matching_v1_passes() {
        let good = header_for(KEY, T, BODY);
        let other = header_for(b"old-key", T, BODY);
        let v1 = good.split_once(",v1=").unwrap().1;
        let two = format!("{other},v1={v1}");
        check(Some(&two), BODY, KEY, T).unwrap();
    }

    #[test]
    fn wrong_key_or_tampered_body_do_not_match() {
        let header = header_for(KEY, T, BODY);
        assert_eq!(
            check(Some(&header), BODY, b"another-key", T),
            Err(SignatureError::NoMatch)
        );
        let tampered = br#"{"aggregateID":"3265","event_type":"user.human.added"}"#;
        assert_eq!(
            check(Some(&header), tampered, KEY, T),
            Err(SignatureError::NoMatch)
        );
        // The timestamp is part of what is signed.
        let moved = header.replacen(&format!("t={T}"), &format!("t={}", T + 1), 1);
        assert_eq!(
            check(Some(&moved), BODY, KEY, T),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            check(Some(&header), BODY, b"", T),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn stale_and_future_timestamps_are_refused() {
        let header = header_for(KEY, T, BODY);
        let stale = check(Some(&header), BODY, KEY, T + 301).unwrap_err();
        assert_eq!(
            stale,
            SignatureError::OutsideTolerance {
                age_secs: 301,
                tolerance_secs: 300
            }
        );
        assert!(stale.to_string().contains("301s old"), "{stale}");
        let future = check(Some(&header), BODY, KEY, T - 400).unwrap_err();
        assert_eq!(
            future,
            SignatureError::OutsideTolerance {
                age_secs: -400,
                tolerance_secs: 300
            }
        );
        assert!(
            future.to_string().contains("400s in the future"),
            "{future}"
        );
    }

    #[test]
    fn a_missing_header_is_its_own_error() {
        assert_eq!(check(None, BODY, KEY, T), Err(SignatureError::Missing));
    }

    #[test]
    fn malformed_headers_say_what_is_wrong() {
        let v1 = header_for(KEY, T, BODY)
            .split_once(",v1=")
            .unwrap()
            .1
            .to_owned();
        for (header, part) in [
            (String::new(), "empty"),
            ("   ".into(), "empty"),
            (format!("t=abc,v1={v1}"), "`t`"),
            (format!("t=-5,v1={v1}"), "`t`"),
            (format!("t=+{T},v1={v1}"), "`t`"),
            (format!("v1={v1}"), "no `t=`"),
            (format!("t={T}"), "no `v1=`"),
            (format!("t={T},v0={v1}"), "no `v1=`"),
            (format!("t={T},v1=zz{}", &v1[2..]), "64 hex digits"),
            (format!("t={T},v1={}", &v1[..62]), "64 hex digits"),
            (format!("t={T},t={T},v1={v1}"), "more than one"),
            (format!("t={T};v1={v1}"), "`t`"),
            (format!("garbage,t={T},v1={v1}"), "name=value"),
        ] {
            match check(Some(&header), BODY, KEY, T) {
                Err(SignatureError::Malformed(m)) => {
                    assert!(m.contains(part), "{header:?}: {m}");
                }
                other => panic!("{header:?}: {other:?}"),
            }
        }
    }

    /// A body as ZITADEL sends it for a new human user.
    const HUMAN_ADDED: &str = r#"{
        "aggregateID": "312909075211944344",
        "aggregateType": "user",
        "resourceOwner": "312909075211878808",
        "instanceID": "312909075211813272",
        "version": "v2",
        "sequence": 1,
        "event_type": "user.human.added",
        "created_at": "2026-11-02T10:00:00.123456Z",
        "userID": "312909075212272024",
        "event_payload": {"userName":"ada@example.com","firstName":"Ada","lastName":"Lovelace","displayName":"Ada Lovelace","preferredLanguage":"en","email":"ada@example.com"}
    }"#;

    #[test]
    fn a_zitadel_body_becomes_our_event() {
        let zitadel = ActionsEvent::parse(HUMAN_ADDED.as_bytes()).unwrap();
        assert_eq!(zitadel.sequence, 1);
        let map = TypeMap::default();
        let ty = map.map(&zitadel.event_type).unwrap();
        assert_eq!(ty, "user.created");

        let event = zitadel.to_event(ty, "zitadel");
        assert_eq!(event.id, "zitadel:312909075211813272:312909075211944344:1");
        assert_eq!(event.source, "zitadel");
        assert_eq!(event.ty, "user.created");
        assert_eq!(event.subject.as_deref(), Some("312909075211944344"));
        assert_eq!(event.time.as_deref(), Some("2026-11-02T10:00:00.123456Z"));
        let data: serde_json::Value = serde_json::from_str(event.data_json().unwrap()).unwrap();
        assert_eq!(data["userName"], "ada@example.com");
        for (k, v) in [
            ("zitadeltype", "user.human.added"),
            ("zitadelaggregatetype", "user"),
            ("zitadelaggregateid", "312909075211944344"),
            ("zitadelresourceowner", "312909075211878808"),
            ("zitadelinstanceid", "312909075211813272"),
            ("zitadelsequence", "1"),
            ("zitadelversion", "v2"),
            ("zitadeluserid", "312909075212272024"),
        ] {
            assert_eq!(event.extensions[k], v, "{k}");
        }
        let accepted = TypeFilter::new(&crate::config::EventsConfig::default().types).unwrap();
        event.validate(&accepted).unwrap();

        // A redelivery gives the same id.
        let again = ActionsEvent::parse(HUMAN_ADDED.as_bytes()).unwrap();
        assert_eq!(again.to_event(ty, "zitadel").id, event.id);
        let stored = crate::events::decode(&crate::events::encode(&event, true)).unwrap();
        assert_eq!(stored, event);
    }

    #[test]
    fn empty_fields_and_payload_are_left_out() {
        let body = br#"{"aggregateID":"9","instanceID":"1","sequence":7,"event_type":"session.terminated","event_payload":null,"unknownField":true}"#;
        let event = ActionsEvent::parse(body)
            .unwrap()
            .to_event("auth.logout", "zitadel");
        assert!(event.data.is_none());
        assert_eq!(event.time, None);
        let names: Vec<_> = event.extensions.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "zitadelaggregateid",
                "zitadelinstanceid",
                "zitadelsequence",
                "zitadeltype"
            ]
        );
        event.validate(&TypeFilter::any()).unwrap();
    }

    #[test]
    fn parse_errors_name_the_field() {
        let e = ActionsEvent::parse(
            br#"{"aggregateID":"1","instanceID":"1","sequence":"x","event_type":"a"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with(r#"body: sequence: invalid type: string "x", expected u64"#),
            "{e}"
        );
        let e = ActionsEvent::parse(br#"{"aggregateID":"1","instanceID":"1","sequence":1}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing field `event_type`"), "{e}");
        let e = ActionsEvent::parse(b"not json").unwrap_err().to_string();
        assert!(e.starts_with("body: expected"), "{e}");
        let e = ActionsEvent::parse(
            br#"{"aggregateID":"1","instanceID":"1","sequence":1,"event_type":"a"} x"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("trailing"), "{e}");
    }

    #[test]
    fn default_map_covers_the_design_and_hits_accepted_types() {
        let map = TypeMap::default();
        for (from, to) in [
            ("user.human.added", "user.created"),
            ("user.human.selfregistered", "user.created"),
            ("user.machine.added", "user.created"),
            ("user.human.profile.changed", "user.updated"),
            ("user.removed", "user.deleted"),
            ("user.human.password.check.succeeded", "auth.login"),
            ("session.password.checked", "auth.login"),
            ("user.human.password.check.failed", "auth.failed"),
            ("user.human.signed.out", "auth.logout"),
            ("session.terminated", "auth.logout"),
            ("org.added", "org.created"),
            ("org.changed", "org.updated"),
            ("org.removed", "org.deleted"),
            ("project.added", "project.created"),
            ("project.application.removed", "app.deleted"),
            ("project.role.changed", "role.updated"),
        ] {
            assert_eq!(map.map(from), Some(to), "{from}");
        }
        assert_eq!(map.map("user.human.avatar.added"), None);
        assert_eq!(map.map("instance.added"), None);

        let accepted = TypeFilter::new(&crate::config::EventsConfig::default().types).unwrap();
        for to in default_type_map().values() {
            assert!(accepted.accepts(to), "{to}");
        }
    }

    #[test]
    fn exact_keys_win_over_globs_and_specific_globs_over_broad_ones() {
        let table: BTreeMap<String, String> = [
            ("*", "misc.other"),
            ("user.*", "user.updated"),
            ("user.human.*.changed", "user.profile_changed"),
            ("user.removed", "user.deleted"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
        let map = TypeMap::new(&table).unwrap();
        assert_eq!(map.map("user.removed"), Some("user.deleted"));
        assert_eq!(
            map.map("user.human.email.changed"),
            Some("user.profile_changed")
        );
        assert_eq!(map.map("user.locked"), Some("user.updated"));
        assert_eq!(map.map("org.added"), Some("misc.other"));

        let bad: BTreeMap<String, String> = [("user.?".to_owned(), "x".to_owned())].into();
        assert!(TypeMap::new(&bad).is_err());
    }
}
