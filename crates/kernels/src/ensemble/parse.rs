//! Reading the JSON model `XGBoost` saves (`booster.save_model("x.json")`): `binary:logistic`,
//! `gbtree`, one output, numeric splits. Everything else is refused with a message naming it.

use serde_json::Value;

use crate::error::KernelError;

/// Child id of a leaf.
pub const LEAF: u32 = u32::MAX;

/// One tree as `XGBoost` stores it: parallel arrays indexed by node id, root at 0.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTree {
    /// Left child id, [`LEAF`] for a leaf.
    pub left: Vec<u32>,
    /// Right child id, [`LEAF`] for a leaf.
    pub right: Vec<u32>,
    /// Split feature (internal nodes).
    pub feature: Vec<u32>,
    /// Split threshold (internal nodes: go left iff `x < value`) or leaf value (leaves).
    pub value: Vec<f32>,
    /// Where a missing value (NaN) goes.
    pub default_left: Vec<bool>,
    /// Sum of hessians of the training rows that reached the node (the `TreeSHAP` weights).
    pub cover: Vec<f32>,
}

impl RawTree {
    #[must_use]
    pub fn is_leaf(&self, node: usize) -> bool {
        self.left[node] == LEAF
    }

    #[must_use]
    pub fn left_of(&self, node: usize) -> usize {
        self.left[node] as usize
    }

    #[must_use]
    pub fn right_of(&self, node: usize) -> usize {
        self.right[node] as usize
    }

    /// The child a value goes to, with `XGBoost`'s semantics: left iff `x < threshold` in
    /// float32, NaN the default way.
    #[must_use]
    pub fn next(&self, node: usize, x: f32) -> usize {
        let left = if x.is_nan() {
            self.default_left[node]
        } else {
            x < self.value[node]
        };
        if left {
            self.left_of(node)
        } else {
            self.right_of(node)
        }
    }

    /// Depth of the deepest leaf (a lone leaf has depth 0).
    #[must_use]
    pub fn depth(&self) -> usize {
        let mut deepest = 0;
        let mut stack = vec![(0usize, 0usize)];
        while let Some((node, d)) = stack.pop() {
            if self.is_leaf(node) {
                deepest = deepest.max(d);
            } else {
                stack.push((self.left_of(node), d + 1));
                stack.push((self.right_of(node), d + 1));
            }
        }
        deepest
    }
}

/// A parsed, validated model.
#[derive(Debug, Clone, PartialEq)]
pub struct RawModel {
    pub n_features: usize,
    /// The base score as `XGBoost` stores it for `binary:logistic` (a probability).
    pub base_score: f32,
    /// `logit(base_score)` computed the way `XGBoost` does (float32), the margin's starting value.
    pub base_margin: f32,
    pub trees: Vec<RawTree>,
}

fn err(msg: impl Into<String>) -> KernelError {
    KernelError::Model(msg.into())
}

fn field<'a>(obj: &'a Value, path: &str, key: &str) -> Result<&'a Value, KernelError> {
    obj.get(key)
        .ok_or_else(|| err(format!("{path}.{key} is missing")))
}

fn array<'a>(obj: &'a Value, path: &str, key: &str) -> Result<&'a Vec<Value>, KernelError> {
    field(obj, path, key)?
        .as_array()
        .ok_or_else(|| err(format!("{path}.{key} must be an array")))
}

/// A parameter `XGBoost` writes as a string (`"13"`) or, in some versions, as a number.
fn param_text(obj: &Value, path: &str, key: &str) -> Result<Option<String>, KernelError> {
    match obj.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_owned())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(err(format!("{path}.{key} must be a string or a number"))),
    }
}

fn param_usize(obj: &Value, path: &str, key: &str) -> Result<Option<usize>, KernelError> {
    param_text(obj, path, key)?
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| err(format!("{path}.{key} = {s:?} is not a count")))
        })
        .transpose()
}

fn ints(obj: &Value, path: &str, key: &str) -> Result<Vec<i64>, KernelError> {
    array(obj, path, key)?
        .iter()
        .map(|v| {
            v.as_i64()
                .ok_or_else(|| err(format!("{path}.{key} must hold integers")))
        })
        .collect()
}

fn floats(obj: &Value, path: &str, key: &str) -> Result<Vec<f32>, KernelError> {
    array(obj, path, key)?
        .iter()
        .map(|v| {
            v.as_f64()
                .map(|x| x as f32)
                .ok_or_else(|| err(format!("{path}.{key} must hold numbers")))
        })
        .collect()
}

/// `"[6.684259E-2]"` (`XGBoost` 3.x), `"6.684259E-2"` (older) or a number.
fn parse_base_score(text: &str) -> Result<f32, KernelError> {
    let inner = text.trim().trim_start_matches('[').trim_end_matches(']');
    if inner.contains(',') {
        return Err(err(format!(
            "base_score {text:?} has several values: multi-target models are not supported"
        )));
    }
    let p: f32 = inner
        .trim()
        .parse()
        .map_err(|_| err(format!("base_score {text:?} is not a number")))?;
    if !(p > 0.0 && p < 1.0) {
        return Err(err(format!(
            "base_score {p} is not a probability in (0, 1) as binary:logistic requires"
        )));
    }
    Ok(p)
}

/// Parse and validate an `XGBoost` JSON model.
pub fn parse(text: &str) -> Result<RawModel, KernelError> {
    let root: Value =
        serde_json::from_str(text).map_err(|e| err(format!("not valid JSON: {e}")))?;
    let learner = field(&root, "$", "learner")?;
    let booster = field(learner, "learner", "gradient_booster")?;
    match field(booster, "learner.gradient_booster", "name")?.as_str() {
        Some("gbtree") => {}
        Some("dart") => return Err(err("dart boosters are not supported (only gbtree)")),
        Some("gblinear") => return Err(err("linear boosters (gblinear) are not supported")),
        other => {
            return Err(err(format!(
                "booster {other:?} is not supported (only gbtree)"
            )))
        }
    }
    let mp_path = "learner.learner_model_param";
    let model_param = field(learner, "learner", "learner_model_param")?;
    let num_class = param_usize(model_param, mp_path, "num_class")?.unwrap_or(0);
    if num_class > 1 {
        return Err(err(format!(
            "multi-class models are not supported (num_class = {num_class})"
        )));
    }
    let num_target = param_usize(model_param, mp_path, "num_target")?.unwrap_or(1);
    if num_target != 1 {
        return Err(err(format!(
            "multi-target models are not supported (num_target = {num_target})"
        )));
    }
    let objective = field(learner, "learner", "objective")?;
    match field(objective, "learner.objective", "name")?.as_str() {
        Some("binary:logistic") => {}
        Some(other) => {
            return Err(err(format!(
                "objective {other:?} is not supported (only binary:logistic)"
            )))
        }
        None => return Err(err("learner.objective.name must be a string")),
    }
    let n_features = param_usize(model_param, mp_path, "num_feature")?
        .ok_or_else(|| err(format!("{mp_path}.num_feature is missing")))?;
    if n_features == 0 {
        return Err(err("the model has no features (num_feature = 0)"));
    }
    let base_score = parse_base_score(
        &param_text(model_param, mp_path, "base_score")?
            .ok_or_else(|| err(format!("{mp_path}.base_score is missing")))?,
    )?;
    // XGBoost's ProbToMargin, in float32: -log(1/p - 1).
    let base_margin = -(1.0f32 / base_score - 1.0f32).ln();

    let model_path = "learner.gradient_booster.model";
    let model = field(booster, "learner.gradient_booster", "model")?;
    if let Some(n) = param_usize(
        field(model, model_path, "gbtree_model_param").unwrap_or(&Value::Null),
        &format!("{model_path}.gbtree_model_param"),
        "num_parallel_tree",
    )? {
        if n == 0 {
            return Err(err("num_parallel_tree = 0"));
        }
    }
    let trees_json = array(model, model_path, "trees")?;
    if let Ok(info) = ints(model, model_path, "tree_info") {
        if let Some((t, g)) = info.iter().enumerate().find(|(_, g)| **g != 0) {
            return Err(err(format!(
                "tree {t} belongs to output group {g}: multi-class models are not supported"
            )));
        }
    }
    let trees = trees_json
        .iter()
        .enumerate()
        .map(|(t, tree)| parse_tree(tree, &format!("{model_path}.trees[{t}]"), n_features))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RawModel {
        n_features,
        base_score,
        base_margin,
        trees,
    })
}

fn parse_tree(tree: &Value, path: &str, n_features: usize) -> Result<RawTree, KernelError> {
    let tree_param = field(tree, path, "tree_param")?;
    let leaf_size = param_usize(
        tree_param,
        &format!("{path}.tree_param"),
        "size_leaf_vector",
    )?;
    if let Some(size @ 2..) = leaf_size {
        return Err(err(format!(
            "{path}: vector leaves (size_leaf_vector = {size}, multi-target trees) are not supported"
        )));
    }
    if let Some(split_type) = tree.get("split_type") {
        let types = split_type
            .as_array()
            .ok_or_else(|| err(format!("{path}.split_type must be an array")))?;
        if let Some(node) = types.iter().position(|t| t.as_i64() != Some(0)) {
            return Err(err(format!(
                "{path}: categorical splits are not supported (node {node})"
            )));
        }
    }
    if let Some(cats) = tree.get("categories_nodes").and_then(Value::as_array) {
        if let Some(node) = cats.first() {
            return Err(err(format!(
                "{path}: categorical splits are not supported (node {node})"
            )));
        }
    }
    let left = ints(tree, path, "left_children")?;
    let right = ints(tree, path, "right_children")?;
    let split_indices = ints(tree, path, "split_indices")?;
    let value = floats(tree, path, "split_conditions")?;
    let default_left = ints(tree, path, "default_left")?;
    let cover = floats(tree, path, "sum_hessian")?;
    let n_nodes = left.len();
    if n_nodes == 0 {
        return Err(err(format!("{path} has no nodes")));
    }
    for (name, len) in [
        ("right_children", right.len()),
        ("split_indices", split_indices.len()),
        ("split_conditions", value.len()),
        ("default_left", default_left.len()),
        ("sum_hessian", cover.len()),
    ] {
        if len != n_nodes {
            return Err(err(format!(
                "{path}.{name} has {len} entries, left_children has {n_nodes}"
            )));
        }
    }
    let tree = RawTree {
        left: children(&left, n_nodes),
        right: children(&right, n_nodes),
        feature: split_indices
            .iter()
            .map(|&f| u32::try_from(f).unwrap_or(u32::MAX))
            .collect(),
        value,
        default_left: default_left.iter().map(|&d| d != 0).collect(),
        cover,
    };
    check_structure(&tree, &left, &right, path, n_features)?;
    Ok(tree)
}

/// Child ids as stored: `-1` is a leaf; anything out of range becomes `n_nodes` (caught by
/// [`check_structure`] if reachable).
fn children(ids: &[i64], n_nodes: usize) -> Vec<u32> {
    ids.iter()
        .map(|&c| match usize::try_from(c) {
            Ok(c) if c < n_nodes => c as u32,
            _ if c == -1 => LEAF,
            _ => n_nodes as u32,
        })
        .collect()
}

/// Every node reachable from the root: a leaf with a finite value, or a split on a known feature
/// with two children not seen before (a tree, no cycles or shared nodes); covers finite and ≥ 0.
fn check_structure(
    tree: &RawTree,
    left: &[i64],
    right: &[i64],
    path: &str,
    n_features: usize,
) -> Result<(), KernelError> {
    let n_nodes = tree.left.len();
    let mut seen = vec![false; n_nodes];
    let mut stack = vec![0usize];
    seen[0] = true;
    while let Some(node) = stack.pop() {
        let value = tree.value[node];
        if value.is_nan() || (tree.is_leaf(node) && !value.is_finite()) {
            return Err(err(format!(
                "{path}: node {node} has a non-finite value or threshold"
            )));
        }
        let cover = tree.cover[node];
        if !(cover >= 0.0 && cover.is_finite()) {
            return Err(err(format!(
                "{path}: node {node} has a negative or non-finite sum_hessian"
            )));
        }
        match (tree.left[node] == LEAF, tree.right[node] == LEAF) {
            (true, true) => continue,
            (true, false) | (false, true) => {
                return Err(err(format!("{path}: node {node} has only one child")));
            }
            (false, false) => {}
        }
        let feature = tree.feature[node];
        if feature as usize >= n_features {
            return Err(err(format!(
                "{path}: node {node} splits on feature {feature}, the model has {n_features}"
            )));
        }
        for (child, id) in [
            (tree.left[node], left[node]),
            (tree.right[node], right[node]),
        ] {
            let child = child as usize;
            if child >= n_nodes || seen[child] {
                return Err(err(format!(
                    "{path}: node {node} has an invalid or shared child {id}"
                )));
            }
            seen[child] = true;
            stack.push(child);
        }
    }
    Ok(())
}
