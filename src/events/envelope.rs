//! The event envelope: a CloudEvents 1.0 event in structured-mode JSON.
//!
//! ```json
//! {"specversion":"1.0","id":"…","source":"billing","type":"user.created",
//!  "time":"2026-11-02T10:00:00.000Z","priority":"normal","data":{"userId":"42"}}
//! ```
//!
//! `data` stays unparsed ([`RawValue`]): the envelope is read and written without touching
//! the payload. The extensions `priority` and `attempt` have their own fields; any other
//! extension attribute is kept in [`Event::extensions`]. Binary payloads (`data_base64`)
//! are not supported.
//!
//! In Redis an event is its JSON text ([`encode`]), so `LRANGE` shows it as it is; with
//! compression on, an event over [`COMPRESS_ABOVE`] bytes is stored as the cache's
//! self-identifying LZ4 frame (it starts with [`MAGIC`], which JSON never does), and
//! [`decode`] reads either form.

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::routing::{Priority, TypeFilter};
use crate::cache::frame::{self, FrameError};
use crate::config::CompressionConfig;

pub use crate::cache::frame::MAGIC;

/// The only CloudEvents version accepted.
pub const SPEC_VERSION: &str = "1.0";

/// With compression on, events whose JSON is longer than this many bytes are compressed.
pub const COMPRESS_ABOVE: usize = 1024;

/// Longest extension attribute name (CloudEvents 1.0).
pub const MAX_EXTENSION_NAME_LEN: usize = 20;

/// Attribute names with a field of their own; an extension may not use them.
pub const KNOWN_ATTRIBUTES: [&str; 12] = [
    "specversion",
    "id",
    "source",
    "type",
    "time",
    "datacontenttype",
    "dataschema",
    "subject",
    "data",
    "data_base64",
    "priority",
    "attempt",
];

/// One CloudEvents 1.0 event.
///
/// Deserializing checks the JSON shape (types of the known attributes, no duplicate
/// attribute, no `data_base64`, extension values that are strings, numbers or booleans);
/// [`Event::validate`] checks the values.
#[derive(Clone, Debug)]
pub struct Event {
    /// CloudEvents version; must be `"1.0"`.
    pub specversion: String,
    /// Identifies the event; `source` + `id` is unique per distinct event, and a redelivery
    /// keeps both.
    pub id: String,
    /// Where the event happened (a URI-reference, e.g. `zitadel`, `/billing`).
    pub source: String,
    /// The event type (`user.created`); JSON name `type`.
    pub ty: String,
    /// When it happened, RFC 3339.
    pub time: Option<String>,
    /// Media type of `data`; absent means JSON.
    pub datacontenttype: Option<String>,
    /// Schema that `data` adheres to.
    pub dataschema: Option<String>,
    /// What the event is about within the source (e.g. a user id).
    pub subject: Option<String>,
    /// The payload, kept as unparsed JSON.
    pub data: Option<Box<RawValue>>,
    /// Extension `priority`: overrides routing by type when set.
    pub priority: Option<Priority>,
    /// Extension `attempt`: deliveries already tried (0 for a new event; not written
    /// when 0).
    pub attempt: u32,
    /// Every other extension attribute: lowercase `a-z0-9` names of 1–20 characters,
    /// string, number or boolean values.
    pub extensions: BTreeMap<String, serde_json::Value>,
}

impl PartialEq for Event {
    /// Attribute by attribute; `data` is compared as JSON text.
    fn eq(&self, other: &Self) -> bool {
        self.specversion == other.specversion
            && self.id == other.id
            && self.source == other.source
            && self.ty == other.ty
            && self.time == other.time
            && self.datacontenttype == other.datacontenttype
            && self.dataschema == other.dataschema
            && self.subject == other.subject
            && self.data_json() == other.data_json()
            && self.priority == other.priority
            && self.attempt == other.attempt
            && self.extensions == other.extensions
    }
}

/// Why an event is refused. Each message starts with the attribute it is about.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// An attribute has a value that is not allowed.
    #[error("{attribute}: {message}")]
    Invalid {
        /// The attribute (JSON name).
        attribute: String,
        /// What is wrong and what was expected.
        message: String,
    },
    /// The type is not in `events.types`.
    #[error("type: {0:?} is not an accepted event type (see events.types)")]
    TypeNotAccepted(String),
    /// The bytes are not a CloudEvents JSON object.
    #[error("{0}")]
    Malformed(String),
    /// A compressed entry cannot be decompressed.
    #[error("compressed event: {0}")]
    Frame(#[from] FrameError),
}

impl EventError {
    fn invalid(attribute: &str, message: impl Into<String>) -> Self {
        Self::Invalid {
            attribute: attribute.to_owned(),
            message: message.into(),
        }
    }
}

/// A W3C trace context carried by an event (see [`Event::trace_context`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext<'a> {
    /// 32 lowercase hex digits.
    pub trace_id: &'a str,
    /// The publisher's span: 16 lowercase hex digits.
    pub parent_id: &'a str,
}

impl Event {
    /// A new event of type `ty` from `source`, with a fresh random `id` and `time` = now.
    /// `data` is JSON, e.g. from [`serde_json::value::to_raw_value`].
    pub fn new(
        ty: impl Into<String>,
        source: impl Into<String>,
        data: Option<Box<RawValue>>,
    ) -> Self {
        Self {
            specversion: SPEC_VERSION.to_owned(),
            id: new_id(),
            source: source.into(),
            ty: ty.into(),
            time: Some(now_rfc3339()),
            datacontenttype: None,
            dataschema: None,
            subject: None,
            data,
            priority: None,
            attempt: 0,
            extensions: BTreeMap::new(),
        }
    }

    /// The W3C trace context of the `traceparent` extension (CloudEvents distributed
    /// tracing), when it holds a valid one: `00-{trace id}-{parent span id}-{flags}`.
    pub fn trace_context(&self) -> Option<TraceContext<'_>> {
        let value = self.extensions.get("traceparent")?.as_str()?;
        let mut parts = value.split('-');
        let (version, trace_id, parent_id, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, len: usize| {
            s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        let valid = hex(version, 2)
            && version != "ff"
            && (version != "00" || parts.next().is_none())
            && hex(trace_id, 32)
            && trace_id.bytes().any(|b| b != b'0')
            && hex(parent_id, 16)
            && parent_id.bytes().any(|b| b != b'0')
            && hex(flags, 2);
        valid.then_some(TraceContext {
            trace_id,
            parent_id,
        })
    }

    /// Checks every attribute, and that the type is one `accepted` lets through.
    ///
    /// # Errors
    /// The first problem found, naming the attribute and what was expected.
    pub fn validate(&self, accepted: &TypeFilter) -> Result<(), EventError> {
        if self.specversion != SPEC_VERSION {
            return Err(EventError::invalid(
                "specversion",
                format!("expected {SPEC_VERSION:?}, got {:?}", self.specversion),
            ));
        }
        for (attribute, value) in [
            ("id", &self.id),
            ("source", &self.source),
            ("type", &self.ty),
        ] {
            if value.is_empty() {
                return Err(EventError::invalid(attribute, "must not be empty"));
            }
        }
        if let Some(time) = &self.time {
            check_rfc3339(time).map_err(|reason| {
                EventError::invalid(
                    "time",
                    format!(
                        "{time:?} is not an RFC 3339 timestamp ({reason}; expected e.g. \
                         2026-11-02T10:00:00Z)"
                    ),
                )
            })?;
        }
        for (attribute, value) in [
            ("datacontenttype", &self.datacontenttype),
            ("dataschema", &self.dataschema),
            ("subject", &self.subject),
        ] {
            if value.as_deref() == Some("") {
                return Err(EventError::invalid(
                    attribute,
                    "must not be empty when present",
                ));
            }
        }
        for (name, value) in &self.extensions {
            check_extension_name(name).map_err(|m| EventError::invalid(name, m))?;
            if !matches!(
                value,
                serde_json::Value::String(_)
                    | serde_json::Value::Number(_)
                    | serde_json::Value::Bool(_)
            ) {
                return Err(EventError::invalid(
                    name,
                    "extension values must be a string, number or boolean",
                ));
            }
        }
        if !accepted.accepts(&self.ty) {
            return Err(EventError::TypeNotAccepted(self.ty.clone()));
        }
        Ok(())
    }

    /// The payload's JSON text, if there is one.
    pub fn data_json(&self) -> Option<&str> {
        self.data.as_deref().map(RawValue::get)
    }
}

/// Now as RFC 3339 with milliseconds. Events made in a burst share their millisecond:
/// each thread keeps the last one it formatted and copies it while it is still now.
fn now_rfc3339() -> String {
    use std::cell::RefCell;
    use std::time::UNIX_EPOCH;
    thread_local! {
        static LAST: RefCell<(u128, String)> = const { RefCell::new((u128::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let ms = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    LAST.with_borrow_mut(|(at, text)| {
        if *at != ms {
            *text = humantime::format_rfc3339_millis(now).to_string();
            *at = ms;
        }
        text.clone()
    })
}

/// A fresh event id: 128 random bits as 32 lowercase hex digits.
pub fn new_id() -> String {
    crate::ids::random_hex128()
}

/// The event as stored: its JSON, or a compressed frame when `compress` is on, the JSON is
/// over [`COMPRESS_ABOVE`] bytes and compression makes it smaller.
pub fn encode(event: &Event, compress: bool) -> Vec<u8> {
    let hint = 192 + event.data.as_ref().map_or(0, |d| d.get().len());
    let mut json = Vec::with_capacity(hint);
    serde_json::to_writer(&mut json, event).expect("an event always serializes to JSON");
    if compress && json.len() > COMPRESS_ABOVE {
        let cfg = CompressionConfig {
            enabled: true,
            threshold_bytes: COMPRESS_ABOVE,
        };
        return frame::encode(&json, &cfg);
    }
    json
}

/// Reads an event written by [`encode`] (plain JSON or a compressed frame). Does not
/// [`validate`](Event::validate) it.
///
/// # Errors
/// [`EventError::Frame`] for a corrupt frame; [`EventError::Malformed`] when the JSON is
/// not a CloudEvents object, naming the attribute (`type: invalid type: …`).
pub fn decode(bytes: &[u8]) -> Result<Event, EventError> {
    if bytes.starts_with(MAGIC) {
        let json = frame::decode(bytes.to_vec())?;
        parse(&json)
    } else {
        parse(bytes)
    }
}

/// Parses JSON quickly; only on failure parses again with path tracking, for a message
/// that names the attribute.
fn parse(json: &[u8]) -> Result<Event, EventError> {
    serde_json::from_slice(json).map_err(|fast| {
        let mut de = serde_json::Deserializer::from_slice(json);
        match serde_path_to_error::deserialize::<_, Event>(&mut de) {
            Err(e) => EventError::Malformed(e.to_string()),
            Ok(_) => EventError::Malformed(fast.to_string()),
        }
    })
}

/// Checks an extension attribute name: `a-z0-9`, 1–20 characters, not a known attribute.
fn check_extension_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_EXTENSION_NAME_LEN {
        return Err(format!(
            "extension attribute names must have 1 to {MAX_EXTENSION_NAME_LEN} characters"
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err(
            "extension attribute names may only contain lowercase letters a-z and digits 0-9"
                .into(),
        );
    }
    if KNOWN_ATTRIBUTES.contains(&name) {
        return Err("is a CloudEvents attribute, not an extension".into());
    }
    Ok(())
}

/// Reads an RFC 3339 `date-time` (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`, real dates,
/// `T` and `Z` in either case, RFC 3339 §5.6) as an instant.
pub(crate) fn parse_rfc3339(text: &str) -> Result<SystemTime, String> {
    // The parser also takes a space there, which RFC 3339 leaves to agreement and
    // CloudEvents' `date-time` does not allow.
    if text.as_bytes().get(10) == Some(&b' ') {
        return Err("expected `T` between date and time".into());
    }
    let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| e.to_string())?;
    Ok(SystemTime::from(at))
}

fn check_rfc3339(text: &str) -> Result<(), String> {
    parse_rfc3339(text).map(|_| ())
}

impl Serialize for Event {
    /// Known attributes first, then extensions (except any named like a known attribute,
    /// which [`Event::validate`] refuses), then `data`, so the payload ends the line.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let extensions = self
            .extensions
            .iter()
            .filter(|(name, _)| !KNOWN_ATTRIBUTES.contains(&name.as_str()));
        let len = 4
            + [
                self.time.is_some(),
                self.datacontenttype.is_some(),
                self.dataschema.is_some(),
                self.subject.is_some(),
                self.priority.is_some(),
                self.attempt != 0,
                self.data.is_some(),
            ]
            .iter()
            .filter(|present| **present)
            .count()
            + extensions.clone().count();
        let mut map = s.serialize_map(Some(len))?;
        map.serialize_entry("specversion", &self.specversion)?;
        map.serialize_entry("id", &self.id)?;
        map.serialize_entry("source", &self.source)?;
        map.serialize_entry("type", &self.ty)?;
        if let Some(v) = &self.subject {
            map.serialize_entry("subject", v)?;
        }
        if let Some(v) = &self.time {
            map.serialize_entry("time", v)?;
        }
        if let Some(v) = &self.datacontenttype {
            map.serialize_entry("datacontenttype", v)?;
        }
        if let Some(v) = &self.dataschema {
            map.serialize_entry("dataschema", v)?;
        }
        if let Some(v) = &self.priority {
            map.serialize_entry("priority", v)?;
        }
        if self.attempt != 0 {
            map.serialize_entry("attempt", &self.attempt)?;
        }
        for (name, value) in extensions {
            map.serialize_entry(name, value)?;
        }
        if let Some(v) = &self.data {
            map.serialize_entry("data", v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(EventVisitor)
    }
}

/// An attribute name as read from the JSON object.
enum Attribute {
    SpecVersion,
    Id,
    Source,
    Type,
    Time,
    DataContentType,
    DataSchema,
    Subject,
    Data,
    DataBase64,
    Priority,
    Attempt,
    Extension(String),
}

impl<'de> Deserialize<'de> for Attribute {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Attribute;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an attribute name")
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<Attribute, E> {
                Ok(match name {
                    "specversion" => Attribute::SpecVersion,
                    "id" => Attribute::Id,
                    "source" => Attribute::Source,
                    "type" => Attribute::Type,
                    "time" => Attribute::Time,
                    "datacontenttype" => Attribute::DataContentType,
                    "dataschema" => Attribute::DataSchema,
                    "subject" => Attribute::Subject,
                    "data" => Attribute::Data,
                    "data_base64" => Attribute::DataBase64,
                    "priority" => Attribute::Priority,
                    "attempt" => Attribute::Attempt,
                    other => Attribute::Extension(other.to_owned()),
                })
            }
        }
        d.deserialize_identifier(V)
    }
}

/// An extension value: string, number or boolean; `null` means absent.
struct ExtensionValue(Option<serde_json::Value>);

impl<'de> Deserialize<'de> for ExtensionValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ExtensionValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean (extension attribute value)")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(ExtensionValue(Some(v.into())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(ExtensionValue(Some(v.into())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(ExtensionValue(Some(v.into())))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                serde_json::Number::from_f64(v)
                    .map(|n| ExtensionValue(Some(n.into())))
                    .ok_or_else(|| E::custom("expected a finite number"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(ExtensionValue(Some(v.into())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(ExtensionValue(Some(v.into())))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(ExtensionValue(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(ExtensionValue(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// `attempt`: a non-negative integer (also accepted as a decimal string, the form
/// CloudEvents' binary HTTP mode gives every attribute); `null` means 0.
struct Attempt(u32);

impl<'de> Deserialize<'de> for Attempt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Attempt;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a delivery count from 0 to 4294967295")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Attempt, E> {
                u32::try_from(v)
                    .map(Attempt)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Attempt, E> {
                u32::try_from(v)
                    .map(Attempt)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Attempt, E> {
                v.parse()
                    .ok()
                    .filter(|_| v.bytes().all(|b| b.is_ascii_digit()))
                    .map(Attempt)
                    .ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Attempt, E> {
                Ok(Attempt(0))
            }
        }
        d.deserialize_any(V)
    }
}

struct EventVisitor;

/// Stores the value of an attribute seen for the first time.
fn put<T, E: de::Error>(slot: &mut Option<T>, name: &'static str, value: T) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::duplicate_field(name));
    }
    *slot = Some(value);
    Ok(())
}

impl<'de> Visitor<'de> for EventVisitor {
    type Value = Event;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a CloudEvents 1.0 JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Event, A::Error> {
        let mut specversion = None;
        let mut id = None;
        let mut source = None;
        let mut ty = None;
        // Optional attributes: the outer `Option` records that the attribute was seen.
        let mut time: Option<Option<String>> = None;
        let mut datacontenttype: Option<Option<String>> = None;
        let mut dataschema: Option<Option<String>> = None;
        let mut subject: Option<Option<String>> = None;
        let mut data: Option<Option<Box<RawValue>>> = None;
        let mut priority: Option<Option<Priority>> = None;
        let mut attempt: Option<u32> = None;
        let mut extensions = BTreeMap::new();
        while let Some(attribute) = map.next_key::<Attribute>()? {
            match attribute {
                Attribute::SpecVersion => put(&mut specversion, "specversion", map.next_value()?)?,
                Attribute::Id => put(&mut id, "id", map.next_value()?)?,
                Attribute::Source => put(&mut source, "source", map.next_value()?)?,
                Attribute::Type => put(&mut ty, "type", map.next_value()?)?,
                Attribute::Time => put(&mut time, "time", map.next_value()?)?,
                Attribute::DataContentType => {
                    put(&mut datacontenttype, "datacontenttype", map.next_value()?)?;
                }
                Attribute::DataSchema => put(&mut dataschema, "dataschema", map.next_value()?)?,
                Attribute::Subject => put(&mut subject, "subject", map.next_value()?)?,
                Attribute::Data => put(&mut data, "data", map.next_value()?)?,
                Attribute::DataBase64 => {
                    return Err(de::Error::custom(
                        "data_base64: binary data is not supported; send the payload as \
                         JSON in `data`",
                    ));
                }
                Attribute::Priority => put(&mut priority, "priority", map.next_value()?)?,
                Attribute::Attempt => {
                    put(&mut attempt, "attempt", map.next_value::<Attempt>()?.0)?;
                }
                Attribute::Extension(name) => {
                    let ExtensionValue(value) = map.next_value()?;
                    if extensions.contains_key(&name) {
                        return Err(de::Error::custom(format_args!(
                            "duplicate attribute `{name}`"
                        )));
                    }
                    if let Some(value) = value {
                        extensions.insert(name, value);
                    }
                }
            }
        }
        Ok(Event {
            specversion: specversion.ok_or_else(|| de::Error::missing_field("specversion"))?,
            id: id.ok_or_else(|| de::Error::missing_field("id"))?,
            source: source.ok_or_else(|| de::Error::missing_field("source"))?,
            ty: ty.ok_or_else(|| de::Error::missing_field("type"))?,
            time: time.flatten(),
            datacontenttype: datacontenttype.flatten(),
            dataschema: dataschema.flatten(),
            subject: subject.flatten(),
            data: data.flatten(),
            priority: priority.flatten(),
            attempt: attempt.unwrap_or(0),
            extensions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_owned()).unwrap()
    }

    #[test]
    fn a_new_event_is_stamped_with_now_to_the_millisecond() {
        let before = SystemTime::now() - std::time::Duration::from_millis(1);
        let (a, b) = (sample(), sample());
        let after = SystemTime::now();
        for event in [&a, &b] {
            let time = event.time.as_deref().unwrap();
            assert_eq!(time.len(), "2026-11-02T10:00:00.000Z".len(), "{time}");
            let at = parse_rfc3339(time).unwrap();
            assert!(before <= at && at <= after, "{time}");
        }
    }

    fn sample() -> Event {
        let mut event = Event::new("user.created", "billing", Some(raw(r#"{"userId":"42"}"#)));
        event.subject = Some("42".into());
        event
    }

    fn accept_all() -> TypeFilter {
        TypeFilter::any()
    }

    #[test]
    fn new_events_have_a_random_id_and_the_current_time() {
        let (a, b) = (sample(), sample());
        assert_eq!(a.id.len(), 32);
        assert!(a.id.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.id, b.id);
        let time = a.time.as_deref().unwrap();
        assert!(humantime::parse_rfc3339(time).is_ok(), "{time}");
        a.validate(&accept_all()).unwrap();
    }

    #[test]
    fn round_trips_with_and_without_data() {
        let with = sample();
        assert_eq!(decode(&encode(&with, false)).unwrap(), with);
        let mut without = Event::new("auth.login", "web", None);
        without.time = None;
        let bytes = encode(&without, true);
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            format!(
                r#"{{"specversion":"1.0","id":"{}","source":"web","type":"auth.login"}}"#,
                without.id
            )
        );
        assert_eq!(decode(&bytes).unwrap(), without);
    }

    #[test]
    fn round_trips_every_attribute_and_extensions() {
        let mut event = sample();
        event.datacontenttype = Some("application/json".into());
        event.dataschema = Some("https://example.com/schemas/user.json".into());
        event.priority = Some(Priority::High);
        event.attempt = 3;
        event
            .extensions
            .insert("traceparent".into(), "00-abc-01".into());
        event.extensions.insert("tenant7".into(), 7.into());
        event.extensions.insert("sampled".into(), true.into());
        event
            .extensions
            .insert("ratio".into(), serde_json::json!(0.5));
        event.validate(&accept_all()).unwrap();
        let bytes = encode(&event, false);
        assert_eq!(decode(&bytes).unwrap(), event);

        // Readable by any JSON reader as a CloudEvents object, payload last.
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(text.ends_with(r#""data":{"userId":"42"}}"#), "{text}");
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(value["specversion"], "1.0");
        assert_eq!(value["type"], "user.created");
        assert_eq!(value["priority"], "high");
        assert_eq!(value["attempt"], 3);
        assert_eq!(value["traceparent"], "00-abc-01");
        assert_eq!(value["data"]["userId"], "42");
        assert_eq!(value.as_object().unwrap().len(), 15);
    }

    #[test]
    fn compression_applies_above_the_threshold_only() {
        let base = encode(&Event::new("user.updated", "s", Some(raw(r#""""#))), false).len();
        for target in [
            COMPRESS_ABOVE - 1,
            COMPRESS_ABOVE,
            COMPRESS_ABOVE + 1,
            10_000,
        ] {
            // A payload string whose event JSON is exactly `target` bytes long.
            let padding = "a".repeat(target - base);
            let event = Event::new("user.updated", "s", Some(raw(&format!("\"{padding}\""))));
            let plain = encode(&event, false);
            assert_eq!(plain.len(), target);
            let stored = encode(&event, true);
            assert_eq!(
                stored.starts_with(MAGIC),
                target > COMPRESS_ABOVE,
                "{target}"
            );
            assert!(stored.len() <= plain.len());
            assert_eq!(decode(&stored).unwrap(), event, "{target}");
            assert_eq!(decode(&plain).unwrap(), event, "{target}");
        }
    }

    #[test]
    fn corrupt_frames_are_errors() {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&[1]);
        let err = decode(&bytes).unwrap_err();
        assert!(matches!(err, EventError::Frame(_)), "{err}");
    }

    fn err(json: &str) -> String {
        decode(json.as_bytes()).unwrap_err().to_string()
    }

    const MINIMAL: &str = r#""specversion":"1.0","id":"1","source":"s","type":"t""#;

    #[test]
    fn parse_errors_name_the_attribute() {
        let e = err(r#"{"specversion":"1.0","id":"1","source":"s","type":5}"#);
        assert!(e.starts_with("type: invalid type: integer `5`"), "{e}");
        let e = err(&format!(r#"{{{MINIMAL},"priority":"urgent"}}"#));
        assert!(e.starts_with("priority: unknown variant `urgent`"), "{e}");
        let e = err(&format!(r#"{{{MINIMAL},"attempt":-1}}"#));
        assert!(e.starts_with("attempt: invalid value"), "{e}");
        let e = err(&format!(r#"{{{MINIMAL},"traceparent":{{"a":1}}}}"#));
        assert!(e.starts_with("traceparent: invalid type: map"), "{e}");
        assert!(e.contains("string, number or boolean"), "{e}");
        let e = err(r#"{"specversion":"1.0","source":"s","type":"t"}"#);
        assert!(e.contains("missing field `id`"), "{e}");
        let e = err(&format!(r#"{{{MINIMAL},"id":"2"}}"#));
        assert!(e.contains("duplicate field `id`"), "{e}");
        let e = err(&format!(r#"{{{MINIMAL},"ext":1,"ext":2}}"#));
        assert!(e.contains("duplicate attribute `ext`"), "{e}");
        let e = err(&format!(r#"{{{MINIMAL}}} trailing"#));
        assert!(e.contains("trailing"), "{e}");
        // Path tracking also reads `data` (a raw value) on the way to the bad attribute.
        let e = err(r#"{"data":{"a":[1,2]},"specversion":"1.0","id":"1","source":"s","type":[]}"#);
        assert!(e.starts_with("type: invalid type: sequence"), "{e}");
        let e = err("[1]");
        assert!(e.contains("CloudEvents 1.0 JSON object"), "{e}");
    }

    #[test]
    fn data_base64_is_refused() {
        let e = err(&format!(r#"{{{MINIMAL},"data_base64":"aGk="}}"#));
        assert!(
            e.starts_with("data_base64: binary data is not supported"),
            "{e}"
        );
    }

    #[test]
    fn nulls_read_as_absent() {
        let event = decode(
            format!(
                r#"{{{MINIMAL},"time":null,"subject":null,"data":null,"ext":null,"attempt":null}}"#
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(event.time, None);
        assert_eq!(event.subject, None);
        assert!(event.data.is_none());
        assert!(event.extensions.is_empty());
        assert_eq!(event.attempt, 0);
    }

    #[test]
    fn attempt_may_be_a_decimal_string() {
        let event = decode(format!(r#"{{{MINIMAL},"attempt":"4"}}"#).as_bytes()).unwrap();
        assert_eq!(event.attempt, 4);
        assert!(decode(format!(r#"{{{MINIMAL},"attempt":"+4"}}"#).as_bytes()).is_err());
    }

    fn invalid(event: &Event) -> String {
        event.validate(&accept_all()).unwrap_err().to_string()
    }

    #[test]
    fn each_validation_error_names_the_attribute() {
        let mut e = sample();
        e.specversion = "0.3".into();
        assert_eq!(invalid(&e), r#"specversion: expected "1.0", got "0.3""#);

        for (attribute, clear) in [
            ("id", (|e: &mut Event| e.id.clear()) as fn(&mut Event)),
            ("source", |e| e.source.clear()),
            ("type", |e| e.ty.clear()),
        ] {
            let mut e = sample();
            clear(&mut e);
            assert_eq!(invalid(&e), format!("{attribute}: must not be empty"));
        }

        let mut e = sample();
        e.subject = Some(String::new());
        assert_eq!(invalid(&e), "subject: must not be empty when present");

        let filter = TypeFilter::new(&["user.*"]).unwrap();
        let mut e = sample();
        e.ty = "user.exploded".into();
        e.validate(&filter).unwrap();
        let only_created = TypeFilter::new(&["user.created"]).unwrap();
        assert_eq!(
            e.validate(&only_created).unwrap_err().to_string(),
            r#"type: "user.exploded" is not an accepted event type (see events.types)"#
        );
    }

    #[test]
    fn trace_context_reads_only_valid_traceparents() {
        let with = |tp: &str| {
            let mut e = sample();
            e.extensions.insert("traceparent".into(), tp.into());
            e
        };
        let e = with("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let tc = e.trace_context().unwrap();
        assert_eq!(tc.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tc.parent_id, "00f067aa0ba902b7");
        for bad in [
            "00-abc-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(with(bad).trace_context(), None, "{bad}");
        }
        assert_eq!(sample().trace_context(), None);
    }

    #[test]
    fn time_must_be_rfc3339() {
        for good in [
            "2026-11-02T10:00:00Z",
            "2026-11-02t10:00:00z",
            "2026-11-02T10:00:00.123456789Z",
            // A real leap second (23:59:60 UTC at the end of a month), and offsets.
            "2016-12-31T23:59:60Z",
            "2017-01-01T01:59:60+02:00",
            "2026-11-02T10:00:00.5-05:30",
        ] {
            let mut e = sample();
            e.time = Some(good.into());
            e.validate(&accept_all())
                .unwrap_or_else(|err| panic!("{good}: {err}"));
        }
        for bad in [
            "",
            "2026-11-02",
            "2026-11-02 10:00:00Z",
            "2026-11-02T10:00:00",
            "2026-13-02T10:00:00Z",
            "2025-02-29T10:00:00Z",
            "2026-11-02T24:00:00Z",
            "2026-11-02T10:00:00.Z",
            "2026-11-02T10:00:00+0200",
            "2026-11-02T10:00:00Z ",
            "2026-11-02T10:59:60Z",
            "yesterday",
        ] {
            let mut e = sample();
            e.time = Some(bad.into());
            let msg = invalid(&e);
            assert!(
                msg.starts_with("time: ") && msg.contains("RFC 3339"),
                "{bad}: {msg}"
            );
        }
    }

    #[test]
    fn extension_names_follow_cloudevents() {
        for good in ["a", "traceparent", "x1", "abcdefghijklmnopqrst"] {
            let mut e = sample();
            e.extensions.insert(good.into(), "v".into());
            e.validate(&accept_all())
                .unwrap_or_else(|err| panic!("{good}: {err}"));
        }
        for (bad, reason) in [
            ("", "1 to 20"),
            ("abcdefghijklmnopqrstu", "1 to 20"),
            ("Trace", "lowercase"),
            ("trace_parent", "lowercase"),
            ("trace-parent", "lowercase"),
            ("ünï", "lowercase"),
            ("id", "CloudEvents attribute"),
        ] {
            let mut e = sample();
            e.extensions.insert(bad.into(), "v".into());
            let msg = invalid(&e);
            assert!(
                msg.starts_with(&format!("{bad}: ")) && msg.contains(reason),
                "{msg}"
            );
        }
        let mut e = sample();
        e.extensions.insert("list".into(), serde_json::json!([1]));
        assert!(invalid(&e).contains("string, number or boolean"));
    }

    #[test]
    fn an_extension_named_like_an_attribute_is_never_written() {
        let mut e = sample();
        e.extensions.insert("type".into(), "spoofed".into());
        let value: serde_json::Value = serde_json::from_slice(&encode(&e, false)).unwrap();
        assert_eq!(value["type"], "user.created");
    }

    #[test]
    fn unknown_attributes_from_the_wire_are_extensions_checked_by_validate() {
        let event = decode(format!(r#"{{{MINIMAL},"BadName":"x"}}"#).as_bytes()).unwrap();
        assert_eq!(event.extensions["BadName"], "x");
        assert!(
            event
                .validate(&accept_all())
                .unwrap_err()
                .to_string()
                .starts_with("BadName: ")
        );
    }
}
