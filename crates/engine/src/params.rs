//! The learned parameters (theta and phi) and their checkpoint names (spec §5).

use crate::config::{Config, FEATURES, SchedulerKind};
use crate::error::{EngineError, Result};
use crate::layout::ThetaLayout;
use crate::real::Real;

/// Parameters of the LSTM scheduler, in PyTorch's `nn.LSTMCell` + `nn.Linear` layout.
#[derive(Debug, Clone, PartialEq)]
pub struct LstmParams<T> {
    /// `weight_ih`, `[4H, F]`, gate rows in the order i, f, g, o.
    pub w_ih: Vec<T>,
    /// `weight_hh`, `[4H, H]`.
    pub w_hh: Vec<T>,
    /// `bias_ih`, `[4H]`.
    pub b_ih: Vec<T>,
    /// `bias_hh`, `[4H]`.
    pub b_hh: Vec<T>,
    /// Head `weight`, `[G, H]`.
    pub head_w: Vec<T>,
    /// Head `bias`, `[G]`.
    pub head_b: Vec<T>,
}

impl<T: Real> LstmParams<T> {
    /// All-zero parameters for hidden size `h` and `g` groups (also the shape of a gradient).
    pub fn zeros(h: usize, g: usize) -> Self {
        Self {
            w_ih: vec![T::zero(); 4 * h * FEATURES],
            w_hh: vec![T::zero(); 4 * h * h],
            b_ih: vec![T::zero(); 4 * h],
            b_hh: vec![T::zero(); 4 * h],
            head_w: vec![T::zero(); g * h],
            head_b: vec![T::zero(); g],
        }
    }
}

/// One tensor of the parameter set; the unit of naming, shape checking and file I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Learner group `k` (`theta.layers.{k/2}.weight|bias`).
    Theta(usize),
    /// `phi.lstm.weight_ih`.
    LstmWeightIh,
    /// `phi.lstm.weight_hh`.
    LstmWeightHh,
    /// `phi.lstm.bias_ih`.
    LstmBiasIh,
    /// `phi.lstm.bias_hh`.
    LstmBiasHh,
    /// `phi.head.weight`.
    HeadWeight,
    /// `phi.head.bias`.
    HeadBias,
    /// `phi.lslr.z`.
    LslrZ,
}

/// Name and shape of a tensor slot under a given configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotSpec {
    /// Which tensor.
    pub slot: Slot,
    /// Checkpoint name, e.g. `theta.layers.0.weight`.
    pub name: String,
    /// Shape implied by the configuration.
    pub shape: Vec<usize>,
}

const LSTM_SLOTS: [Slot; 6] = [
    Slot::LstmWeightIh,
    Slot::LstmWeightHh,
    Slot::LstmBiasIh,
    Slot::LstmBiasHh,
    Slot::HeadWeight,
    Slot::HeadBias,
];

impl Slot {
    /// Checkpoint name and shape of this slot under `config`.
    pub fn spec(self, config: &Config) -> SlotSpec {
        let h = config.scheduler.hidden;
        let g = config.groups();
        let (name, shape) = match self {
            Slot::Theta(k) => {
                let (n, s) = ThetaLayout::new(config).group_tensor(k);
                (format!("theta.{n}"), s)
            }
            Slot::LstmWeightIh => ("phi.lstm.weight_ih".into(), vec![4 * h, FEATURES]),
            Slot::LstmWeightHh => ("phi.lstm.weight_hh".into(), vec![4 * h, h]),
            Slot::LstmBiasIh => ("phi.lstm.bias_ih".into(), vec![4 * h]),
            Slot::LstmBiasHh => ("phi.lstm.bias_hh".into(), vec![4 * h]),
            Slot::HeadWeight => ("phi.head.weight".into(), vec![g, h]),
            Slot::HeadBias => ("phi.head.bias".into(), vec![g]),
            Slot::LslrZ => ("phi.lslr.z".into(), vec![config.inner.steps, g]),
        };
        SlotSpec { slot: self, name, shape }
    }

    /// Slots a checkpoint of this configuration must hold, in canonical order.
    pub fn required(config: &Config) -> Vec<Slot> {
        let mut v: Vec<Slot> = (0..config.groups()).map(Slot::Theta).collect();
        match config.scheduler.kind {
            SchedulerKind::Lstm => v.extend(LSTM_SLOTS),
            SchedulerKind::Lslr => v.push(Slot::LslrZ),
            SchedulerKind::Fixed => {}
        }
        v
    }

    /// Every slot a checkpoint of this configuration may hold: the required ones plus phi
    /// tensors of other scheduler kinds (accepted, unused, given zero gradients).
    pub fn allowed(config: &Config) -> Vec<Slot> {
        let mut v: Vec<Slot> = (0..config.groups()).map(Slot::Theta).collect();
        if config.scheduler.hidden > 0 {
            v.extend(LSTM_SLOTS);
        }
        v.push(Slot::LslrZ);
        v
    }

    /// Finds the slot with checkpoint name `name` among those allowed by `config`.
    pub fn by_name(config: &Config, name: &str) -> Option<SlotSpec> {
        Slot::allowed(config).into_iter().map(|s| s.spec(config)).find(|s| s.name == name)
    }
}

/// theta and phi of one model. phi tensors of a kind other than the configured one may be
/// present (a checkpoint may carry them); they do not influence the computation.
#[derive(Debug, Clone, PartialEq)]
pub struct Params<T> {
    /// The learner's initialisation, flat in spec order.
    pub theta: Vec<T>,
    /// LSTM scheduler parameters, when present.
    pub lstm: Option<LstmParams<T>>,
    /// LSLR table `[T, G]`, when present.
    pub lslr: Option<Vec<T>>,
}

impl<T: Real> Params<T> {
    /// All-zero parameters holding exactly the required slots of `config`.
    pub fn zeros(config: &Config) -> Self {
        let g = config.groups();
        let mut p = Self { theta: vec![T::zero(); ThetaLayout::new(config).len()], lstm: None, lslr: None };
        match config.scheduler.kind {
            SchedulerKind::Lstm => p.lstm = Some(LstmParams::zeros(config.scheduler.hidden, g)),
            SchedulerKind::Lslr => p.lslr = Some(vec![T::zero(); config.inner.steps * g]),
            SchedulerKind::Fixed => {}
        }
        p
    }

    /// Checks that the tensors the configured scheduler needs are present and that every
    /// present tensor has the length `config` implies.
    pub fn validate(&self, config: &Config) -> Result<()> {
        let kind = config.scheduler.kind.as_str();
        for slot in Slot::required(config) {
            if self.slot(config, slot).is_none() {
                return Err(EngineError::MissingTensor {
                    name: slot.spec(config).name,
                    why: format!("scheduler kind `{kind}`"),
                });
            }
        }
        if self.theta.len() != ThetaLayout::new(config).len() {
            return Err(EngineError::ShapeMismatch {
                name: "theta".into(),
                got: vec![self.theta.len()],
                expected: vec![ThetaLayout::new(config).len()],
            });
        }
        for slot in [LSTM_SLOTS.as_slice(), &[Slot::LslrZ]].concat() {
            if let Some(v) = self.slot(config, slot) {
                let spec = slot.spec(config);
                if v.len() != spec.shape.iter().product::<usize>() {
                    return Err(EngineError::ShapeMismatch {
                        name: spec.name,
                        got: vec![v.len()],
                        expected: spec.shape,
                    });
                }
            }
        }
        Ok(())
    }

    /// All-zero parameters with the same slots as `self` (the shape of its gradient).
    pub fn zeros_like(&self) -> Self {
        let z = |v: &Vec<T>| vec![T::zero(); v.len()];
        Self {
            theta: z(&self.theta),
            lstm: self.lstm.as_ref().map(|l| LstmParams {
                w_ih: z(&l.w_ih),
                w_hh: z(&l.w_hh),
                b_ih: z(&l.b_ih),
                b_hh: z(&l.b_hh),
                head_w: z(&l.head_w),
                head_b: z(&l.head_b),
            }),
            lslr: self.lslr.as_ref().map(z),
        }
    }

    /// The values of a slot, if present.
    pub fn slot(&self, config: &Config, slot: Slot) -> Option<&[T]> {
        match slot {
            Slot::Theta(k) => Some(&self.theta[ThetaLayout::new(config).group(k)]),
            Slot::LslrZ => self.lslr.as_deref(),
            s => self.lstm.as_ref().map(|l| lstm_field(l, s)),
        }
    }

    /// The slots present, in canonical order, with their names and shapes.
    pub fn present_slots(&self, config: &Config) -> Vec<SlotSpec> {
        Slot::allowed(config)
            .into_iter()
            .filter(|&s| self.slot(config, s).is_some())
            .map(|s| s.spec(config))
            .collect()
    }

    /// Builds parameters from named tensors (checkpoint spelling), checking names and shapes
    /// against `config`: every required slot must be present, no name may be unknown.
    pub fn from_named<'a, I>(config: &Config, tensors: I) -> Result<Self>
    where
        I: IntoIterator<Item = (&'a str, &'a [usize], Vec<T>)>,
    {
        let layout = ThetaLayout::new(config);
        let mut theta: Vec<Option<Vec<T>>> = vec![None; config.groups()];
        let mut lstm: [Option<Vec<T>>; 6] = Default::default();
        let mut lslr = None;
        for (name, shape, data) in tensors {
            let spec = Slot::by_name(config, name)
                .ok_or_else(|| EngineError::UnknownTensor { name: name.to_string() })?;
            if spec.shape != shape {
                return Err(EngineError::ShapeMismatch {
                    name: name.to_string(),
                    got: shape.to_vec(),
                    expected: spec.shape,
                });
            }
            debug_assert_eq!(data.len(), spec.shape.iter().product::<usize>());
            match spec.slot {
                Slot::Theta(k) => theta[k] = Some(data),
                Slot::LslrZ => lslr = Some(data),
                s => {
                    let i = LSTM_SLOTS.iter().position(|&x| x == s).unwrap_or(0);
                    lstm[i] = Some(data);
                }
            }
        }
        let kind = config.scheduler.kind.as_str();
        let missing = |slot: Slot| EngineError::MissingTensor {
            name: slot.spec(config).name,
            why: format!("scheduler kind `{kind}`"),
        };
        let mut flat = Vec::with_capacity(layout.len());
        for (k, t) in theta.into_iter().enumerate() {
            let t = t.ok_or_else(|| EngineError::MissingTensor {
                name: Slot::Theta(k).spec(config).name,
                why: format!("model.layers {:?}", config.model.layers),
            })?;
            flat.extend(t);
        }
        let any_lstm = lstm.iter().any(Option::is_some);
        let lstm = if any_lstm || config.scheduler.kind == SchedulerKind::Lstm {
            let mut take = |i: usize| lstm[i].take().ok_or_else(|| missing(LSTM_SLOTS[i]));
            Some(LstmParams {
                w_ih: take(0)?,
                w_hh: take(1)?,
                b_ih: take(2)?,
                b_hh: take(3)?,
                head_w: take(4)?,
                head_b: take(5)?,
            })
        } else {
            None
        };
        if config.scheduler.kind == SchedulerKind::Lslr && lslr.is_none() {
            return Err(missing(Slot::LslrZ));
        }
        Ok(Self { theta: flat, lstm, lslr })
    }

    /// Converts every value to another float type (f32 <-> f64), e.g. for reference checks.
    pub fn cast<U: Real>(&self) -> Params<U> {
        let c = |v: &Vec<T>| v.iter().map(|&x| U::of(x.as_f64())).collect::<Vec<U>>();
        Params {
            theta: c(&self.theta),
            lstm: self.lstm.as_ref().map(|l| LstmParams {
                w_ih: c(&l.w_ih),
                w_hh: c(&l.w_hh),
                b_ih: c(&l.b_ih),
                b_hh: c(&l.b_hh),
                head_w: c(&l.head_w),
                head_b: c(&l.head_b),
            }),
            lslr: self.lslr.as_ref().map(c),
        }
    }

    /// Every value, slot by slot in canonical order (for norms, clipping and optimisers).
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        let lstm = self.lstm.iter_mut().flat_map(|l| {
            l.w_ih
                .iter_mut()
                .chain(l.w_hh.iter_mut())
                .chain(l.b_ih.iter_mut())
                .chain(l.b_hh.iter_mut())
                .chain(l.head_w.iter_mut())
                .chain(l.head_b.iter_mut())
        });
        self.theta.iter_mut().chain(lstm).chain(self.lslr.iter_mut().flatten())
    }

    /// Every value, slot by slot in canonical order.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        let lstm = self.lstm.iter().flat_map(|l| {
            l.w_ih.iter().chain(&l.w_hh).chain(&l.b_ih).chain(&l.b_hh).chain(&l.head_w).chain(&l.head_b)
        });
        self.theta.iter().chain(lstm).chain(self.lslr.iter().flatten())
    }

    /// `self += other`, element by element (both must have the same slots).
    pub fn add_assign(&mut self, other: &Self) {
        for (a, b) in self.buffers_mut().into_iter().zip(other.buffers()) {
            for (a, &b) in a.iter_mut().zip(b) {
                *a += b;
            }
        }
    }

    /// The contiguous buffers holding the values, in canonical order (fast element-wise work).
    pub fn buffers(&self) -> Vec<&[T]> {
        let mut v: Vec<&[T]> = vec![&self.theta];
        if let Some(l) = &self.lstm {
            v.extend([&l.w_ih[..], &l.w_hh, &l.b_ih, &l.b_hh, &l.head_w, &l.head_b]);
        }
        if let Some(z) = &self.lslr {
            v.push(z);
        }
        v
    }

    /// Mutable [`Params::buffers`].
    pub fn buffers_mut(&mut self) -> Vec<&mut [T]> {
        let mut v: Vec<&mut [T]> = vec![&mut self.theta];
        if let Some(l) = &mut self.lstm {
            v.extend([&mut l.w_ih[..], &mut l.w_hh, &mut l.b_ih, &mut l.b_hh, &mut l.head_w, &mut l.head_b]);
        }
        if let Some(z) = &mut self.lslr {
            v.push(z);
        }
        v
    }
}

fn lstm_field<T>(l: &LstmParams<T>, s: Slot) -> &[T] {
    match s {
        Slot::LstmWeightIh => &l.w_ih,
        Slot::LstmWeightHh => &l.w_hh,
        Slot::LstmBiasIh => &l.b_ih,
        Slot::LstmBiasHh => &l.b_hh,
        Slot::HeadWeight => &l.head_w,
        Slot::HeadBias => &l.head_b,
        Slot::Theta(_) | Slot::LslrZ => &[],
    }
}
