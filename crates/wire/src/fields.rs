//! Every field of the hot messages this codec reads or writes. A test compiles `proto/` and
//! checks this table against it both ways: a field added to one of these messages in the
//! contract, and not taught to the codec, fails the build's tests instead of being dropped
//! silently (decoding) or never sent (encoding).

/// A field's type as the codec handles it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    String,
    Double,
    Int32,
    Bool,
    /// An enum (written as its number).
    Enum(&'static str),
    /// A singular message of the named type.
    Message(&'static str),
    /// `repeated` of the inner kind.
    Repeated(&'static Kind),
    /// `map<string, double>`.
    MapStringDouble,
    /// `map<string, string>`.
    MapStringString,
    /// A `oneof` member message of the named type.
    OneofMessage(&'static str),
}

/// (message, field, number, kind), package `credit.scoring.v1` (messages of other packages are
/// named in full).
pub const FIELDS: &[(&str, &str, u32, Kind)] = &[
    // read
    ("ScoreRequest", "request_id", 1, Kind::String),
    ("ScoreRequest", "applicant", 2, Kind::Message("Applicant")),
    ("ScoreRequest", "explain", 3, Kind::Bool),
    ("Applicant", "applicant_id", 1, Kind::String),
    ("Applicant", "numeric", 2, Kind::MapStringDouble),
    ("Applicant", "categorical", 3, Kind::MapStringString),
    (
        "Applicant",
        "numeric_values",
        4,
        Kind::Repeated(&Kind::Double),
    ),
    ("Applicant", "numeric_values_layout", 5, Kind::String),
    (
        "ScoreBatchRequest",
        "requests",
        1,
        Kind::Repeated(&Kind::Message("ScoreRequest")),
    ),
    // written
    ("ScoreResponse", "request_id", 1, Kind::String),
    ("ScoreResponse", "pd", 2, Kind::Double),
    ("ScoreResponse", "score", 3, Kind::Int32),
    ("ScoreResponse", "decision", 4, Kind::Enum("Decision")),
    ("ScoreResponse", "model", 5, Kind::Message("ModelRef")),
    (
        "ScoreResponse",
        "defaulted_features",
        6,
        Kind::Repeated(&Kind::String),
    ),
    ("ScoreResponse", "degraded", 7, Kind::Bool),
    (
        "ScoreResponse",
        "explanation",
        8,
        Kind::Message("Explanation"),
    ),
    ("ModelRef", "name", 1, Kind::String),
    ("ModelRef", "version", 2, Kind::String),
    ("ModelRef", "variant", 3, Kind::Enum("Variant")),
    ("Explanation", "base_value", 1, Kind::Double),
    (
        "Explanation",
        "contributions",
        2,
        Kind::Repeated(&Kind::Message("FeatureContribution")),
    ),
    (
        "Explanation",
        "reasons",
        3,
        Kind::Repeated(&Kind::Message("ReasonCode")),
    ),
    ("FeatureContribution", "feature", 1, Kind::String),
    ("FeatureContribution", "contribution", 2, Kind::Double),
    ("ReasonCode", "code", 1, Kind::String),
    ("ReasonCode", "text", 2, Kind::String),
    ("ReasonCode", "contribution", 3, Kind::Double),
    (
        "ScoreBatchResponse",
        "results",
        1,
        Kind::Repeated(&Kind::Message("ScoreResponse")),
    ),
    ("ScoreStreamResponse", "request_id", 1, Kind::String),
    (
        "ScoreStreamResponse",
        "response",
        2,
        Kind::OneofMessage("ScoreResponse"),
    ),
    (
        "ScoreStreamResponse",
        "error",
        3,
        Kind::OneofMessage("google.rpc.Status"),
    ),
];

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::PathBuf;

    use prost_types::field_descriptor_proto::{Label, Type};
    use prost_types::{DescriptorProto, FieldDescriptorProto};

    use super::*;

    const PACKAGE: &str = ".credit.scoring.v1.";

    fn short(type_name: &str) -> String {
        type_name.strip_prefix(PACKAGE).map_or_else(
            || type_name.trim_start_matches('.').to_string(),
            str::to_string,
        )
    }

    fn kind_of(message: &DescriptorProto, f: &FieldDescriptorProto) -> String {
        let type_name = short(f.type_name());
        let base = match f.r#type() {
            Type::String => "String".to_string(),
            Type::Double => "Double".to_string(),
            Type::Int32 => "Int32".to_string(),
            Type::Bool => "Bool".to_string(),
            Type::Enum => format!("Enum({type_name:?})"),
            Type::Message => {
                let entry = message.nested_type.iter().find(|n| {
                    f.type_name().ends_with(&format!(".{}", n.name()))
                        && n.options
                            .as_ref()
                            .is_some_and(prost_types::MessageOptions::map_entry)
                });
                if let Some(entry) = entry {
                    let value = entry.field.iter().find(|x| x.number() == 2);
                    return match value.map(FieldDescriptorProto::r#type) {
                        Some(Type::Double) => "MapStringDouble".into(),
                        Some(Type::String) => "MapStringString".into(),
                        other => format!("Map(?{other:?})"),
                    };
                }
                if f.oneof_index.is_some() && !f.proto3_optional() {
                    return format!("OneofMessage({type_name:?})");
                }
                format!("Message({type_name:?})")
            }
            other => format!("{other:?}"),
        };
        if f.label() == Label::Repeated {
            format!("Repeated({base})")
        } else {
            base
        }
    }

    fn table_kind(k: Kind) -> String {
        match k {
            Kind::Repeated(inner) => format!("Repeated({})", table_kind(*inner)),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn the_table_is_the_contract() {
        let proto = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
        let files = match protox::compile(["credit/scoring/v1/scoring.proto"], [&proto]) {
            Ok(f) => f,
            Err(e) => unreachable!("proto/ does not compile: {e}"),
        };
        let scoring = files
            .file
            .iter()
            .find(|f| f.package() == "credit.scoring.v1");
        let Some(scoring) = scoring else {
            unreachable!("no credit.scoring.v1 file")
        };
        let messages: BTreeSet<&str> = FIELDS.iter().map(|(m, ..)| *m).collect();
        let mut in_proto = BTreeMap::new();
        for m in &scoring.message_type {
            if !messages.contains(m.name()) {
                continue;
            }
            for f in &m.field {
                in_proto.insert(
                    (m.name().to_string(), f.name().to_string()),
                    (f.number() as u32, kind_of(m, f)),
                );
            }
        }
        let in_table: BTreeMap<_, _> = FIELDS
            .iter()
            .map(|(m, f, n, k)| (((*m).to_string(), (*f).to_string()), (*n, table_kind(*k))))
            .collect();
        assert_eq!(
            in_table, in_proto,
            "the codec's field table (left) differs from proto/ (right)"
        );
    }
}
