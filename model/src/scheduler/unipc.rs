//! diffusers' `UniPCMultistepScheduler` with its defaults: B₂(h) ("bh2"), second order, data
//! prediction, `lower_order_final`, the corrector at every step.

use burn::prelude::*;
use serde::Deserialize;

use super::{
    FinalSigmas, Sampler, SchedulerError, TimestepSpacing, TrainConfig, alpha_sigma, check_steps,
    karras_sigmas, lambda, lin2, log_sigma_table, multistep_timesteps, np_interp, sigma_table, sigma_to_t,
};

const CLASS: &str = "UniPCMultistepScheduler";

/// `UniPCMultistepScheduler`'s config fields and defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub(super) struct UniPcConfig {
    #[serde(flatten)]
    train: TrainConfig,
    solver_order: usize,
    predict_x0: bool,
    solver_type: String,
    lower_order_final: bool,
    disable_corrector: Vec<usize>,
    use_karras_sigmas: bool,
    use_exponential_sigmas: bool,
    use_beta_sigmas: bool,
    use_flow_sigmas: bool,
    timestep_spacing: TimestepSpacing,
    final_sigmas_type: FinalSigmas,
    use_dynamic_shifting: bool,
    sigma_min: Option<f64>,
    sigma_max: Option<f64>,
}

impl Default for UniPcConfig {
    fn default() -> Self {
        Self {
            train: TrainConfig::default(),
            solver_order: 2,
            predict_x0: true,
            solver_type: "bh2".to_owned(),
            lower_order_final: true,
            disable_corrector: Vec::new(),
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            use_flow_sigmas: false,
            timestep_spacing: TimestepSpacing::Linspace,
            final_sigmas_type: FinalSigmas::Zero,
            use_dynamic_shifting: false,
            sigma_min: None,
            sigma_max: None,
        }
    }
}

impl UniPcConfig {
    fn check(&self) -> Result<(), SchedulerError> {
        self.train.check(CLASS)?;
        let unsupported = |setting: String| Err(SchedulerError::Unsupported { class: CLASS, setting });
        // diffusers maps DPM-Solver's solver types to "bh2" itself.
        if !matches!(self.solver_type.as_str(), "bh2" | "midpoint" | "heun" | "logrho") {
            return unsupported(format!("solver_type \"{}\" (only \"bh2\")", self.solver_type));
        }
        if !self.predict_x0 {
            return unsupported("predict_x0 = false".to_owned());
        }
        if !(1..=2).contains(&self.solver_order) {
            return unsupported(format!("solver_order {} (only 1 and 2)", self.solver_order));
        }
        if self.use_exponential_sigmas || self.use_beta_sigmas || self.use_flow_sigmas {
            return unsupported("exponential, beta or flow sigmas".to_owned());
        }
        if self.use_dynamic_shifting {
            return unsupported("use_dynamic_shifting".to_owned());
        }
        Ok(())
    }
}

/// UniPC: Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of
/// Diffusion Models". Each step first corrects the previous step's result with the new model
/// output (UniC), then predicts the next sample (UniP), both with the B₂(h) = e^h − 1 variant in
/// data prediction.
#[derive(Debug)]
pub(super) struct UniPc {
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    order: usize,
    lower_order_final: bool,
    disable_corrector: Vec<usize>,
    /// The latest x₀ predictions, oldest first (at most `order`).
    history: Vec<Tensor<4>>,
    lower_order_nums: usize,
    /// The order the last prediction used; the corrector repeats it.
    this_order: usize,
    /// The (corrected) sample the last prediction started from.
    last_sample: Option<Tensor<4>>,
}

impl UniPc {
    pub(super) fn new(config: UniPcConfig, steps: usize) -> Result<Self, SchedulerError> {
        config.check()?;
        let train = &config.train;
        let t_train = train.num_train_timesteps;
        check_steps(steps, t_train)?;
        let table = sigma_table(&train.alphas_cumprod());
        let mut timesteps =
            multistep_timesteps(config.timestep_spacing, steps, t_train, t_train, train.steps_offset);

        let mut sigmas: Vec<f64> = if config.use_karras_sigmas {
            let sigma_min = config.sigma_min.unwrap_or(table[0]);
            let sigma_max = config.sigma_max.unwrap_or(table[t_train - 1]);
            let sigmas = karras_sigmas(sigma_min, sigma_max, steps);
            let log_sigmas = log_sigma_table(&table);
            timesteps = sigmas.iter().map(|&s| sigma_to_t(s, &log_sigmas).round_ties_even()).collect();
            sigmas
        } else {
            timesteps.iter().map(|&t| np_interp(t, &table)).collect()
        };
        let last = match (config.final_sigmas_type, config.use_karras_sigmas) {
            (FinalSigmas::Zero, _) => 0.0,
            (FinalSigmas::SigmaMin, true) => sigmas[sigmas.len() - 1],
            (FinalSigmas::SigmaMin, false) => table[0],
        };
        sigmas.push(last);
        let sigmas = sigmas.into_iter().map(|s| f64::from(s as f32)).collect();
        Ok(Self {
            timesteps,
            sigmas,
            order: config.solver_order,
            lower_order_final: config.lower_order_final,
            disable_corrector: config.disable_corrector,
            history: Vec::new(),
            lower_order_nums: 0,
            this_order: 1,
            last_sample: None,
        })
    }

    /// UniC: corrects `last_sample`'s step (from `step − 1` to `step`) with the new x₀ prediction
    /// `model_t`, at the order the prediction used. `history` does not hold `model_t` yet.
    fn correct(&self, model_t: Tensor<4>, step: usize, last_sample: Tensor<4>) -> Tensor<4> {
        let sigma_s0 = self.sigmas[step - 1];
        let Span { alpha_t, sig_ratio, h, h_phi_1, b_h } = Span::new(self.sigmas[step], sigma_s0);
        let hh = -h;
        // b_k = k!·φ_{k+1}(hh)/B(h), with φ_{k+1} from the recursion φ_{k+1} = φ_k/hh − 1/k!.
        let mut b = Vec::with_capacity(self.this_order);
        let (mut h_phi_k, mut factorial) = (h_phi_1 / hh - 1.0, 1.0);
        for k in 1..=self.this_order {
            b.push(h_phi_k * factorial / b_h);
            factorial *= (k + 1) as f64;
            h_phi_k = h_phi_k / hh - 1.0 / factorial;
        }

        let m0 = self.history[self.history.len() - 1].clone();
        // x_t' = (σ_t/σ_s0)·x − α_t·φ₁·m0, then − α_t·B(h)·(Σ ρ_k·D1_k + ρ_t·(model_t − m0)).
        let predicted = lin2(last_sample, sig_ratio, m0.clone(), -alpha_t * h_phi_1);
        let d1_t = model_t - m0.clone();
        match self.this_order {
            1 => predicted - d1_t.mul_scalar((alpha_t * b_h * 0.5) as f32),
            _ => {
                let m1 = self.history[self.history.len() - 2].clone();
                let rk = (lambda(self.sigmas[step - 2]) - lambda(sigma_s0)) / h;
                // Solve [[1, 1], [rk, 1]]·ρ = b.
                let rho_0 = (b[0] - b[1]) / (1.0 - rk);
                let rho_t = b[0] - rho_0;
                // D1 = (m1 − m0)/rk
                let d1 = m1 - m0;
                predicted
                    - d1.mul_scalar((alpha_t * b_h * rho_0 / rk) as f32)
                    - d1_t.mul_scalar((alpha_t * b_h * rho_t) as f32)
            }
        }
    }

    /// UniP: the next sample from `sample` at `step` (`history` ends with this step's x₀).
    fn predict(&self, step: usize, sample: Tensor<4>) -> Tensor<4> {
        let sigma_s0 = self.sigmas[step];
        let Span { alpha_t, sig_ratio, h, h_phi_1, b_h } = Span::new(self.sigmas[step + 1], sigma_s0);
        let m0 = self.history[self.history.len() - 1].clone();
        // x_t = (σ_t/σ_s0)·x − α_t·φ₁·m0 (at a zero final sigma: φ₁ = −1, α_t = 1, so m0)
        let predicted = lin2(sample, sig_ratio, m0.clone(), -alpha_t * h_phi_1);
        match self.this_order {
            1 => predicted,
            _ => {
                // − α_t·B(h)·ρ·D1 with ρ = ½ and D1 = (m1 − m0)/rk.
                let m1 = self.history[self.history.len() - 2].clone();
                let rk = (lambda(self.sigmas[step - 1]) - lambda(sigma_s0)) / h;
                predicted - (m1 - m0).mul_scalar((alpha_t * b_h * 0.5 / rk) as f32)
            }
        }
    }
}

impl Sampler for UniPc {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn sigmas(&self) -> Option<&[f64]> {
        Some(&self.sigmas)
    }

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    fn reset(&mut self) {
        self.history.clear();
        self.lower_order_nums = 0;
        self.this_order = 1;
        self.last_sample = None;
    }

    fn step(
        &mut self,
        eps: Tensor<4>,
        step: usize,
        sample: Tensor<4>,
        _noise: Option<Tensor<4>>,
    ) -> Tensor<4> {
        let (alpha, sigma) = alpha_sigma(self.sigmas[step]);
        // The data prediction x₀ = (x − σ_t·ε) / α_t.
        let x0 = lin2(sample.clone(), 1.0 / alpha, eps, -sigma / alpha);

        let sample = match &self.last_sample {
            Some(last) if step > 0 && !self.disable_corrector.contains(&(step - 1)) => {
                self.correct(x0.clone(), step, last.clone())
            }
            _ => sample,
        };

        self.history.push(x0);
        if self.history.len() > self.order {
            self.history.remove(0);
        }
        let order =
            if self.lower_order_final { self.order.min(self.timesteps.len() - step) } else { self.order };
        self.this_order = order.min(self.lower_order_nums + 1);
        self.last_sample = Some(sample.clone());
        let prev = self.predict(step, sample);
        self.lower_order_nums = (self.lower_order_nums + 1).min(self.order);
        prev
    }
}

/// The terms of a step from σ_s0 to σ_t that UniC and UniP share (the `bh2` variant).
struct Span {
    alpha_t: f64,
    /// σ_t/σ_s0 in the α-σ parametrisation (the sample's own factor).
    sig_ratio: f64,
    /// h = λ_t − λ_s0.
    h: f64,
    /// φ₁(−h)·h = e^{−h} − 1.
    h_phi_1: f64,
    /// B(h), which `bh2` makes φ₁'s value too.
    b_h: f64,
}

impl Span {
    fn new(sigma_t: f64, sigma_s0: f64) -> Self {
        let (alpha_t, sig_t) = alpha_sigma(sigma_t);
        let (_, sig_s0) = alpha_sigma(sigma_s0);
        let h = lambda(sigma_t) - lambda(sigma_s0);
        let h_phi_1 = (-h).exp_m1();
        Self { alpha_t, sig_ratio: sig_t / sig_s0, h, h_phi_1, b_h: h_phi_1 }
    }
}
