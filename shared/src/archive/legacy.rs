//! GitLab's legacy layout: one `project.json` with the attributes and every
//! relation as an array (or an object, for `has_one` relations). Parsed as a
//! stream: one record at a time is in memory, never the whole document.

use std::cell::Cell;
use std::fmt;
use std::io::{BufReader, Read};
use std::rc::Rc;

use bytes::Bytes;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

use super::events::{invalid, ImportEvent, Sink};
use super::json::check_record;
use super::{ArchiveError, Limits, LEGACY_PROJECT_JSON};
use crate::relations;

pub(super) fn read_project_json(
    entry: &mut impl Read,
    limits: &Limits,
    sink: &mut Sink<'_>,
) -> Result<(), ArchiveError> {
    let budget = Rc::new(Budget::default());
    budget.allow("the start of the document", MAX_KEY_BYTES, 0);
    let input = Budgeted {
        inner: BufReader::with_capacity(64 * 1024, entry),
        budget: budget.clone(),
    };
    let mut de = serde_json::Deserializer::from_reader(input);
    let mut state = State {
        limits,
        sink,
        failure: None,
        budget,
        attribute_bytes: 0,
    };
    let parsed = ProjectSeed { state: &mut state }.deserialize(&mut de);
    let attributes = match parsed {
        Ok(attributes) => attributes,
        Err(err) => {
            if let Some(exceeded) = state.budget.exceeded.take() {
                return Err(exceeded);
            }
            return Err(state.failure.take().unwrap_or_else(|| {
                invalid(LEGACY_PROJECT_JSON, err.line() as u64, err.to_string())
            }));
        }
    };
    de.end()
        .map_err(|err| invalid(LEGACY_PROJECT_JSON, err.line() as u64, err.to_string()))?;
    // The attributes as written: numbers, duplicate keys and all.
    let keys: Vec<String> = attributes
        .iter()
        .map(|(key, _)| serde_json::Value::from(key.as_str()).to_string())
        .collect();
    let attributes = super::raw_json::object(
        keys.iter()
            .zip(&attributes)
            .map(|(key, (_, value))| (key.as_str(), value.get())),
    );
    (state.sink)(ImportEvent::Attributes(Bytes::from(attributes)))
        .map_err(|_| ArchiveError::Aborted)
}

/// How far the parser may read before the value it is on is too large: a
/// record or the attributes are refused when they pass their limit, before
/// they are held whole.
#[derive(Default)]
struct Budget {
    read: Cell<u64>,
    stop_at: Cell<u64>,
    what: Cell<&'static str>,
    limit: Cell<u64>,
    exceeded: Cell<Option<ArchiveError>>,
}

impl Budget {
    /// From here on, at most `limit` more bytes for `what` (and `slack` for
    /// what surrounds it).
    fn allow(&self, what: &'static str, limit: u64, slack: u64) {
        self.stop_at
            .set(self.read.get().saturating_add(limit).saturating_add(slack));
        self.what.set(what);
        self.limit.set(limit);
    }
}

/// The entry as the JSON parser reads it, counted against the budget.
struct Budgeted<R> {
    inner: R,
    budget: Rc<Budget>,
}

impl<R: Read> Read for Budgeted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let budget = &self.budget;
        let room = budget.stop_at.get().saturating_sub(budget.read.get());
        if room == 0 {
            let reason = format!(
                "{} larger than the limit of {} bytes",
                budget.what.get(),
                budget.limit.get()
            );
            budget
                .exceeded
                .set(Some(invalid(LEGACY_PROJECT_JSON, 1, reason.clone())));
            return Err(std::io::Error::other(reason));
        }
        let window = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..window])?;
        budget.read.set(budget.read.get() + n as u64);
        Ok(n)
    }
}

/// The longest key of the document's top-level object.
const MAX_KEY_BYTES: u64 = 64 * 1024;

struct State<'s, 'k> {
    limits: &'s Limits,
    sink: &'s mut Sink<'k>,
    /// The real reason when a visitor had to stop with a serde error.
    failure: Option<ArchiveError>,
    budget: Rc<Budget>,
    /// Bytes of attributes read so far (the limit of `tree/project.json`).
    attribute_bytes: u64,
}

impl State<'_, '_> {
    /// One record of a relation may be read next (with a little room for
    /// the separator and white space around it).
    fn allow_record(&self) {
        self.budget
            .allow("a record", self.limits.max_record_bytes as u64, 64);
    }
    fn emit(&mut self, relation: &str, index: u64, raw: &str) -> Result<(), ArchiveError> {
        // A pretty-printed document spreads records over lines; NDJSON needs one.
        let compact;
        let text = if raw.contains(['\n', '\r']) {
            let value: Value = serde_json::from_str(raw)
                .map_err(|err| self.record_error(relation, index, err.to_string()))?;
            compact = serde_json::to_string(&value)
                .map_err(|err| self.record_error(relation, index, err.to_string()))?;
            compact.as_str()
        } else {
            raw
        };
        let record = check_record(text.as_bytes(), self.limits)
            .map_err(|reason| self.record_error(relation, index, reason))?;
        (self.sink)(ImportEvent::Record {
            relation: relation.into(),
            json: Bytes::copy_from_slice(record),
        })
        .map_err(|_| ArchiveError::Aborted)
    }

    fn record_error(&self, relation: &str, index: u64, reason: String) -> ArchiveError {
        invalid(
            &format!("{LEGACY_PROJECT_JSON} ({relation})"),
            index,
            format!("record {index}: {reason}"),
        )
    }

    fn fail<E: de::Error>(&mut self, failure: ArchiveError) -> E {
        let err = E::custom(failure.to_string());
        self.failure = Some(failure);
        err
    }
}

struct ProjectSeed<'a, 's, 'k> {
    state: &'a mut State<'s, 'k>,
}

/// The project's attributes in order, each value as written.
type Attributes = Vec<(String, Box<RawValue>)>;

impl<'de> DeserializeSeed<'de> for ProjectSeed<'_, '_, '_> {
    type Value = Attributes;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ProjectSeed<'_, '_, '_> {
    type Value = Attributes;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object with the project attributes and relations")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut attributes = Attributes::new();
        let limit = self.state.limits.max_attributes_bytes as u64;
        loop {
            self.state.budget.allow("a key", MAX_KEY_BYTES, 0);
            let Some(key) = map.next_key::<String>()? else {
                break;
            };
            if relations::find(&key).is_some() {
                self.state.allow_record();
                map.next_value_seed(RelationSeed {
                    relation: &key,
                    state: self.state,
                })?;
            } else {
                let budget = &self.state.budget;
                let before = budget.read.get();
                budget.allow(
                    "the project attributes are",
                    limit.saturating_sub(self.state.attribute_bytes),
                    0,
                );
                let value: Box<RawValue> = map.next_value()?;
                self.state.attribute_bytes += budget.read.get() - before + key.len() as u64;
                attributes.push((key, value));
            }
        }
        Ok(attributes)
    }
}

struct RelationSeed<'a, 's, 'k> {
    relation: &'a str,
    state: &'a mut State<'s, 'k>,
}

impl<'de> DeserializeSeed<'de> for RelationSeed<'_, '_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RelationSeed<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an array or object of {} records", self.relation)
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0u64;
        while let Some(raw) = seq.next_element::<Box<RawValue>>()? {
            index += 1;
            if let Err(failure) = self.state.emit(self.relation, index, raw.get()) {
                return Err(self.state.fail(failure));
            }
            self.state.allow_record();
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let value = Value::deserialize(de::value::MapAccessDeserializer::new(map))?;
        let text = value.to_string();
        if let Err(failure) = self.state.emit(self.relation, 1, &text) {
            return Err(self.state.fail(failure));
        }
        Ok(())
    }
}

use serde::Deserialize;
