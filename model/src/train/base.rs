//! Training from scratch, for small models: the UNet and the text encoder jointly, and the VAE
//! on its own, with the loop the ControlNet recipe uses (micro-batches, global-norm clipping,
//! AdamW, no read-back on the step's path).

use burn::prelude::*;
use burn::tensor::DType;

use super::checkpoint::stable_ids;
use super::part::{Part, Trained, finish_step};
use super::{AdamW, Ema, LrSchedule, NoiseSchedule, TrainError};
use crate::UNet;
use crate::clip::ClipTextModel;
use crate::vae::AutoencoderKL;

/// One micro-batch for the base model: latents (from the frozen VAE), token ids (captions after
/// the prompt drop), ε and timesteps.
#[derive(Clone, Debug)]
pub struct TextExample {
    pub latents: Tensor<4>,
    pub ids: Vec<Vec<u32>>,
    pub noise: Tensor<4>,
    pub timesteps: Vec<u32>,
}

/// The UNet and the text encoder, trained jointly on ε-prediction.
pub struct BaseTrainer {
    unet: Part<UNet>,
    text_encoder: Part<ClipTextModel>,
    schedule: NoiseSchedule,
    max_grad_norm: Option<f64>,
    lr_schedule: LrSchedule,
    /// The average of the UNet's weights, when kept ([`BaseTrainer::with_ema`]).
    ema: Option<Ema<UNet>>,
    device: Device,
    step: u64,
}

impl BaseTrainer {
    pub fn new(
        unet: UNet,
        text_encoder: ClipTextModel,
        schedule: NoiseSchedule,
        adamw: AdamW,
        max_grad_norm: Option<f64>,
    ) -> Self {
        let device = unet.conv_in.weight.val().device().autodiff();
        let unet = stable_ids(unet, "unet").fork(&device).set_require_grad(true).train();
        let text_encoder =
            stable_ids(text_encoder, "text_encoder").fork(&device).set_require_grad(true).train();
        Self {
            unet: Part::new(unet, &adamw, adamw.lr),
            text_encoder: Part::new(text_encoder, &adamw, adamw.lr),
            schedule,
            max_grad_norm,
            lr_schedule: LrSchedule::Constant,
            ema: None,
            device,
            step: 0,
        }
    }

    /// The same, with the learning rate over the run following `lr_schedule`.
    pub fn with_lr_schedule(self, lr_schedule: LrSchedule) -> Self {
        Self { lr_schedule, ..self }
    }

    /// The same, keeping an exponential moving average of the UNet's weights whose decay grows
    /// to `max_decay` (diffusers' `--use_ema`: 0.9999), updated after every step.
    pub fn with_ema(self, max_decay: f64) -> Self {
        let ema = Some(Ema::new(&self.unet.module, max_decay));
        Self { ema, ..self }
    }

    /// The UNet's weights averaged over the steps, when kept.
    pub fn ema(&self) -> Option<&Ema<UNet>> {
        self.ema.as_ref()
    }

    /// Continues the average from a checkpoint's (after [`BaseTrainer::resume`]: as many updates
    /// as steps); without [`BaseTrainer::with_ema`], nothing.
    pub fn resume_ema(mut self, average: UNet) -> Self {
        let step = self.step;
        self.ema = self.ema.take().map(|ema| ema.resume(stable_ids(average, "unet"), step));
        self
    }

    pub fn unet(&self) -> &UNet {
        &self.unet.module
    }

    pub fn text_encoder(&self) -> &ClipTextModel {
        &self.text_encoder.module
    }

    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// `[1]`: the ε-prediction loss of `example`, with its graph.
    pub fn loss(&self, example: &TextExample) -> Tensor<1> {
        let noisy =
            self.schedule.add_noise(example.latents.clone(), example.noise.clone(), &example.timesteps);
        let timesteps: Vec<f32> = example.timesteps.iter().map(|&t| t as f32).collect();
        let context = self.text_encoder.module.encode_ids(&example.ids, &self.device);
        let prediction = self.unet.module.forward(noisy, &timesteps, context, None);
        let error = prediction.cast(DType::F32) - example.noise.clone().cast(DType::F32);
        error.square().mean().reshape([1])
    }

    /// The loss and the gradients of both networks' parameters (UNet's, then the text
    /// encoder's), without a step.
    pub fn gradients(&self, example: &TextExample) -> (Tensor<1>, [burn::optim::GradientsParams; 2]) {
        let loss = self.loss(example);
        let mut grads = loss.backward();
        let unet = burn::optim::GradientsParams::from_module(&mut grads, &self.unet.module);
        let text = burn::optim::GradientsParams::from_module(&mut grads, &self.text_encoder.module);
        (loss.without_autodiff(), [unet, text])
    }

    /// One optimiser step over `micro_batches`; returns the mean loss `[1]` and the gradient
    /// norm before clipping.
    pub fn step(&mut self, micro_batches: &[TextExample]) -> (Tensor<1>, Option<Tensor<1>>) {
        assert!(!micro_batches.is_empty(), "a step needs a micro-batch");
        let share = 1.0 / micro_batches.len() as f64;
        let inner = self.device.clone().inner();
        let mut total = Tensor::<1>::zeros([1], &inner);
        for example in micro_batches {
            let loss = self.loss(example);
            let mut grads = (loss.clone() * share).backward();
            self.unet.collect(&mut grads);
            self.text_encoder.collect(&mut grads);
            total = total + loss.without_autodiff() * share;
        }
        let lr_factor = self.lr_schedule.factor(self.step);
        let norm =
            finish_step(&mut [&mut self.unet, &mut self.text_encoder], self.max_grad_norm, lr_factor, &inner);
        if let Some(ema) = &mut self.ema {
            ema.update(&self.unet.module);
        }
        self.step += 1;
        (total, norm)
    }

    /// The optimiser states (UNet's, text encoder's), for a checkpoint.
    pub fn optimizer_bytes(&self) -> Result<[Vec<u8>; 2], TrainError> {
        Ok([self.unet.optimizer_bytes()?, self.text_encoder.optimizer_bytes()?])
    }

    /// Continues a run from a checkpoint's optimiser states (UNet's, text encoder's).
    pub fn resume(mut self, step: u64, [unet, text_encoder]: [Vec<u8>; 2]) -> Result<Self, TrainError> {
        self.unet.load_optimizer(unet)?;
        self.text_encoder.load_optimizer(text_encoder)?;
        self.step = step;
        Ok(self)
    }
}

/// The VAE's loss terms for one batch, `[1]` each.
pub struct VaeLoss {
    /// `rec + kl_weight · kl`, with its graph.
    pub loss: Tensor<1>,
    /// Mean squared reconstruction error.
    pub reconstruction: Tensor<1>,
    /// diffusers' `DiagonalGaussianDistribution.kl()`, averaged over the batch.
    pub kl: Tensor<1>,
}

/// The VAE trained on its own: reconstruction (MSE) + `kl_weight` · KL, the LDM autoencoder's
/// first two terms (its perceptual and adversarial terms are not implemented).
pub struct VaeTrainer {
    vae: Part<AutoencoderKL>,
    kl_weight: f64,
    max_grad_norm: Option<f64>,
    lr_schedule: LrSchedule,
    device: Device,
    step: u64,
}

impl VaeTrainer {
    pub fn new(vae: AutoencoderKL, adamw: AdamW, kl_weight: f64, max_grad_norm: Option<f64>) -> Self {
        let device = vae.decoder.conv_in.weight.val().device().autodiff();
        let vae = stable_ids(vae, "vae").fork(&device).set_require_grad(true).train();
        let vae = Part::new(vae, &adamw, adamw.lr);
        Self { vae, kl_weight, max_grad_norm, lr_schedule: LrSchedule::Constant, device, step: 0 }
    }

    /// The same, with the learning rate over the run following `lr_schedule`.
    pub fn with_lr_schedule(self, lr_schedule: LrSchedule) -> Self {
        Self { lr_schedule, ..self }
    }

    pub fn vae(&self) -> &AutoencoderKL {
        &self.vae.module
    }

    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// The loss of reconstructing `images` (`[b, 3, H, W]` in `[-1, 1]`) through a latent
    /// sample `mean + std · sample_noise`.
    pub fn loss(&self, images: Tensor<4>, sample_noise: Tensor<4>) -> VaeLoss {
        let (mean, logvar) = self.vae.module.encode(images.clone());
        let std = (logvar.clone() * 0.5).exp();
        let z = mean.clone() + std * sample_noise;
        let reconstruction = self.vae.module.decode(z);
        let rec = (reconstruction.cast(DType::F32) - images.cast(DType::F32)).square().mean().reshape([1]);
        let [batch, ..] = mean.dims();
        let kl =
            (mean.clone().square() + logvar.clone().exp() - 1.0 - logvar).cast(DType::F32).sum().reshape([1])
                * (0.5 / batch as f64);
        let loss = rec.clone() + kl.clone() * self.kl_weight;
        VaeLoss { loss, reconstruction: rec.without_autodiff(), kl: kl.without_autodiff() }
    }

    /// The loss terms and the VAE's gradients, without a step.
    pub fn gradients(
        &self,
        images: Tensor<4>,
        sample_noise: Tensor<4>,
    ) -> (VaeLoss, burn::optim::GradientsParams) {
        let mut terms = self.loss(images, sample_noise);
        let mut grads = terms.loss.backward();
        let params = burn::optim::GradientsParams::from_module(&mut grads, &self.vae.module);
        terms.loss = terms.loss.without_autodiff();
        (terms, params)
    }

    /// One optimiser step over micro-batches of `(images, sample noise)`; the mean loss terms.
    pub fn step(&mut self, micro_batches: &[(Tensor<4>, Tensor<4>)]) -> (VaeLoss, Option<Tensor<1>>) {
        assert!(!micro_batches.is_empty(), "a step needs a micro-batch");
        let share = 1.0 / micro_batches.len() as f64;
        let inner = self.device.clone().inner();
        let zero = || Tensor::<1>::zeros([1], &inner);
        let mut mean = VaeLoss { loss: zero(), reconstruction: zero(), kl: zero() };
        for (images, noise) in micro_batches {
            let terms = self.loss(images.clone(), noise.clone());
            let mut grads = (terms.loss.clone() * share).backward();
            self.vae.collect(&mut grads);
            mean.loss = mean.loss + terms.loss.without_autodiff() * share;
            mean.reconstruction = mean.reconstruction + terms.reconstruction * share;
            mean.kl = mean.kl + terms.kl * share;
        }
        let lr_factor = self.lr_schedule.factor(self.step);
        let norm = finish_step(&mut [&mut self.vae], self.max_grad_norm, lr_factor, &inner);
        self.step += 1;
        (mean, norm)
    }

    /// The optimiser state, for a checkpoint.
    pub fn optimizer_bytes(&self) -> Result<Vec<u8>, TrainError> {
        self.vae.optimizer_bytes()
    }

    /// Continues a run from a checkpoint's optimiser state.
    pub fn resume(mut self, step: u64, optimizer: Vec<u8>) -> Result<Self, TrainError> {
        self.vae.load_optimizer(optimizer)?;
        self.step = step;
        Ok(self)
    }
}
