//! The requests only the end-to-end tests send (`protocol::TestRequest`): a UNet loaded alone
//! and run once, and a weights file streamed onto the device and let go — the weights path
//! measured and checked against diffusers without the rest of the app. Compiled into the test
//! build of the worker alone (feature `test-requests`).

use model::PrecisionExt;
use model::burn::prelude::{Device, Tensor as BurnTensor, TensorData};
use model::burn::tensor::FloatDType;
use model::streaming::StreamLoader;

use super::{Worker, post, wasm_memory};
use crate::download;
use crate::load::{self, fetch_file, open_cache};
use crate::protocol::{ModelSource, Precision, Response, Tensor, TestRequest};
use crate::scope::now_ms;

impl Worker {
    pub(super) async fn handle_test(&self, request: TestRequest) {
        let (id, result) = match request {
            TestRequest::LoadUNet { id, source, config_file, weights_file, precision } => {
                (id, self.load_unet(id, &source, &config_file, &weights_file, precision).await)
            }
            TestRequest::RunUNet { id, sample, timesteps, context } => {
                (id, self.run_unet(id, sample, &timesteps, context).await)
            }
            TestRequest::StreamWeights { id, source, file, precision } => {
                (id, self.stream_weights(id, &source, &file, precision).await)
            }
        };
        post(&result.unwrap_or_else(|message| Response::Error { id: Some(id), message }));
    }

    async fn load_unet(
        &self,
        id: u32,
        source: &ModelSource,
        config_file: &str,
        weights_file: &str,
        precision: Precision,
    ) -> Result<Response, String> {
        let device = self.device().await?;
        let started = now_ms();
        // A new model replaces the old one: free its memory first.
        self.unet.borrow_mut().take();
        let cache = if source.cache { open_cache(id).await } else { None };
        let mut config = Vec::new();
        let config_loaded =
            fetch_file(id, source, cache.as_ref(), config_file, config_file, None, &mut |bytes| {
                config.extend_from_slice(bytes);
                Ok(())
            })
            .await
            .map_err(|e| e.to_string())?;
        let config = String::from_utf8(config).map_err(|_| format!("{config_file} is not UTF-8"))?;
        let config = model::config::UNetConfig::from_json(&config).map_err(|e| e.to_string())?;
        let remote = remote_file(source, weights_file).await;
        let mut loader = StreamLoader::new(&device, precision, &[], &[]);
        let weights_loaded = fetch_file(
            id,
            source,
            cache.as_ref(),
            weights_file,
            weights_file,
            remote.as_ref(),
            &mut |bytes| loader.push(bytes).map_err(|e| format!("{weights_file}: {e}")),
        )
        .await
        .map_err(|e| e.to_string())?;
        let unet = loader
            .apply(model::UNet::new(&config, &device))
            .map_err(|e| format!("{weights_file} does not fit the UNet: {e}"))?;
        *self.unet.borrow_mut() = Some((unet, precision));
        Ok(Response::ModelLoaded {
            id,
            elapsed_ms: now_ms() - started,
            files: vec![config_loaded, weights_loaded],
            wasm_memory: wasm_memory(),
            memory: None,
        })
    }

    async fn run_unet(
        &self,
        id: u32,
        sample: Tensor,
        timesteps: &[f32],
        context: Tensor,
    ) -> Result<Response, String> {
        let device = self.device().await?;
        let started = now_ms();
        // The forward pass only queues GPU work; the borrow ends before the read-back awaits.
        let output = {
            let guard = self.unet.borrow();
            let (unet, precision) = guard.as_ref().ok_or("no UNet is loaded")?;
            let dtype = precision.dtype();
            let sample: BurnTensor<4> = tensor(sample, &device)?.cast(dtype);
            let context: BurnTensor<3> = tensor(context, &device)?.cast(dtype);
            let [batch, ..] = sample.dims();
            if !(timesteps.len() == 1 || timesteps.len() == batch) {
                return Err(format!("{} timesteps for a batch of {batch}", timesteps.len()));
            }
            unet.forward(sample, timesteps, context, None)
        };
        let shape = output.dims().to_vec();
        let data = output.cast(FloatDType::F32).into_data_async().await.map_err(|e| format!("{e:?}"))?;
        let values = data.try_to_vec::<f32>().map_err(|e| format!("{e:?}"))?;
        Ok(Response::UNetOutput { id, output: Tensor { shape, values }, elapsed_ms: now_ms() - started })
    }

    async fn stream_weights(
        &self,
        id: u32,
        source: &ModelSource,
        file: &str,
        precision: Precision,
    ) -> Result<Response, String> {
        let device = self.device().await?;
        let started = now_ms();
        let cache = if source.cache { open_cache(id).await } else { None };
        let remote = remote_file(source, file).await;
        let mut loader = StreamLoader::new(&device, precision, &[], &[]);
        let loaded = fetch_file(id, source, cache.as_ref(), file, file, remote.as_ref(), &mut |bytes| {
            loader.push(bytes).map_err(|e| format!("{file}: {e}"))
        })
        .await
        .map_err(|e| e.to_string())?;
        drop(loader);
        Ok(Response::ModelLoaded {
            id,
            elapsed_ms: now_ms() - started,
            files: vec![loaded],
            wasm_memory: wasm_memory(),
            memory: None,
        })
    }
}

/// What the Hub's API says of one file (its size and SHA-256), as `LoadPipeline` asks it.
async fn remote_file(source: &ModelSource, path: &str) -> Option<download::RemoteFile> {
    load::repo_listing(source).await?.remove(path)
}

/// A protocol tensor on the device, its shape checked against its values.
fn tensor<const D: usize>(tensor: Tensor, device: &Device) -> Result<BurnTensor<D>, String> {
    let elements: usize = tensor.shape.iter().product();
    if tensor.shape.len() != D || elements != tensor.values.len() {
        return Err(format!("a tensor of shape {:?} with {} values", tensor.shape, tensor.values.len()));
    }
    Ok(BurnTensor::from_data(TensorData::new(tensor.values, tensor.shape), device))
}
