//! diffusers' `DPMSolverMultistepScheduler` with its defaults: DPM-Solver++ (data prediction),
//! second order, midpoint, `lower_order_final`, `final_sigmas_type="zero"`; optionally with
//! Karras sigmas.

use burn::prelude::*;
use serde::Deserialize;

use super::{
    BetaSchedule, FinalSigmas, Sampler, SchedulerError, TimestepSpacing, TrainConfig, alpha_sigma,
    check_steps, karras_sigmas, lambda, lenient_f64, lin2, log_sigma_table, multistep_timesteps, np_interp,
    sigma_table, sigma_to_t,
};

const CLASS: &str = "DPMSolverMultistepScheduler";

/// `DPMSolverMultistepScheduler`'s config fields and defaults. It has no `sigma_min` or
/// `sigma_max`: Karras sigmas span the whole training range.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub(super) struct DpmSolverConfig {
    #[serde(flatten)]
    train: TrainConfig,
    solver_order: usize,
    algorithm_type: String,
    solver_type: String,
    lower_order_final: bool,
    euler_at_final: bool,
    use_karras_sigmas: bool,
    use_exponential_sigmas: bool,
    use_beta_sigmas: bool,
    use_lu_lambdas: bool,
    use_flow_sigmas: bool,
    final_sigmas_type: FinalSigmas,
    #[serde(deserialize_with = "lenient_f64")]
    lambda_min_clipped: f64,
    variance_type: Option<String>,
    timestep_spacing: TimestepSpacing,
    use_dynamic_shifting: bool,
}

impl Default for DpmSolverConfig {
    fn default() -> Self {
        Self {
            train: TrainConfig::default(),
            solver_order: 2,
            algorithm_type: "dpmsolver++".to_owned(),
            solver_type: "midpoint".to_owned(),
            lower_order_final: true,
            euler_at_final: false,
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            use_lu_lambdas: false,
            use_flow_sigmas: false,
            final_sigmas_type: FinalSigmas::Zero,
            lambda_min_clipped: f64::NEG_INFINITY,
            variance_type: None,
            timestep_spacing: TimestepSpacing::Linspace,
            use_dynamic_shifting: false,
        }
    }
}

impl DpmSolverConfig {
    fn check(&self) -> Result<(), SchedulerError> {
        self.train.check(CLASS)?;
        let unsupported = |setting: String| Err(SchedulerError::Unsupported { class: CLASS, setting });
        // diffusers maps "deis" to DPM-Solver++ itself.
        if !matches!(self.algorithm_type.as_str(), "dpmsolver++" | "deis") {
            return unsupported(format!("algorithm_type \"{}\" (only \"dpmsolver++\")", self.algorithm_type));
        }
        // diffusers maps UniPC's and DEIS's solver types to "midpoint".
        if !matches!(self.solver_type.as_str(), "midpoint" | "logrho" | "bh1" | "bh2") {
            return unsupported(format!("solver_type \"{}\" (only \"midpoint\")", self.solver_type));
        }
        if !(1..=2).contains(&self.solver_order) {
            return unsupported(format!("solver_order {} (only 1 and 2)", self.solver_order));
        }
        if self.use_exponential_sigmas || self.use_beta_sigmas || self.use_lu_lambdas || self.use_flow_sigmas
        {
            return unsupported("exponential, beta, Lu or flow sigmas".to_owned());
        }
        if self.use_dynamic_shifting {
            return unsupported("use_dynamic_shifting".to_owned());
        }
        if let Some(variance) = &self.variance_type {
            return unsupported(format!("variance_type \"{variance}\""));
        }
        Ok(())
    }
}

/// DPM-Solver++(2M): Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion
/// Probabilistic Models", Algorithm 2. It integrates the data-prediction ODE in λ = log(α/σ),
/// exactly in the linear part, with a second-order multistep correction from the previous x₀
/// prediction.
#[derive(Debug)]
pub(super) struct DpmSolver {
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    order: usize,
    /// Whether the last step is first order (always with a zero final sigma).
    first_order_final: bool,
    /// The latest x₀ predictions, oldest first (at most `order`).
    history: Vec<Tensor<4>>,
    lower_order_nums: usize,
}

impl DpmSolver {
    pub(super) fn new(config: DpmSolverConfig, steps: usize) -> Result<Self, SchedulerError> {
        config.check()?;
        let train = &config.train;
        let t_train = train.num_train_timesteps;
        check_steps(steps, t_train)?;
        let alphas_cumprod = train.alphas_cumprod();
        let table = sigma_table(&alphas_cumprod);

        // Timesteps whose λ is below `lambda_min_clipped` are left out (none by default).
        let clipped = alphas_cumprod
            .iter()
            .map(|&a| {
                let (alpha, sigma) = ((a as f32).sqrt(), (1.0 - a as f32).sqrt());
                f64::from(alpha.ln() - sigma.ln())
            })
            .filter(|&l| l < config.lambda_min_clipped)
            .count();
        let last_timestep = t_train - clipped;
        if last_timestep == 0 {
            return Err(SchedulerError::Config {
                class: CLASS,
                message: format!("lambda_min_clipped {} leaves no timestep", config.lambda_min_clipped),
            });
        }
        let mut timesteps =
            multistep_timesteps(config.timestep_spacing, steps, t_train, last_timestep, train.steps_offset);

        let mut sigmas: Vec<f64> = if config.use_karras_sigmas {
            let sigmas = karras_sigmas(table[0], table[t_train - 1], steps);
            let log_sigmas = log_sigma_table(&table);
            // Rounded to the nearest timestep, but for the cosine schedule (then truncated by the
            // cast to int64).
            let cosine =
                train.trained_betas.is_none() && train.beta_schedule == BetaSchedule::SquaredcosCapV2;
            timesteps = sigmas
                .iter()
                .map(|&s| {
                    let t = sigma_to_t(s, &log_sigmas);
                    if cosine { t.trunc() } else { t.round_ties_even() }
                })
                .collect();
            sigmas
        } else {
            timesteps.iter().map(|&t| np_interp(t, &table)).collect()
        };
        sigmas.push(match config.final_sigmas_type {
            FinalSigmas::Zero => 0.0,
            FinalSigmas::SigmaMin => table[0],
        });
        let sigmas: Vec<f64> = sigmas.into_iter().map(|s| f64::from(s as f32)).collect();

        let n = timesteps.len();
        let first_order_final = config.euler_at_final
            || (config.lower_order_final && n < 15)
            || config.final_sigmas_type == FinalSigmas::Zero;
        Ok(Self {
            timesteps,
            sigmas,
            order: config.solver_order,
            first_order_final,
            history: Vec::new(),
            lower_order_nums: 0,
        })
    }
}

impl Sampler for DpmSolver {
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
    }

    fn step(
        &mut self,
        eps: Tensor<4>,
        step: usize,
        sample: Tensor<4>,
        _noise: Option<Tensor<4>>,
    ) -> Tensor<4> {
        let (sigma_s0, sigma_t) = (self.sigmas[step], self.sigmas[step + 1]);
        let (alpha_s0, sig_s0) = alpha_sigma(sigma_s0);
        let (alpha_t, sig_t) = alpha_sigma(sigma_t);

        // The data prediction x₀ = (x − σ_s·ε) / α_s.
        let x0 = lin2(sample.clone(), 1.0 / alpha_s0, eps, -sig_s0 / alpha_s0);
        self.history.push(x0.clone());
        if self.history.len() > self.order {
            self.history.remove(0);
        }

        let last = step + 1 == self.timesteps.len();
        let h = lambda(sigma_t) - lambda(sigma_s0);
        // −α_t·(e^{−h} − 1); at a zero final sigma h = ∞, α_t = 1 and this is 1.
        let phi = -alpha_t * (-h).exp_m1();
        let first_order = self.order == 1 || self.lower_order_nums < 1 || (last && self.first_order_final);
        let prev = if first_order {
            // x_t = (σ_t/σ_s)·x − α_t(e^{−h} − 1)·x₀
            lin2(sample, sig_t / sig_s0, x0, phi)
        } else {
            // D0 = m0, D1 = (m0 − m1)/r0 with r0 = h_{−1}/h; midpoint:
            // x_t = (σ_t/σ_s0)·x − α_t(e^{−h} − 1)·D0 − ½·α_t(e^{−h} − 1)·D1
            let m1 = self.history[self.history.len() - 2].clone();
            let r0 = (lambda(sigma_s0) - lambda(self.sigmas[step - 1])) / h;
            let d1 = x0.clone() - m1;
            lin2(sample, sig_t / sig_s0, x0, phi) + d1.mul_scalar((0.5 * phi / r0) as f32)
        };
        self.lower_order_nums = (self.lower_order_nums + 1).min(self.order);
        prev
    }
}
