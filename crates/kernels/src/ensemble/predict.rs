//! The margin evaluator: every tree as a flat array of 16-byte nodes, evaluated branch-free.
//!
//! A leaf points to itself on both sides, so every tree can be walked a fixed number of steps
//! (its depth) with no test for "am I at a leaf". Rows are evaluated in blocks: for each tree, a
//! group of [`LANES`] rows is walked in lock step, which gives the CPU that many independent
//! chains of loads to overlap. A single row walks [`LANES`] trees in lock step instead. Leaf
//! values are added in float32 in tree order starting from the base margin, as `XGBoost`'s CPU
//! predictor does, so the margins agree with its bit for bit.

use super::parse::RawTree;

/// Rows (or trees, for one row) walked in lock step.
pub const LANES: usize = 8;
/// Rows per block: every tree is applied to a block before the next block starts, so the block's
/// rows stay in L1 while the trees stream through.
const BLOCK_ROWS: usize = 128;
const DEFAULT_LEFT: u32 = 1 << 31;
const FEATURE_MASK: u32 = !DEFAULT_LEFT;

/// One node. Internal: split feature (bit 31: missing goes left), threshold, children.
/// Leaf: feature 0, `threshold` holds the leaf value, both children are the leaf itself.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(16))]
struct Node {
    feature: u32,
    threshold: f32,
    left: u32,
    right: u32,
}

impl Node {
    #[inline]
    fn next(self, row: &[f32]) -> u32 {
        let x = row[(self.feature & FEATURE_MASK) as usize];
        let nan_left = u32::from(x.is_nan()) & (self.feature >> 31);
        if u32::from(x < self.threshold) | nan_left != 0 {
            self.left
        } else {
            self.right
        }
    }
}

#[derive(Debug, Clone)]
pub struct Forest {
    nodes: Vec<Node>,
    roots: Vec<u32>,
    depths: Vec<u32>,
    /// Depth of each group of [`LANES`] consecutive trees (the one-row path walks them together).
    group_depths: Vec<u32>,
    base_margin: f32,
    n_features: usize,
}

impl Forest {
    #[must_use]
    pub fn new(trees: &[RawTree], base_margin: f32, n_features: usize) -> Self {
        let mut nodes = Vec::new();
        let mut roots = Vec::with_capacity(trees.len());
        let mut depths = Vec::with_capacity(trees.len());
        for tree in trees {
            roots.push(nodes.len() as u32);
            depths.push(tree.depth() as u32);
            append_tree(tree, &mut nodes);
        }
        let group_depths = depths
            .chunks(LANES)
            .map(|g| g.iter().copied().max().unwrap_or(0))
            .collect();
        Self {
            nodes,
            roots,
            depths,
            group_depths,
            base_margin,
            n_features,
        }
    }

    #[must_use]
    pub fn n_nodes(&self) -> usize {
        self.nodes.len()
    }

    #[must_use]
    pub fn bytes(&self) -> usize {
        self.nodes.len() * std::mem::size_of::<Node>()
            + (self.roots.len() + self.depths.len() + self.group_depths.len()) * 4
    }

    /// Margins of the rows of `x` (row-major, `n_features` per row) into `out` (one per row).
    pub fn predict(&self, x: &[f32], out: &mut [f32]) {
        let m = self.n_features;
        for (xb, ob) in x.chunks(BLOCK_ROWS * m).zip(out.chunks_mut(BLOCK_ROWS)) {
            let full = ob.len() / LANES * LANES;
            let (x_lanes, x_rest) = xb.split_at(full * m);
            let (o_lanes, o_rest) = ob.split_at_mut(full);
            self.predict_lanes(x_lanes, o_lanes);
            for (row, o) in x_rest.chunks_exact(m).zip(o_rest.iter_mut()) {
                *o = self.predict_row(row);
            }
        }
    }

    /// Rows in groups of [`LANES`], each tree applied to the whole block before the next.
    fn predict_lanes(&self, x: &[f32], out: &mut [f32]) {
        let m = self.n_features;
        out.fill(self.base_margin);
        let nodes = self.nodes.as_slice();
        for (&root, &depth) in self.roots.iter().zip(&self.depths) {
            for (xg, og) in x.chunks_exact(LANES * m).zip(out.chunks_exact_mut(LANES)) {
                let rows: [&[f32]; LANES] = std::array::from_fn(|l| &xg[l * m..(l + 1) * m]);
                let mut idx = [root; LANES];
                for _ in 0..depth {
                    for l in 0..LANES {
                        idx[l] = nodes[idx[l] as usize].next(rows[l]);
                    }
                }
                for l in 0..LANES {
                    og[l] += nodes[idx[l] as usize].threshold;
                }
            }
        }
    }

    /// One row: [`LANES`] trees walked in lock step, leaf values added in tree order.
    #[must_use]
    pub fn predict_row(&self, row: &[f32]) -> f32 {
        let nodes = self.nodes.as_slice();
        let mut acc = self.base_margin;
        for (roots, &depth) in self.roots.chunks(LANES).zip(&self.group_depths) {
            if let Ok(roots) = <&[u32; LANES]>::try_from(roots) {
                let mut idx = *roots;
                for _ in 0..depth {
                    for i in &mut idx {
                        *i = nodes[*i as usize].next(row);
                    }
                }
                for i in idx {
                    acc += nodes[i as usize].threshold;
                }
            } else {
                for &root in roots {
                    let mut i = root;
                    for _ in 0..depth {
                        i = nodes[i as usize].next(row);
                    }
                    acc += nodes[i as usize].threshold;
                }
            }
        }
        acc
    }
}

/// Append `tree` in breadth-first order (children of a node are adjacent).
fn append_tree(tree: &RawTree, nodes: &mut Vec<Node>) {
    let base = nodes.len();
    let mut order = vec![0usize];
    let mut position = vec![0u32; tree.left.len()];
    let mut k = 0;
    while k < order.len() {
        let node = order[k];
        position[node] = (base + k) as u32;
        if !tree.is_leaf(node) {
            order.push(tree.left_of(node));
            order.push(tree.right_of(node));
        }
        k += 1;
    }
    for &node in &order {
        let me = position[node];
        nodes.push(if tree.is_leaf(node) {
            Node {
                feature: 0,
                threshold: tree.value[node],
                left: me,
                right: me,
            }
        } else {
            Node {
                feature: tree.feature[node]
                    | if tree.default_left[node] {
                        DEFAULT_LEFT
                    } else {
                        0
                    },
                threshold: tree.value[node],
                left: position[tree.left_of(node)],
                right: position[tree.right_of(node)],
            }
        });
    }
}
