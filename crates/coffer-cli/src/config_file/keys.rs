//! The keys a schema type accepts, read from its `Deserialize` impl, and the flag each key
//! stands for.
//!
//! A derived `Deserialize` of a struct names its fields when it asks for a struct
//! (`deserialize_struct`); [`Probe`] is a deserializer that records those names and offers one
//! field at a time, so that a field holding a table shows its own fields too. A value that is
//! not a table is asked for through its type's visitor, whose words (serde's "path string" for
//! a `PathBuf`) tell the path keys apart. No value is ever produced: a field that is not a
//! table fails its pass, which only ends that pass. One level of tables is explored, which is
//! all a config file has.

use std::cell::RefCell;
use std::fmt;

use clap::{Arg, Command};
use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};

/// A key of a config file: `name` at the top, or `name` in `[table]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub table: Option<String>,
    pub name: String,
}

impl Key {
    pub fn top(name: &str) -> Key {
        Key {
            table: None,
            name: name.to_owned(),
        }
    }

    pub fn in_table(table: &str, name: &str) -> Key {
        Key {
            table: Some(table.to_owned()),
            name: name.to_owned(),
        }
    }

    /// The flag this key sets among `command`'s arguments: in `[t]`, `--t-NAME` if the command
    /// has it, else `--NAME`; at the top, `--NAME`.
    pub fn arg<'c>(&self, command: &'c Command) -> Option<&'c Arg> {
        let by_long = |long: &str| command.get_arguments().find(|a| a.get_long() == Some(long));
        match &self.table {
            Some(table) => {
                by_long(&format!("{table}-{}", self.name)).or_else(|| by_long(&self.name))
            }
            None => by_long(&self.name),
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.table {
            Some(table) => write!(f, "{table}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// Every key `T` accepts, in declaration order: the top-level ones that are not tables, then
/// each table's.
pub fn keys_of<T: DeserializeOwned>() -> Vec<Key> {
    let found = Found::default();
    // The first pass offers no field, and records the top-level names.
    probe::<T>(&found, &[]);
    let top: Vec<&'static str> = found
        .borrow()
        .structs
        .first()
        .map(|(_, fields)| fields.to_vec())
        .unwrap_or_default();
    for field in &top {
        probe::<T>(&found, &[field]);
    }
    let found = found.into_inner();
    let tables: Vec<(&'static str, &'static [&'static str])> = found
        .structs
        .iter()
        .filter_map(|(table, fields)| table.map(|t| (t, *fields)))
        .collect();
    let mut keys: Vec<Key> = top
        .iter()
        .filter(|name| !tables.iter().any(|(t, _)| t == *name))
        .map(|name| Key::top(name))
        .collect();
    for (table, fields) in tables {
        keys.extend(fields.iter().map(|name| Key::in_table(table, name)));
    }
    keys
}

/// The keys of `T` whose value is a path (a `PathBuf` field): the ones whose relative paths are
/// relative to the file, as their flags' value hints say (a test keeps the two in step).
#[cfg(test)]
pub fn paths_of<T: DeserializeOwned>() -> Vec<Key> {
    keys_of::<T>()
        .into_iter()
        .filter(|key| {
            let found = Found::default();
            let path: Vec<&str> = match &key.table {
                Some(table) => vec![table, &key.name],
                None => vec![&key.name],
            };
            probe::<T>(&found, &path);
            let found = found.into_inner();
            found
                .leaves
                .iter()
                .any(|(at, expected)| *at == path && expected == "path string")
        })
        .collect()
}

/// One pass of `T`'s `Deserialize` over [`Probe`], offering the fields `path` leads to.
fn probe<T: DeserializeOwned>(found: &Found, path: &[&str]) {
    let _ = T::deserialize(Probe {
        found,
        at: Vec::new(),
        offer: path,
    });
}

/// What the passes saw.
#[derive(Default)]
struct Seen {
    /// (the field holding the struct, if any; the struct's fields).
    structs: Vec<(Option<&'static str>, &'static [&'static str])>,
    /// (the fields leading to a value that is not a struct; what its type expects, as serde
    /// words it: "path string", "a string", ...).
    leaves: Vec<(Vec<String>, String)>,
}

type Found = RefCell<Seen>;

struct Probe<'a> {
    found: &'a Found,
    /// The fields leading to the value this deserializer stands for (none: the document).
    at: Vec<String>,
    /// The fields to offer below it, one a level, if it is asked for a struct.
    offer: &'a [&'a str],
}

impl<'de> de::Deserializer<'de> for Probe<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        let expected = (&visitor as &dyn de::Expected).to_string();
        self.found.borrow_mut().leaves.push((self.at, expected));
        Err(de::Error::custom("not a table"))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_some(self)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let table = self.at.last().map(|field| {
            // The field holding this struct, as its parent struct named it.
            let found = self.found.borrow();
            found
                .structs
                .iter()
                .flat_map(|(_, fields)| fields.iter())
                .find(|f| *f == field)
                .copied()
        });
        let table = table.flatten();
        let mut found = self.found.borrow_mut();
        if !found.structs.iter().any(|(t, _)| *t == table) {
            found.structs.push((table, fields));
        }
        drop(found);
        let (next, rest) = match self.offer.split_first() {
            Some((first, rest)) => (Some(*first), rest),
            None => (None, &[][..]),
        };
        visitor.visit_map(Offer {
            found: self.found,
            at: self.at,
            next,
            rest,
            current: None,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

/// A map of at most one field, whose value is probed in turn.
struct Offer<'a> {
    found: &'a Found,
    at: Vec<String>,
    next: Option<&'a str>,
    rest: &'a [&'a str],
    current: Option<&'a str>,
}

impl<'de> MapAccess<'de> for Offer<'_> {
    type Error = de::value::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        let Some(field) = self.next.take() else {
            return Ok(None);
        };
        self.current = Some(field);
        seed.deserialize(field.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        let mut at = self.at.clone();
        at.extend(self.current.take().map(str::to_owned));
        seed.deserialize(Probe {
            found: self.found,
            at,
            offer: self.rest,
        })
    }
}
