//! What two backends' meta-gradients are compared on.

use metasched_engine::MetaGradient;

/// Every tensor of a meta-gradient worth comparing across backends, by name: J, the per-task
/// losses and rates, theta's gradient (flat) and each phi gradient present. Used by the device
/// tests and by `meta-worker selftest`, so both compare the same things.
pub fn meta_gradient_tensors(m: &MetaGradient<f32>) -> Vec<(String, Vec<f32>)> {
    let mut v = vec![
        ("J".to_string(), vec![m.j]),
        ("outer_loss".to_string(), m.outer_loss.clone()),
        ("lr".to_string(), m.lr.clone()),
        ("grad.theta".to_string(), m.grad.theta.clone()),
    ];
    if let Some(l) = &m.grad.lstm {
        for (n, t) in [
            ("weight_ih", &l.w_ih),
            ("weight_hh", &l.w_hh),
            ("bias_ih", &l.b_ih),
            ("bias_hh", &l.b_hh),
            ("head.weight", &l.head_w),
            ("head.bias", &l.head_b),
        ] {
            v.push((format!("grad.phi.{n}"), t.clone()));
        }
    }
    if let Some(z) = &m.grad.lslr {
        v.push(("grad.phi.lslr.z".to_string(), z.clone()));
    }
    v
}
