//! Row validation, written once for every source of a row.
//!
//! A source (protobuf bytes, a Python dict, a feature-store record) implements [`RowInput`] and
//! pushes what it holds into a [`RowBuilder`]: map entries by name, or the dense
//! `numeric_values` vector. The builder resolves names against the plan and records the
//! map-level problems (an unknown name, a name sent in the other map, a value of the wrong
//! type); [`Plan::evaluate`] then checks every value against the spec and computes the model
//! vector. So a rule (and its message) exists once, whatever the row came from.
//!
//! Work and memory are linear in the row's size: names are found through the plan's index, a bad
//! name is remembered once (a hash set), and at most [`MAX_LISTED_MAP_VIOLATIONS`] map-level
//! problems are listed per row; the rest are counted in one closing violation.

use std::collections::HashSet;

use crate::error::{Violation, ViolationKind};
use crate::fmt::echo;
use crate::plan::{InputSlot, Plan, RowInputs};

/// Most map-level violations (unknown or misplaced names) listed for one row.
pub const MAX_LISTED_MAP_VIOLATIONS: usize = 32;

/// A source of one row's inputs.
pub trait RowInput {
    type Error;

    /// Push every entry into `row`, in the source's order.
    fn read_into(self, row: &mut RowBuilder<'_>) -> Result<(), Self::Error>;
}

/// Which map an entry came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Map {
    Numeric = 0,
    Categorical = 1,
}

impl Map {
    fn prefix(self) -> &'static str {
        match self {
            Map::Numeric => "numeric.",
            Map::Categorical => "categorical.",
        }
    }
}

/// One row's inputs as sent, resolved against the plan, not yet checked value by value.
#[derive(Debug, Clone)]
pub struct RawRow {
    /// Value of each numeric input (plan order), `None` when not given.
    pub numeric: Vec<Option<f64>>,
    /// Value of each categorical input (plan order), `None` when not given.
    pub categorical: Vec<Option<String>>,
    /// Per input (index into the spec's inputs): whether the source named it at all.
    pub sent: Vec<bool>,
    /// Per input: already reported (wrong map or wrong value type), so not reported missing.
    misplaced: Vec<bool>,
    /// Map-level problems, in the source's order.
    pub violations: Vec<Violation>,
}

impl RawRow {
    /// An empty row for `plan` (nothing sent).
    #[must_use]
    pub fn empty(plan: &Plan) -> Self {
        Self {
            numeric: vec![None; plan.numeric_inputs.len()],
            categorical: vec![None; plan.categorical_inputs.len()],
            sent: vec![false; plan.def.inputs.len()],
            misplaced: vec![false; plan.def.inputs.len()],
            violations: Vec::new(),
        }
    }
}

/// Collects one row's entries (see the module docs).
pub struct RowBuilder<'p> {
    plan: &'p Plan,
    row: RawRow,
    numeric_bad: Vec<Violation>,
    categorical_bad: Vec<Violation>,
    reported: HashSet<(Map, Box<str>)>,
    /// Map-level problems beyond the listed ones, per map.
    unlisted: [usize; 2],
    /// Whether the numeric map had any entry (known or not).
    numeric_sent: bool,
    /// `numeric_values`, every occurrence appended (repeated fields concatenate).
    dense: Vec<f64>,
    dense_sent: bool,
}

impl<'p> RowBuilder<'p> {
    #[must_use]
    pub fn new(plan: &'p Plan) -> Self {
        Self {
            plan,
            row: RawRow::empty(plan),
            numeric_bad: Vec::new(),
            categorical_bad: Vec::new(),
            reported: HashSet::new(),
            unlisted: [0, 0],
            numeric_sent: false,
            dense: Vec::new(),
            dense_sent: false,
        }
    }

    #[must_use]
    pub fn plan(&self) -> &'p Plan {
        self.plan
    }

    /// A `numeric` map entry; the last entry of a name wins.
    pub fn numeric(&mut self, key: &str, value: f64) {
        self.numeric_sent = true;
        match self.plan.by_name.get(key) {
            Some(InputSlot::Numeric(i)) => {
                self.row.numeric[*i] = Some(value);
                self.row.sent[self.plan.numeric_inputs[*i]] = true;
            }
            Some(InputSlot::Categorical(i)) => {
                let input = self.plan.categorical_inputs[*i];
                self.misplaced(Map::Numeric, key, input, || {
                    format!(
                        "wrong type: {:?} is categorical; send it in the categorical map",
                        echo(key)
                    )
                });
            }
            None => self.unknown(Map::Numeric, key),
        }
    }

    /// A `numeric` map entry whose value is not a number (a Python dict can hold anything).
    pub fn numeric_not_a_number(&mut self, key: &str) {
        self.numeric_sent = true;
        match self.plan.by_name.get(key) {
            Some(InputSlot::Numeric(i)) => {
                let input = self.plan.numeric_inputs[*i];
                self.row.numeric[*i] = None;
                self.misplaced(Map::Numeric, key, input, || {
                    "wrong type: must be a number".to_string()
                });
            }
            Some(InputSlot::Categorical(_)) => self.numeric(key, f64::NAN),
            None => self.unknown(Map::Numeric, key),
        }
    }

    /// A `categorical` map entry; the last entry of a name wins.
    pub fn categorical(&mut self, key: &str, value: &str) {
        match self.plan.by_name.get(key) {
            Some(InputSlot::Categorical(i)) => {
                match &mut self.row.categorical[*i] {
                    Some(s) => value.clone_into(s),
                    none => *none = Some(value.to_owned()),
                }
                self.row.sent[self.plan.categorical_inputs[*i]] = true;
            }
            Some(InputSlot::Numeric(i)) => {
                let input = self.plan.numeric_inputs[*i];
                self.misplaced(Map::Categorical, key, input, || {
                    format!(
                        "wrong type: {:?} is numeric; send it in the numeric map",
                        echo(key)
                    )
                });
            }
            None => self.unknown(Map::Categorical, key),
        }
    }

    /// A `categorical` map entry whose value is not a string.
    pub fn categorical_not_a_string(&mut self, key: &str) {
        match self.plan.by_name.get(key) {
            Some(InputSlot::Categorical(i)) => {
                let input = self.plan.categorical_inputs[*i];
                self.row.categorical[*i] = None;
                self.misplaced(Map::Categorical, key, input, || {
                    "wrong type: must be a string".to_string()
                });
            }
            Some(InputSlot::Numeric(_)) => self.categorical(key, ""),
            None => self.unknown(Map::Categorical, key),
        }
    }

    /// Values of the dense `numeric_values` vector (may come in several pieces).
    pub fn numeric_values(&mut self, values: impl IntoIterator<Item = f64>) {
        self.dense_sent = true;
        self.dense.extend(values);
    }

    fn unknown(&mut self, map: Map, key: &str) {
        if self.reported.len() >= MAX_LISTED_MAP_VIOLATIONS {
            if !self.reported.contains(&(map, Box::from(key))) {
                self.unlisted[map as usize] += 1;
            }
            return;
        }
        if self.reported.insert((map, Box::from(key))) {
            let v = Violation::new(
                format!("{}{}", map.prefix(), echo(key)),
                ViolationKind::UnknownFeature,
                "unknown feature",
            );
            self.bad(map).push(v);
        }
    }

    fn misplaced(&mut self, map: Map, key: &str, input: usize, describe: impl FnOnce() -> String) {
        self.row.sent[input] = true;
        self.row.misplaced[input] = true;
        if self.reported.contains(&(map, Box::from(key))) {
            return;
        }
        if self.reported.len() >= MAX_LISTED_MAP_VIOLATIONS {
            self.unlisted[map as usize] += 1;
            return;
        }
        self.reported.insert((map, Box::from(key)));
        let v = Violation::new(
            format!("{}{}", map.prefix(), key),
            ViolationKind::WrongType,
            describe(),
        );
        self.bad(map).push(v);
    }

    fn bad(&mut self, map: Map) -> &mut Vec<Violation> {
        match map {
            Map::Numeric => &mut self.numeric_bad,
            Map::Categorical => &mut self.categorical_bad,
        }
    }

    /// The row, with its map-level violations: `numeric_values` first, then the numeric map's,
    /// then the categorical map's, each in first-occurrence order (a Python dict built from the
    /// same entries has that order).
    #[must_use]
    pub fn finish(self) -> RawRow {
        let Self {
            plan,
            mut row,
            numeric_bad,
            categorical_bad,
            unlisted,
            numeric_sent,
            dense,
            dense_sent,
            ..
        } = self;
        let mut violations = Vec::new();
        if dense_sent && !dense.is_empty() {
            match dense_violation(numeric_sent, dense.len(), row.numeric.len()) {
                Some(v) => violations.push(v),
                None => {
                    for (slot, (value, v)) in row.numeric.iter_mut().zip(dense).enumerate() {
                        if !v.is_nan() {
                            *value = Some(v);
                            row.sent[plan.numeric_inputs[slot]] = true;
                        }
                    }
                }
            }
        }
        violations.extend(numeric_bad);
        violations.extend(categorical_bad);
        for (map, n) in [(Map::Numeric, unlisted[0]), (Map::Categorical, unlisted[1])] {
            if n > 0 {
                violations.push(Violation::new(
                    map.prefix().trim_end_matches('.'),
                    ViolationKind::TooManyViolations,
                    format!("{n} more entries with unknown or misplaced names (not listed)"),
                ));
            }
        }
        row.violations = violations;
        row
    }
}

/// What is wrong with an applicant's `numeric_values` (`n` of them, `expected` wanted), if
/// anything.
#[must_use]
pub fn dense_violation(numeric_sent: bool, n: usize, expected: usize) -> Option<Violation> {
    if numeric_sent {
        Some(Violation::new(
            "numeric_values",
            ViolationKind::BadNumericValues,
            "send the numeric inputs in `numeric` or in `numeric_values`, not both",
        ))
    } else if n != expected {
        Some(Violation::new(
            "numeric_values",
            ViolationKind::BadNumericValues,
            format!(
                "expected {expected} values (the numeric inputs in GetModelInfo order), got {n}"
            ),
        ))
    } else {
        None
    }
}

impl Plan {
    /// Read one row from `input` (map-level checks only).
    pub fn read<I: RowInput>(&self, input: I) -> Result<RawRow, I::Error> {
        let mut builder = RowBuilder::new(self);
        input.read_into(&mut builder)?;
        Ok(builder.finish())
    }

    /// Check every value of `raw` against the spec and write the model vector into `out` (len
    /// `n_outputs`; `scratch` len `n_slots`). Returns the row's violations, map-level ones first;
    /// when there are any, `out` is all NaN.
    pub fn evaluate(&self, raw: RawRow, scratch: &mut [f64], out: &mut [f32]) -> Vec<Violation> {
        let RawRow {
            numeric,
            categorical,
            misplaced,
            mut violations,
            ..
        } = raw;
        let mut values = Vec::with_capacity(numeric.len());
        for (slot, input_idx) in self.numeric_inputs.iter().enumerate() {
            let input = &self.def.inputs[*input_idx];
            if numeric[slot].is_none() && misplaced[*input_idx] {
                values.push(f64::NAN);
                continue;
            }
            let field = self.field_of(*input_idx);
            values.push(self.prepare_numeric(input, numeric[slot], field, &mut violations));
        }
        let mut cats = Vec::with_capacity(categorical.len());
        for (slot, input_idx) in self.categorical_inputs.iter().enumerate() {
            let input = &self.def.inputs[*input_idx];
            if categorical[slot].is_none() && misplaced[*input_idx] {
                cats.push(None);
                continue;
            }
            let field = self.field_of(*input_idx);
            cats.push(self.prepare_categorical(
                input,
                categorical[slot].as_deref(),
                field,
                &mut violations,
            ));
        }
        let row = RowInputs {
            numeric: values,
            categorical: cats,
        };
        self.eval_row(&row, scratch, out, &mut violations);
        if !violations.is_empty() {
            out.fill(f32::NAN);
        }
        violations
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn plan() -> Plan {
        let json = r#"{"name":"t","version":1,"inputs":[
            {"name":"x","kind":"number","required":true,"min":0.0,"max":null,"missing":{"strategy":"nan"}},
            {"name":"y","kind":"number","required":false,"min":null,"max":null,"missing":{"strategy":"nan"}},
            {"name":"c","kind":"categorical","required":false,"min":null,"max":null,"missing":{"strategy":"nan"}}],
            "features":[
            {"name":"x","op":{"kind":"value","input":"x"},"output":true},
            {"name":"y","op":{"kind":"value","input":"y"},"output":true},
            {"name":"c","op":{"kind":"one_hot","input":"c","categories":["a","b"],"unknown":"error"},"output":true}]}"#;
        match Plan::from_json(json) {
            Ok(p) => p,
            Err(e) => unreachable!("test plan: {e}"),
        }
    }

    fn eval(p: &Plan, raw: RawRow) -> (Vec<f32>, Vec<(String, &'static str)>) {
        let mut scratch = vec![0.0; p.n_slots()];
        let mut out = vec![0.0f32; p.n_outputs()];
        let v = p.evaluate(raw, &mut scratch, &mut out);
        (
            out,
            v.into_iter().map(|v| (v.field, v.kind.reason())).collect(),
        )
    }

    #[test]
    fn maps_resolve_and_report_once_in_order() {
        let p = plan();
        let mut b = RowBuilder::new(&p);
        b.numeric("zz", 1.0);
        b.numeric("x", 5.0);
        b.numeric("c", 1.0);
        b.numeric("zz", 2.0);
        b.categorical("x", "oops");
        b.categorical("c", "b");
        let (out, v) = eval(&p, b.finish());
        assert!(out.iter().all(|x| x.is_nan()));
        assert_eq!(
            v,
            [
                ("numeric.zz".to_string(), "UNKNOWN_FEATURE"),
                ("numeric.c".to_string(), "WRONG_TYPE"),
                ("categorical.x".to_string(), "WRONG_TYPE"),
            ]
        );
        let mut b = RowBuilder::new(&p);
        b.numeric("x", 2.0);
        b.categorical("c", "b");
        let (out, v) = eval(&p, b.finish());
        assert!(v.is_empty());
        assert_eq!(out[0], 2.0);
        assert!(out[1].is_nan());
        assert_eq!(&out[2..], [0.0, 1.0]);
    }

    #[test]
    fn dense_values_fill_the_numeric_inputs() {
        let p = plan();
        let mut b = RowBuilder::new(&p);
        b.numeric_values([3.0, f64::NAN]);
        let raw = b.finish();
        assert_eq!(raw.sent, [true, false, false]);
        let (out, v) = eval(&p, raw);
        assert!(v.is_empty());
        assert_eq!(out[0], 3.0);
        let mut b = RowBuilder::new(&p);
        b.numeric_values([3.0]);
        let (_, v) = eval(&p, b.finish());
        assert_eq!(v[0], ("numeric_values".to_string(), "BAD_NUMERIC_VALUES"));
        let mut b = RowBuilder::new(&p);
        b.numeric("y", 1.0);
        b.numeric_values([3.0, 1.0]);
        let (_, v) = eval(&p, b.finish());
        assert_eq!(v[0], ("numeric_values".to_string(), "BAD_NUMERIC_VALUES"));
    }

    #[test]
    fn unknown_names_are_linear_and_bounded() {
        let p = plan();
        let mut b = RowBuilder::new(&p);
        for i in 0..80_000 {
            b.numeric(&format!("unknown-{i}"), 1.0);
            b.numeric("unknown-0", 1.0); // repeated: counted once
        }
        b.numeric("x", 1.0);
        let raw = b.finish();
        assert_eq!(raw.violations.len(), MAX_LISTED_MAP_VIOLATIONS + 1);
        let last = &raw.violations[MAX_LISTED_MAP_VIOLATIONS];
        assert_eq!(last.kind, ViolationKind::TooManyViolations);
        assert!(last
            .description
            .starts_with(&format!("{} more", 80_000 - MAX_LISTED_MAP_VIOLATIONS)));
    }

    #[test]
    fn long_names_are_cut_in_messages() {
        let p = plan();
        let mut b = RowBuilder::new(&p);
        b.numeric(&"k".repeat(20_000), 1.0);
        let raw = b.finish();
        assert!(raw.violations[0].field.len() < 120);
    }
}
