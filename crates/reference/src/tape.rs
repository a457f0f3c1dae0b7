//! A scalar reverse-mode automatic-differentiation tape in f64.
//!
//! Every operation appends one node holding its value and up to two
//! `(parent, local partial)` pairs. `gradient` sweeps the tape backwards once
//! and returns the adjoint of every node. Because a gradient built *from tape
//! operations* (as the hand-written MLP backprop in `mlp.rs` is) is itself a
//! set of nodes, differentiating through it gives exact second derivatives.

/// Handle of one node on a [`Tape`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Var(usize);

impl Var {
    /// Position of the node on its tape (the index into `Tape::gradient`'s result).
    pub fn index(self) -> usize {
        self.0
    }
}

#[derive(Clone, Copy, Debug)]
struct Node {
    value: f64,
    parents: [(usize, f64); 2],
    arity: usize,
}

/// The tape: nodes in creation order (a topological order).
#[derive(Debug, Default)]
pub struct Tape {
    nodes: Vec<Node>,
}

impl Tape {
    /// An empty tape.
    pub fn new() -> Self {
        Self { nodes: Vec::new() }
    }

    /// Number of nodes recorded so far.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no node was recorded.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    fn push(&mut self, value: f64, parents: &[(Var, f64)]) -> Var {
        assert!(parents.len() <= 2, "a node has at most two parents");
        let mut p = [(0usize, 0.0f64); 2];
        for (slot, &(v, d)) in p.iter_mut().zip(parents) {
            *slot = (v.0, d);
        }
        self.nodes.push(Node { value, parents: p, arity: parents.len() });
        Var(self.nodes.len() - 1)
    }

    /// An independent variable (a leaf whose adjoint the caller reads).
    pub fn var(&mut self, value: f64) -> Var {
        self.push(value, &[])
    }

    /// A constant: a leaf whose adjoint nobody reads (nothing flows past it).
    pub fn constant(&mut self, value: f64) -> Var {
        self.push(value, &[])
    }

    /// The value of a node.
    pub fn value(&self, a: Var) -> f64 {
        self.nodes[a.0].value
    }

    /// The values of several nodes.
    pub fn values(&self, a: &[Var]) -> Vec<f64> {
        a.iter().map(|&v| self.value(v)).collect()
    }

    /// `a + b`
    pub fn add(&mut self, a: Var, b: Var) -> Var {
        let v = self.value(a) + self.value(b);
        self.push(v, &[(a, 1.0), (b, 1.0)])
    }

    /// `a - b`
    pub fn sub(&mut self, a: Var, b: Var) -> Var {
        let v = self.value(a) - self.value(b);
        self.push(v, &[(a, 1.0), (b, -1.0)])
    }

    /// `a * b`
    pub fn mul(&mut self, a: Var, b: Var) -> Var {
        let (x, y) = (self.value(a), self.value(b));
        self.push(x * y, &[(a, y), (b, x)])
    }

    /// `a / b`
    pub fn div(&mut self, a: Var, b: Var) -> Var {
        let (x, y) = (self.value(a), self.value(b));
        self.push(x / y, &[(a, 1.0 / y), (b, -x / (y * y))])
    }

    /// `-a`
    pub fn neg(&mut self, a: Var) -> Var {
        let v = -self.value(a);
        self.push(v, &[(a, -1.0)])
    }

    /// `c * a` for a constant `c`.
    pub fn scale(&mut self, a: Var, c: f64) -> Var {
        let v = c * self.value(a);
        self.push(v, &[(a, c)])
    }

    /// `a + c` for a constant `c`.
    pub fn add_const(&mut self, a: Var, c: f64) -> Var {
        let v = self.value(a) + c;
        self.push(v, &[(a, 1.0)])
    }

    /// `exp(a)`
    pub fn exp(&mut self, a: Var) -> Var {
        let e = self.value(a).exp();
        self.push(e, &[(a, e)])
    }

    /// `ln(a)`
    pub fn ln(&mut self, a: Var) -> Var {
        let x = self.value(a);
        self.push(x.ln(), &[(a, 1.0 / x)])
    }

    /// `sqrt(a)`, with derivative `1 / (2 sqrt(a))`, and 0 at `a = 0` (the limit the spec's
    /// adam rule takes there).
    pub fn sqrt(&mut self, a: Var) -> Var {
        let r = self.value(a).sqrt();
        let d = if r > 0.0 { 0.5 / r } else { 0.0 };
        self.push(r, &[(a, d)])
    }

    /// `tanh(a)`
    pub fn tanh(&mut self, a: Var) -> Var {
        let t = self.value(a).tanh();
        self.push(t, &[(a, 1.0 - t * t)])
    }

    /// `1 / (1 + exp(-a))`
    pub fn sigmoid(&mut self, a: Var) -> Var {
        let s = sigmoid(self.value(a));
        self.push(s, &[(a, s * (1.0 - s))])
    }

    /// `max(a, 0)`, with derivative 0 at `a <= 0` and 1 at `a > 0`.
    pub fn relu(&mut self, a: Var) -> Var {
        let x = self.value(a);
        if x > 0.0 { self.push(x, &[(a, 1.0)]) } else { self.push(0.0, &[(a, 0.0)]) }
    }

    /// Sum of several nodes (a chain of additions; `0` for none).
    pub fn sum(&mut self, a: &[Var]) -> Var {
        match a.split_first() {
            None => self.constant(0.0),
            Some((&first, rest)) => rest.iter().fold(first, |acc, &x| self.add(acc, x)),
        }
    }

    /// `sum_i a[i] * b[i]`
    pub fn dot(&mut self, a: &[Var], b: &[Var]) -> Var {
        assert_eq!(a.len(), b.len(), "dot of vectors of different lengths");
        let prods: Vec<Var> = a.iter().zip(b).map(|(&x, &y)| self.mul(x, y)).collect();
        self.sum(&prods)
    }

    /// Adjoints `d output / d node` of every node on the tape.
    pub fn gradient(&self, output: Var) -> Vec<f64> {
        let mut adj = vec![0.0; self.nodes.len()];
        adj[output.0] = 1.0;
        for i in (0..=output.0).rev() {
            let a = adj[i];
            if a == 0.0 {
                continue;
            }
            let node = &self.nodes[i];
            for &(p, d) in &node.parents[..node.arity] {
                adj[p] += a * d;
            }
        }
        adj
    }
}

/// Numerically careful logistic function on plain values.
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}
