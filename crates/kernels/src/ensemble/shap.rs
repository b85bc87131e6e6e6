//! Exact path-dependent `TreeSHAP` (the quantity `XGBoost`'s `pred_contribs=True` computes), in
//! `O(nodes · Q)` per tree and row with coefficients computed once per model.
//!
//! For a leaf with value `v` whose path splits on the distinct features `U`, let `z_j` be the
//! share of the training cover that follows the path at the splits on `j` (the product over them
//! of `cover(child) / cover(node)`, so a feature split several times counts once, as `TreeSHAP`'s
//! unwinding does) and `o_j ∈ {0, 1}` whether the row follows all of them. The Shapley weights
//! are Beta integrals, `s! (d − 1 − s)! / d! = ∫₀¹ yˢ (1 − y)^(d−1−s) dy`, which turns the leaf's
//! part of `φ_i` into
//!
//! ```text
//! φ_i = v · W · ∫₀¹ C(y) · α_i / (1 + α_i y) dy,   C(y) = Π_{j ∈ U} (1 + α_j y),
//! α_j = o_j / z_j − 1,  W = Π_{j ∈ U} z_j,
//! ```
//!
//! a polynomial of degree `< d` in `y`, so Gauss-Legendre quadrature with `Q = ⌈d / 2⌉` points is
//! exact. `C` is built top-down (each edge multiplies it by `(1 + α_new y) / (1 + α_old y)` for
//! its feature), the leaves' `v · W · ω_q · C(y_q)` are summed bottom-up, and each edge adds
//! `Σ_q H_q · (α_new / (1 + α_new y_q) − α_old / (1 + α_old y_q))` to its feature; along a path
//! these terms telescope to the formula above (recent `XGBoost` sources use such a quadrature;
//! Linear `TreeSHAP`, Yu et al. 2022, rests on the same polynomial view). Every edge's factors depend on
//! the row only through two bits (does the row take this edge, did it follow the earlier splits
//! on the feature), so they are precomputed for each case. Trees whose cover fractions include a
//! zero, or with more than 16 distinct features on a path, use the recursive algorithm (float64).

use std::ops::Range;

use super::parse::RawTree;
use crate::error::KernelError;

/// Most distinct features on a path for the quadrature (8 points).
const MAX_QUAD_DEPTH: usize = 16;
/// Rows per block: each tree is applied to a block of rows while its coefficients are in cache.
const BLOCK_ROWS: usize = 16;
const DEFAULT_LEFT: u32 = 1 << 31;

/// An internal node of a quadrature tree. Nodes are numbered breadth-first per tree, so the
/// children of the `j`-th split are nodes `2j + 1` and `2j + 2`.
#[derive(Debug, Clone, Copy)]
struct Split {
    /// Split feature; bit 31: missing goes left.
    feature: u32,
    threshold: f32,
    /// This split's node number.
    node: u32,
    /// Whether the row still follows this split's feature is `case[ancestor >> 1] ==
    /// ancestor & 1`: the nearest split above on the same feature (or a sentinel slot holding 0
    /// for the first split on it) must have sent the row into the subtree this split is in (case
    /// 0: left, 1: right).
    ancestor: u32,
}

impl Split {
    #[inline]
    fn goes_left(self, row: &[f32]) -> u32 {
        let x = row[(self.feature & !DEFAULT_LEFT) as usize];
        u32::from(x < self.threshold) | (u32::from(x.is_nan()) & (self.feature >> 31))
    }
}

/// A tree's structure and cover fractions, before any quadrature is chosen.
struct TreePlan {
    n_nodes: usize,
    splits: Vec<Split>,
    /// Per split: cover fractions of the left and right child, and the product of the fractions
    /// of the earlier splits on the same feature on this path (`None`: first split on it).
    edges: Vec<(f64, f64, Option<f64>)>,
    /// Leaf node numbers with `value × Π fractions on the path`.
    leaves: Vec<(u32, f64)>,
    /// Most distinct features on one path.
    depth: usize,
}

impl TreePlan {
    /// `None` when a cover fraction is zero or not finite, or a path has too many features.
    fn new(tree: &RawTree) -> Option<Self> {
        let mut order = vec![0usize];
        let mut number = vec![0u32; tree.left.len()];
        let mut next = 0;
        while next < order.len() {
            let node = order[next];
            number[node] = next as u32;
            if !tree.is_leaf(node) {
                order.push(tree.left_of(node));
                order.push(tree.right_of(node));
            }
            next += 1;
        }
        // Per node: distinct features of its path (root first), their fractions so far, the
        // latest split on each (split index, side) and the product of all fractions.
        let mut paths: Vec<Path> = vec![Path::default(); order.len()];
        let mut plan = Self {
            n_nodes: order.len(),
            splits: Vec::new(),
            edges: Vec::new(),
            leaves: Vec::new(),
            depth: 0,
        };
        for (i, &node) in order.iter().enumerate() {
            let path = std::mem::take(&mut paths[i]);
            if tree.is_leaf(node) {
                plan.depth = plan.depth.max(path.features.len());
                plan.leaves
                    .push((i as u32, f64::from(tree.value[node]) * path.weight));
                continue;
            }
            let feature = tree.feature[node];
            let (left, right) = (tree.left_of(node), tree.right_of(node));
            let cover = f64::from(tree.cover[node]);
            let (fl, fr) = (
                f64::from(tree.cover[left]) / cover,
                f64::from(tree.cover[right]) / cover,
            );
            if !(fl > 0.0 && fr > 0.0 && fl.is_finite() && fr.is_finite()) {
                return None;
            }
            let seen = path.features.iter().position(|&g| g == feature);
            let slot = seen.unwrap_or(path.features.len());
            if slot >= MAX_QUAD_DEPTH {
                return None;
            }
            let index = plan.splits.len() as u32;
            for (side, child, fraction) in [(0, left, fl), (1, right, fr)] {
                let mut next = path.clone();
                if slot == next.features.len() {
                    next.features.push(feature);
                    next.z.push(fraction);
                    next.latest.push((index, side));
                } else {
                    next.z[slot] *= fraction;
                    next.latest[slot] = (index, side);
                }
                next.weight *= fraction;
                paths[number[child] as usize] = next;
            }
            debug_assert_eq!(number[left], 2 * index + 1);
            // First split on the feature: a sentinel slot that always holds case 0.
            let (ancestor, dir) = seen.map_or((u32::MAX, 0), |k| path.latest[k]);
            plan.splits.push(Split {
                feature: feature
                    | if tree.default_left[node] {
                        DEFAULT_LEFT
                    } else {
                        0
                    },
                threshold: tree.value[node],
                node: i as u32,
                ancestor: (ancestor << 1) | dir,
            });
            plan.edges.push((fl, fr, seen.map(|k| path.z[k])));
        }
        let sentinel = plan.splits.len() as u32;
        for split in &mut plan.splits {
            if split.ancestor >> 1 == u32::MAX >> 1 {
                split.ancestor = sentinel << 1;
            }
        }
        Some(plan)
    }
}

/// What [`TreePlan::new`] knows of a node's path.
#[derive(Debug, Clone)]
struct Path {
    features: Vec<u32>,
    z: Vec<f64>,
    latest: Vec<(u32, u32)>,
    weight: f64,
}

impl Default for Path {
    fn default() -> Self {
        Self {
            features: Vec::new(),
            z: Vec::new(),
            latest: Vec::new(),
            weight: 1.0,
        }
    }
}

/// One split's factors. Case 0: the row goes left; 1: right; 2: the row left the path at an
/// earlier split on this feature (nothing changes). `r[case][child]` (child 0 = left) multiplies
/// `C` on the way down (times the leaf's `v · W · ω` when the child is a leaf). `e` extracts the
/// edges' contributions from `H` on the way up: `[taken left, not taken, taken right]`, so case
/// `k` reads `(e[k], e[k + 1])`; case 2 contributes nothing.
#[derive(Debug, Clone, Copy)]
struct Coefs<const Q: usize> {
    r: [[[f64; Q]; 2]; 3],
    e: [[f64; Q]; 3],
}

#[derive(Debug, Clone)]
struct QuadTree {
    n_nodes: usize,
    splits: Range<usize>,
}

/// The trees explained with a `Q`-point rule.
#[derive(Debug, Clone)]
struct QuadSet<const Q: usize> {
    trees: Vec<QuadTree>,
    splits: Vec<Split>,
    coefs: Vec<Coefs<Q>>,
    max_nodes: usize,
}

/// Per-row working memory of a [`QuadSet`].
struct SetScratch<const Q: usize> {
    /// `C`, then `H`, per node.
    c: Vec<[f64; Q]>,
    /// Per split: the case taken on the way down.
    case: Vec<u8>,
    /// Per row and feature, the contributions per quadrature point.
    acc: Vec<[f64; Q]>,
}

impl<const Q: usize> QuadSet<Q> {
    fn new() -> Self {
        Self {
            trees: Vec::new(),
            splits: Vec::new(),
            coefs: Vec::new(),
            max_nodes: 0,
        }
    }

    fn bytes(&self) -> usize {
        self.trees.len() * std::mem::size_of::<QuadTree>()
            + self.splits.len() * std::mem::size_of::<Split>()
            + self.coefs.len() * std::mem::size_of::<Coefs<Q>>()
    }

    fn push(&mut self, plan: TreePlan) {
        if plan.splits.is_empty() {
            return; // a lone leaf: all of it is in the base value
        }
        let (y, omega) = gauss_legendre(Q);
        let mut leaf_weight: Vec<Option<[f64; Q]>> = vec![None; plan.n_nodes];
        for &(node, vw) in &plan.leaves {
            leaf_weight[node as usize] = Some(std::array::from_fn(|q| vw * omega[q]));
        }
        let first_split = self.splits.len();
        for (j, &(fl, fr, z_old)) in plan.edges.iter().enumerate() {
            // α = o / z − 1 of the feature before this split (o = 1; unseen: α = 0) and after it:
            // o / (z · fraction) − 1 on the child the row takes, −1 (o = 0) on the other.
            let alpha_old = z_old.map_or(0.0, |z| 1.0 / z - 1.0);
            let z_before = z_old.unwrap_or(1.0);
            let taken = |fraction: f64| 1.0 / (z_before * fraction) - 1.0;
            let weights = [leaf_weight[2 * j + 1], leaf_weight[2 * j + 2]];
            let r = |a: f64, child: usize| -> [f64; Q] {
                let w = weights[child].unwrap_or([1.0; Q]);
                std::array::from_fn(|q| w[q] * (1.0 + a * y[q]) / (1.0 + alpha_old * y[q]))
            };
            let e = |a: f64| -> [f64; Q] {
                std::array::from_fn(|q| a / (1.0 + a * y[q]) - alpha_old / (1.0 + alpha_old * y[q]))
            };
            let cases = [[taken(fl), -1.0], [-1.0, taken(fr)]];
            let dead = |child: usize| weights[child].unwrap_or([1.0; Q]);
            self.coefs.push(Coefs {
                r: [
                    [r(cases[0][0], 0), r(cases[0][1], 1)],
                    [r(cases[1][0], 0), r(cases[1][1], 1)],
                    [dead(0), dead(1)],
                ],
                e: [e(cases[0][0]), e(-1.0), e(cases[1][1])],
            });
        }
        self.splits.extend(plan.splits);
        self.max_nodes = self.max_nodes.max(plan.n_nodes);
        self.trees.push(QuadTree {
            n_nodes: plan.n_nodes,
            splits: first_split..self.splits.len(),
        });
    }

    fn scratch(&self, m: usize) -> SetScratch<Q> {
        SetScratch {
            c: vec![[0.0; Q]; self.max_nodes],
            case: vec![0; self.max_nodes + 1],
            acc: vec![[0.0; Q]; BLOCK_ROWS * m],
        }
    }

    /// Add the contributions of this set's trees for a block of rows to `phi`.
    fn explain(&self, x: &[f32], m: usize, phi: &mut [f64], s: &mut SetScratch<Q>) {
        if self.trees.is_empty() {
            return;
        }
        let n = phi.len();
        let acc = &mut s.acc[..n];
        acc.fill([0.0; Q]);
        for tree in &self.trees {
            for (row, a) in x.chunks_exact(m).zip(acc.chunks_exact_mut(m)) {
                self.tree_row(tree, row, &mut s.c, &mut s.case, a);
            }
        }
        for (p, a) in phi.iter_mut().zip(acc.iter()) {
            *p += a.iter().sum::<f64>();
        }
    }

    #[inline]
    fn tree_row(
        &self,
        tree: &QuadTree,
        row: &[f32],
        c: &mut [[f64; Q]],
        case: &mut [u8],
        acc: &mut [[f64; Q]],
    ) {
        let splits = &self.splits[tree.splits.clone()];
        let coefs = &self.coefs[tree.splits.clone()];
        let c = &mut c[..tree.n_nodes];
        let n = splits.len();
        let case = &mut case[..=n];
        case[n] = 0; // the sentinel: "still on the path" for first splits on a feature
        c[0] = [1.0; Q];
        // Top-down: which way the row goes, whether it still follows the feature, and C.
        for (j, (split, co)) in splits.iter().zip(coefs).enumerate() {
            let went_right = split.goes_left(row) ^ 1;
            let k = if u32::from(case[(split.ancestor >> 1) as usize]) == split.ancestor & 1 {
                went_right as usize
            } else {
                2
            };
            case[j] = k as u8;
            let parent = c[split.node as usize];
            let [rl, rr] = &co.r[k];
            let l = 2 * j + 1;
            c[l] = std::array::from_fn(|q| parent[q] * rl[q]);
            c[l + 1] = std::array::from_fn(|q| parent[q] * rr[q]);
        }
        // Bottom-up: sum the leaves' terms and give each edge its share.
        for (j, ((split, co), &k)) in splits.iter().zip(coefs).zip(&case[..n]).enumerate().rev() {
            let l = 2 * j + 1;
            let (hl, hr) = (c[l], c[l + 1]);
            let live = f64::from(u8::from(k < 2));
            let (el, er) = if k == 0 {
                (&co.e[0], &co.e[1])
            } else {
                (&co.e[1], &co.e[2])
            };
            let a = &mut acc[(split.feature & !DEFAULT_LEFT) as usize];
            *a = std::array::from_fn(|q| a[q] + (hl[q] * el[q] + hr[q] * er[q]) * live);
            c[split.node as usize] = std::array::from_fn(|q| hl[q] + hr[q]);
        }
    }
}

#[derive(Debug, Clone)]
pub struct Explainer {
    n_features: usize,
    base_value: f64,
    q2: QuadSet<2>,
    q3: QuadSet<3>,
    q4: QuadSet<4>,
    q6: QuadSet<6>,
    q8: QuadSet<8>,
    recursive: Vec<RawTree>,
    max_recursive_depth: usize,
    n_trees: usize,
    /// Why explanations are refused (a tree with an internal node of zero cover), if they are.
    unsupported: Option<String>,
}

/// Gauss-Legendre nodes and weights on `[0, 1]` (Newton on the Legendre polynomial).
fn gauss_legendre(q: usize) -> (Vec<f64>, Vec<f64>) {
    let mut nodes = Vec::with_capacity(q);
    let mut weights = Vec::with_capacity(q);
    let n = q as f64;
    for i in 0..q {
        let mut x = (std::f64::consts::PI * (i as f64 + 0.75) / (n + 0.5)).cos();
        let mut derivative = 1.0;
        for _ in 0..100 {
            let (mut p0, mut p1) = (1.0, x);
            for k in 2..=q {
                let k = k as f64;
                (p0, p1) = (p1, ((2.0 * k - 1.0) * x * p1 - (k - 1.0) * p0) / k);
            }
            derivative = n * (x * p1 - p0) / (x * x - 1.0);
            let step = p1 / derivative;
            x -= step;
            if step.abs() < 1e-16 {
                break;
            }
        }
        nodes.push((1.0 - x) / 2.0);
        weights.push(1.0 / ((1.0 - x * x) * derivative * derivative));
    }
    (nodes, weights)
}

impl Explainer {
    #[must_use]
    pub fn new(trees: &[RawTree], base_margin: f32, n_features: usize) -> Self {
        let mut ex = Self {
            n_features,
            base_value: f64::from(base_margin),
            q2: QuadSet::new(),
            q3: QuadSet::new(),
            q4: QuadSet::new(),
            q6: QuadSet::new(),
            q8: QuadSet::new(),
            recursive: Vec::new(),
            max_recursive_depth: 0,
            n_trees: trees.len(),
            unsupported: None,
        };
        for (t, tree) in trees.iter().enumerate() {
            if let Some(node) = (0..tree.left.len())
                .find(|&n| !tree.is_leaf(n) && tree.cover[n] == 0.0 && reachable(tree, n))
            {
                ex.unsupported.get_or_insert_with(|| {
                    format!("tree {t}: internal node {node} has zero cover (sum_hessian)")
                });
            }
            ex.base_value += mean_value(tree, 0);
            // Q points integrate degree 2Q − 1 exactly; a leaf's integrand has degree < d.
            match TreePlan::new(tree) {
                Some(plan) if plan.depth <= 4 => ex.q2.push(plan),
                Some(plan) if plan.depth <= 6 => ex.q3.push(plan),
                Some(plan) if plan.depth <= 8 => ex.q4.push(plan),
                Some(plan) if plan.depth <= 12 => ex.q6.push(plan),
                Some(plan) if plan.depth <= MAX_QUAD_DEPTH => ex.q8.push(plan),
                _ => {
                    ex.max_recursive_depth = ex.max_recursive_depth.max(tree.depth());
                    ex.recursive.push(tree.clone());
                }
            }
        }
        ex
    }

    #[must_use]
    pub fn base_value(&self) -> f64 {
        self.base_value
    }

    /// Memory held for explanations, in bytes.
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.q2.bytes()
            + self.q3.bytes()
            + self.q4.bytes()
            + self.q6.bytes()
            + self.q8.bytes()
            + self
                .recursive
                .iter()
                .map(|t| t.left.len() * 22)
                .sum::<usize>()
    }

    /// Trees explained through the quadrature, and through the recursive algorithm.
    #[must_use]
    pub fn method_counts(&self) -> (usize, usize) {
        (self.n_trees - self.recursive.len(), self.recursive.len())
    }

    /// Contributions of the rows of `x` (row-major) into `phi` (row-major, zeroed, same shape).
    pub fn shap(&self, x: &[f32], phi: &mut [f64]) -> Result<(), KernelError> {
        if let Some(why) = &self.unsupported {
            return Err(KernelError::Model(format!("cannot explain: {why}")));
        }
        let m = self.n_features;
        let mut s2 = self.q2.scratch(m);
        let mut s3 = self.q3.scratch(m);
        let mut s4 = self.q4.scratch(m);
        let mut s6 = self.q6.scratch(m);
        let mut s8 = self.q8.scratch(m);
        let mut path = vec![PathElement::default(); path_buffer_len(self.max_recursive_depth)];
        for (xb, pb) in x.chunks(BLOCK_ROWS * m).zip(phi.chunks_mut(BLOCK_ROWS * m)) {
            self.q2.explain(xb, m, pb, &mut s2);
            self.q3.explain(xb, m, pb, &mut s3);
            self.q4.explain(xb, m, pb, &mut s4);
            self.q6.explain(xb, m, pb, &mut s6);
            self.q8.explain(xb, m, pb, &mut s8);
            for tree in &self.recursive {
                for (row, p) in xb.chunks_exact(m).zip(pb.chunks_exact_mut(m)) {
                    recurse(tree, row, p, &mut path, 0, 0, 0, 1.0, 1.0, NO_FEATURE);
                }
            }
        }
        Ok(())
    }
}

fn reachable(tree: &RawTree, target: usize) -> bool {
    let mut stack = vec![0usize];
    while let Some(n) = stack.pop() {
        if n == target {
            return true;
        }
        if !tree.is_leaf(n) {
            stack.push(tree.left_of(n));
            stack.push(tree.right_of(n));
        }
    }
    false
}

/// The cover-weighted mean of the leaves under `node` (`XGBoost`'s node mean value).
fn mean_value(tree: &RawTree, node: usize) -> f64 {
    if tree.is_leaf(node) {
        return f64::from(tree.value[node]);
    }
    let (l, r) = (tree.left_of(node), tree.right_of(node));
    (mean_value(tree, l) * f64::from(tree.cover[l])
        + mean_value(tree, r) * f64::from(tree.cover[r]))
        / f64::from(tree.cover[node])
}

// The recursive algorithm (Lundberg et al. 2018, Algorithm 2), as XGBoost runs it, in float64.

const NO_FEATURE: u32 = u32::MAX;

#[derive(Debug, Clone, Copy, Default)]
struct PathElement {
    feature: u32,
    zero: f64,
    one: f64,
    pweight: f64,
}

fn path_buffer_len(depth: usize) -> usize {
    let d = depth + 2;
    d * (d + 1) / 2 + d + 1
}

fn extend(path: &mut [PathElement], depth: usize, zero: f64, one: f64, feature: u32) {
    path[depth] = PathElement {
        feature,
        zero,
        one,
        pweight: if depth == 0 { 1.0 } else { 0.0 },
    };
    let denom = (depth + 1) as f64;
    for i in (0..depth).rev() {
        path[i + 1].pweight += one * path[i].pweight * (i + 1) as f64 / denom;
        path[i].pweight = zero * path[i].pweight * (depth - i) as f64 / denom;
    }
}

fn unwind(path: &mut [PathElement], depth: usize, index: usize) {
    let (one, zero) = (path[index].one, path[index].zero);
    let denom = (depth + 1) as f64;
    let mut next = path[depth].pweight;
    for i in (0..depth).rev() {
        if one == 0.0 {
            path[i].pweight = path[i].pweight * denom / (zero * (depth - i) as f64);
        } else {
            let tmp = path[i].pweight;
            path[i].pweight = next * denom / ((i + 1) as f64 * one);
            next = tmp - path[i].pweight * zero * (depth - i) as f64 / denom;
        }
    }
    for i in index..depth {
        path[i].feature = path[i + 1].feature;
        path[i].zero = path[i + 1].zero;
        path[i].one = path[i + 1].one;
    }
}

fn unwound_sum(path: &[PathElement], depth: usize, index: usize) -> f64 {
    let (one, zero) = (path[index].one, path[index].zero);
    let denom = (depth + 1) as f64;
    let mut next = path[depth].pweight;
    let mut total = 0.0;
    for i in (0..depth).rev() {
        if one != 0.0 {
            let tmp = next * denom / ((i + 1) as f64 * one);
            total += tmp;
            next = path[i].pweight - tmp * zero * (depth - i) as f64 / denom;
        } else if zero != 0.0 {
            total += path[i].pweight / zero / ((depth - i) as f64 / denom);
        }
    }
    total
}

/// `path[start..]` is this call's segment; the parent's `depth + 1` elements sit just before it
/// in `path[parent..]`.
#[allow(clippy::too_many_arguments)]
fn recurse(
    tree: &RawTree,
    row: &[f32],
    phi: &mut [f64],
    path: &mut [PathElement],
    parent: usize,
    node: usize,
    mut depth: usize,
    zero: f64,
    one: f64,
    feature: u32,
) {
    if zero == 0.0 && one == 0.0 {
        return; // no weight reaches this subtree
    }
    let start = if feature == NO_FEATURE {
        parent
    } else {
        parent + depth + 1
    };
    if feature != NO_FEATURE {
        path.copy_within(parent..=parent + depth, start);
    }
    extend(&mut path[start..], depth, zero, one, feature);
    if tree.is_leaf(node) {
        let value = f64::from(tree.value[node]);
        let seg = &path[start..];
        for i in 1..=depth {
            let w = unwound_sum(seg, depth, i);
            let el = seg[i];
            phi[el.feature as usize] += w * (el.one - el.zero) * value;
        }
        return;
    }
    let split = tree.feature[node];
    let hot = tree.next(node, row[split as usize]);
    let cold = if hot == tree.left_of(node) {
        tree.right_of(node)
    } else {
        tree.left_of(node)
    };
    let w = f64::from(tree.cover[node]);
    let hot_zero = f64::from(tree.cover[hot]) / w;
    let cold_zero = f64::from(tree.cover[cold]) / w;
    let (mut in_zero, mut in_one) = (1.0, 1.0);
    if let Some(k) = (0..=depth).find(|&k| path[start + k].feature == split) {
        in_zero = path[start + k].zero;
        in_one = path[start + k].one;
        unwind(&mut path[start..], depth, k);
        depth -= 1;
    }
    let next = depth + 1;
    recurse(
        tree,
        row,
        phi,
        path,
        start,
        hot,
        next,
        hot_zero * in_zero,
        in_one,
        split,
    );
    recurse(
        tree,
        row,
        phi,
        path,
        start,
        cold,
        next,
        cold_zero * in_zero,
        0.0,
        split,
    );
}

/// Contributions of one row through the recursive algorithm alone (tests cross-check the quadrature
/// against it).
#[cfg(test)]
pub fn recursive_shap(tree: &RawTree, row: &[f32], phi: &mut [f64]) {
    let mut path = vec![PathElement::default(); path_buffer_len(tree.depth())];
    recurse(tree, row, phi, &mut path, 0, 0, 0, 1.0, 1.0, NO_FEATURE);
}
