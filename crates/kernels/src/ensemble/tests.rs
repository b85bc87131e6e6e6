use serde_json::{json, Value};

use super::parse::LEAF;
use super::shap::recursive_shap;
use super::*;

/// The JSON `XGBoost` 3.x writes, reduced to the fields the parser reads.
fn model_json(trees: &[RawTree], n_features: usize, base_score: &str) -> Value {
    let trees: Vec<Value> = trees
        .iter()
        .enumerate()
        .map(|(id, t)| {
            let n = t.left.len();
            let ids = |c: &[u32]| -> Vec<i64> {
                c.iter()
                    .map(|&c| if c == LEAF { -1 } else { i64::from(c) })
                    .collect()
            };
            json!({
                "id": id,
                "left_children": ids(&t.left),
                "right_children": ids(&t.right),
                "split_indices": t.feature,
                "split_conditions": t.value,
                "default_left": t.default_left.iter().map(|&d| i32::from(d)).collect::<Vec<_>>(),
                "sum_hessian": t.cover,
                "base_weights": t.value,
                "split_type": vec![0; n],
                "categories": [], "categories_nodes": [],
                "categories_segments": [], "categories_sizes": [],
                "tree_param": {"num_deleted": "0", "num_feature": n_features.to_string(),
                               "num_nodes": n.to_string(), "size_leaf_vector": "1"},
            })
        })
        .collect();
    json!({
        "learner": {
            "attributes": {},
            "feature_names": [], "feature_types": [],
            "gradient_booster": {
                "name": "gbtree",
                "model": {
                    "gbtree_model_param": {"num_parallel_tree": "1",
                                           "num_trees": trees.len().to_string()},
                    "iteration_indptr": (0..=trees.len()).collect::<Vec<_>>(),
                    "tree_info": vec![0; trees.len()],
                    "trees": trees,
                },
            },
            "learner_model_param": {"base_score": base_score, "boost_from_average": "1",
                                    "num_class": "0", "num_feature": n_features.to_string(),
                                    "num_target": "1"},
            "objective": {"name": "binary:logistic", "reg_loss_param": {"scale_pos_weight": "1"}},
        },
        "version": [3, 2, 0],
    })
}

/// Root `x0 < 0.5` (cover 10): left leaf 1.0 (cover 4); right `x1 < 2.0`, missing left (cover 6):
/// leaves 2.0 (cover 3) and -1.0 (cover 3).
fn small_tree() -> RawTree {
    RawTree {
        left: vec![1, LEAF, 3, LEAF, LEAF],
        right: vec![2, LEAF, 4, LEAF, LEAF],
        feature: vec![0, 0, 1, 0, 0],
        value: vec![0.5, 1.0, 2.0, 2.0, -1.0],
        default_left: vec![false, false, true, false, false],
        cover: vec![10.0, 4.0, 6.0, 3.0, 3.0],
    }
}

fn ensemble(trees: &[RawTree], n_features: usize) -> Result<TreeEnsemble, KernelError> {
    TreeEnsemble::from_json(&model_json(trees, n_features, "[5E-1]").to_string())
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * (1.0 + b.abs())
}

#[test]
fn small_tree_margins_and_contributions_by_hand() -> Result<(), KernelError> {
    let model = ensemble(&[small_tree()], 2)?;
    assert_eq!(model.base_margin(), 0.0); // logit(0.5)
                                          // E = 0.4 * 1.0 + 0.6 * (0.5 * 2.0 + 0.5 * -1.0) = 0.7
    assert!(close(model.expected_margin(), 0.7));
    let x = [0.0, 3.0, 1.0, f32::NAN, 1.0, 1.0];
    assert_eq!(model.predict_margin(&x, 3, 2)?, vec![1.0, 2.0, 2.0]);
    let phi = model.shap(&x, 3, 2)?;
    // Row 0: v({}) = 0.7, v({0}) = 1.0, v({1}) = 0.4 - 0.6 = -0.2, v({0, 1}) = 1.0.
    assert!(close(phi[0], 0.75) && close(phi[1], -0.45), "{phi:?}");
    // Row 1 (x1 missing, goes left): v({0}) = 0.5, v({1}) = 0.4 + 1.2 = 1.6, v({0, 1}) = 2.0.
    assert!(close(phi[2], 0.1) && close(phi[3], 1.2), "{phi:?}");
    assert!(close(phi[4], 0.1) && close(phi[5], 1.2), "{phi:?}");
    Ok(())
}

#[test]
fn base_score_forms() -> Result<(), KernelError> {
    for text in ["[5E-1]", "5E-1", "0.5", " [0.5] "] {
        let model = TreeEnsemble::from_json(&model_json(&[small_tree()], 2, text).to_string())?;
        assert_eq!(model.base_score(), 0.5, "{text}");
    }
    let mut doc = model_json(&[small_tree()], 2, "");
    doc["learner"]["learner_model_param"]["base_score"] = json!(0.25);
    let model = TreeEnsemble::from_json(&doc.to_string())?;
    assert_eq!(model.base_margin(), -(1.0f32 / 0.25 - 1.0).ln());
    Ok(())
}

fn rejected(doc: &Value) -> String {
    match TreeEnsemble::from_json(&doc.to_string()) {
        Err(KernelError::Model(msg)) => msg,
        Err(other) => format!("wrong error kind: {other}"),
        Ok(_) => "accepted".to_owned(),
    }
}

#[test]
#[allow(clippy::too_many_lines)]
fn unsupported_models_are_named() {
    let base = model_json(&[small_tree()], 2, "[5E-1]");
    let tree = "/learner/gradient_booster/model/trees/0";
    let param = "/learner/learner_model_param";
    let cases = [
        (
            "dart",
            "/learner/gradient_booster/name".to_owned(),
            json!("dart"),
        ),
        (
            "gblinear",
            "/learner/gradient_booster/name".to_owned(),
            json!("gblinear"),
        ),
        ("multi-class", format!("{param}/num_class"), json!("3")),
        ("multi-target", format!("{param}/num_target"), json!("2")),
        (
            "multi-target",
            format!("{param}/base_score"),
            json!("[5E-1,5E-1]"),
        ),
        (
            "not a probability",
            format!("{param}/base_score"),
            json!("[1.5E0]"),
        ),
        ("not a number", format!("{param}/base_score"), json!("half")),
        (
            "objective \"reg:squarederror\"",
            "/learner/objective/name".to_owned(),
            json!("reg:squarederror"),
        ),
        (
            "categorical splits",
            format!("{tree}/split_type/2"),
            json!(1),
        ),
        (
            "categorical splits",
            format!("{tree}/categories_nodes"),
            json!([2]),
        ),
        (
            "vector leaves",
            format!("{tree}/tree_param/size_leaf_vector"),
            json!("2"),
        ),
        (
            "output group 1",
            "/learner/gradient_booster/model/tree_info/0".to_owned(),
            json!(1),
        ),
        (
            "splits on feature 7",
            format!("{tree}/split_indices/2"),
            json!(7),
        ),
        (
            "only one child",
            format!("{tree}/right_children/2"),
            json!(-1),
        ),
        (
            "invalid or shared child 1",
            format!("{tree}/left_children/2"),
            json!(1),
        ),
        (
            "invalid or shared child 9",
            format!("{tree}/left_children/2"),
            json!(9),
        ),
        (
            "sum_hessian has 4 entries",
            format!("{tree}/sum_hessian"),
            json!([1, 1, 1, 1]),
        ),
        (
            "negative or non-finite sum_hessian",
            format!("{tree}/sum_hessian/1"),
            json!(-1.0),
        ),
        (
            "trees must be an array",
            "/learner/gradient_booster/model/trees".to_owned(),
            json!(3),
        ),
    ];
    for (expected, pointer, value) in cases {
        let mut doc = base.clone();
        if let Some(slot) = doc.pointer_mut(&pointer) {
            *slot = value;
        }
        let msg = rejected(&doc);
        assert!(msg.contains(expected), "expected {expected:?} in {msg:?}");
    }
    let mut doc = base.clone();
    if let Some(model) = doc
        .pointer_mut("/learner/gradient_booster/model")
        .and_then(Value::as_object_mut)
    {
        model.remove("trees");
    }
    assert!(rejected(&doc).contains("learner.gradient_booster.model.trees is missing"));
    assert!(rejected(&json!({"version": [3, 2, 0]})).contains("$.learner is missing"));
    assert!(matches!(
        TreeEnsemble::from_json("{not json"),
        Err(KernelError::Model(msg)) if msg.contains("not valid JSON")
    ));
}

#[test]
fn wrong_shapes_are_refused() -> Result<(), KernelError> {
    let model = ensemble(&[small_tree()], 2)?;
    assert!(matches!(
        model.predict_margin(&[0.0; 3], 1, 3),
        Err(KernelError::Shape(_))
    ));
    assert!(matches!(
        model.shap(&[0.0; 3], 2, 2),
        Err(KernelError::Shape(_))
    ));
    assert_eq!(model.predict_margin(&[], 0, 2)?, Vec::<f64>::new());
    Ok(())
}

/// A small deterministic generator (no dependency needed for tests).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn unit(&mut self) -> f64 {
        self.next() as f64 / f64::from(1u32 << 31)
    }
}

/// A random tree of depth at most `depth` over `n_features` features (few features, so paths
/// split on the same feature several times), with consistent covers.
fn random_tree(rng: &mut Lcg, depth: usize, n_features: u32) -> RawTree {
    let mut t = RawTree {
        left: vec![LEAF],
        right: vec![LEAF],
        feature: vec![0],
        value: vec![0.0],
        default_left: vec![false],
        cover: vec![100.0],
    };
    let mut frontier = vec![(0usize, 0usize)];
    while let Some((node, d)) = frontier.pop() {
        if d >= depth || (d > 1 && rng.next() % 5 == 0) {
            t.value[node] = (rng.unit() * 2.0 - 1.0) as f32;
            continue;
        }
        t.feature[node] = (rng.next() % u64::from(n_features)) as u32;
        t.value[node] = (rng.unit() * 2.0 - 1.0) as f32;
        t.default_left[node] = rng.next() % 2 == 0;
        let share = 0.05 + 0.9 * rng.unit();
        let parent = t.cover[node];
        for c in [share as f32 * parent, (1.0 - share as f32) * parent] {
            t.left.push(LEAF);
            t.right.push(LEAF);
            t.feature.push(0);
            t.value.push(0.0);
            t.default_left.push(false);
            t.cover.push(c);
        }
        let n = t.left.len();
        t.left[node] = (n - 2) as u32;
        t.right[node] = (n - 1) as u32;
        frontier.push((n - 2, d + 1));
        frontier.push((n - 1, d + 1));
    }
    t
}

fn random_rows(rng: &mut Lcg, n: usize, m: usize) -> Vec<f32> {
    (0..n * m)
        .map(|_| {
            if rng.next() % 7 == 0 {
                f32::NAN
            } else {
                (rng.unit() * 2.0 - 1.0) as f32
            }
        })
        .collect()
}

fn reference_margin(trees: &[RawTree], base: f32, row: &[f32]) -> f32 {
    let mut acc = base;
    for t in trees {
        let mut node = 0;
        while !t.is_leaf(node) {
            node = t.next(node, row[t.feature[node] as usize]);
        }
        acc += t.value[node];
    }
    acc
}

/// A chain of `n` splits on distinct features (`x_k < 0`), each with a leaf on the right.
fn chain_tree(n: usize) -> RawTree {
    let mut t = RawTree {
        left: Vec::new(),
        right: Vec::new(),
        feature: Vec::new(),
        value: Vec::new(),
        default_left: Vec::new(),
        cover: Vec::new(),
    };
    let mut cover = 1000.0f32;
    for k in 0..=n {
        let me = t.left.len() as u32;
        let split = k < n;
        t.left.push(if split { me + 2 } else { LEAF });
        t.right.push(if split { me + 1 } else { LEAF });
        t.feature.push(if split { k as u32 } else { 0 });
        t.value.push(if split { 0.0 } else { 0.5 });
        t.default_left.push(k % 2 == 0);
        t.cover.push(cover);
        if split {
            // the right leaf
            t.left.push(LEAF);
            t.right.push(LEAF);
            t.feature.push(0);
            t.value.push(k as f32 / 10.0 - 0.8);
            t.default_left.push(false);
            t.cover.push(cover * 0.3);
            cover *= 0.7;
        }
    }
    t
}

#[test]
fn quadrature_agrees_with_the_recursive_algorithm() -> Result<(), KernelError> {
    let mut rng = Lcg(7);
    let (m, n) = (18, 37);
    // Depths 1..=9 over 3 to 5 features (repeated splits on a path), and a chain of 17
    // distinct features, beyond the quadrature's 16: that one uses the recursion.
    let mut trees: Vec<RawTree> = (0..30)
        .map(|i| random_tree(&mut rng, 1 + i % 9, 3 + (i % 3) as u32))
        .collect();
    trees.push(chain_tree(17));
    trees.push(chain_tree(16));
    let model = ensemble(&trees, m)?;
    assert_eq!(model.shap_method_counts(), (31, 1));
    let x = random_rows(&mut rng, n, m);
    let margins = model.predict_margin(&x, n, m)?;
    let phi = model.shap(&x, n, m)?;
    for r in 0..n {
        let row = &x[r * m..(r + 1) * m];
        assert_eq!(margins[r], f64::from(reference_margin(&trees, 0.0, row)));
        let mut expected = vec![0.0; m];
        for t in &trees {
            recursive_shap(t, row, &mut expected);
        }
        for j in 0..m {
            assert!(
                (phi[r * m + j] - expected[j]).abs() <= 1e-10,
                "row {r} feature {j}: {} vs {}",
                phi[r * m + j],
                expected[j]
            );
        }
        let total: f64 = model.expected_margin() + phi[r * m..(r + 1) * m].iter().sum::<f64>();
        assert!(
            (total - margins[r]).abs() <= 1e-5,
            "row {r}: {total} vs {}",
            margins[r]
        );
    }
    Ok(())
}

#[test]
fn one_row_and_block_paths_agree() -> Result<(), KernelError> {
    let mut rng = Lcg(11);
    let m = 6;
    let trees: Vec<RawTree> = (0..21).map(|_| random_tree(&mut rng, 6, 6)).collect();
    let model = ensemble(&trees, m)?;
    for n in [1, 7, 8, 9, 64, 65, 200] {
        let x = random_rows(&mut rng, n, m);
        let margins = model.predict_margin(&x, n, m)?;
        for (r, row) in x.chunks_exact(m).enumerate() {
            let single = model.predict_margin(row, 1, m)?;
            assert_eq!(margins[r], single[0], "n = {n}, row {r}");
            assert_eq!(margins[r], f64::from(reference_margin(&trees, 0.0, row)));
        }
    }
    Ok(())
}

#[test]
fn zero_cover_child_uses_the_recursion() -> Result<(), KernelError> {
    let mut tree = small_tree();
    tree.cover = vec![10.0, 4.0, 6.0, 0.0, 6.0];
    let model = ensemble(&[tree.clone()], 2)?;
    assert_eq!(model.shap_method_counts(), (0, 1));
    let x = [1.0, 1.0];
    let phi = model.shap(&x, 1, 2)?;
    let mut expected = vec![0.0; 2];
    recursive_shap(&tree, &x, &mut expected);
    assert_eq!(phi, expected);
    assert!(phi.iter().all(|v| v.is_finite()));
    Ok(())
}
